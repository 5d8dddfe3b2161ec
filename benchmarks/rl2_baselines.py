"""Reproduce every classical-baseline column of the RL² tables (shared/reference/rl2_tables.md).

All 9 Bernoulli-bandit settings and all 5 tabular-MDP settings, 1000 tasks each (sampled with
`PRNGKey(seed)`, disjoint from the tuning scripts' tasks), every baseline with its tuned defaults.
Writes benchmarks/results/baselines.md and .json: our number with its 95% interval, the reference
number, the relative difference, the hyperparameters used, and compile/run times on this machine.

    python -m benchmarks.rl2_baselines [--tasks 1000] [--seed 0] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax

from benchmarks import common

from benchmarks import reference_tables as ref

import metarl
from metarl.eval.report import run_baselines, summarize

TOLERANCE = 0.02  # the bar: within 2% of the reference (or better)


def run_setting(env, episodes, tasks, seed, columns, reference):
    names = [ref_name for ref_name in columns.values()] + ["oracle"]
    summary = summarize(run_baselines(env, episodes, tasks, seed, names))
    by_name = {a["name"]: a for a in summary["agents"]}
    cells = []
    for column, name in columns.items():
        a = by_name[name]
        theirs = reference(column)
        ours = a["mean_total_return"]
        rel = (ours - theirs) / theirs
        cells.append({
            "column": column, "agent": name, "label": a["label"], "hparams": a["hparams"],
            "ours": ours, "ci95": a["ci95"], "reference": theirs, "relative_difference": rel,
            # "within" = no worse than 2% below the reference (beating it is fine)
            "within_2pct": rel >= -TOLERANCE, "within_2pct_abs": abs(rel) <= TOLERANCE,
            "compile_seconds": a["compile_seconds"], "run_seconds": a["run_seconds"],
        })
    oracle = by_name["oracle"]
    return {"cells": cells, "oracle": {"ours": oracle["mean_total_return"], "ci95": oracle["ci95"]},
            "wall_seconds": summary["header"]["wall_seconds"]}


def fmt_cell(c):
    mark = "" if c["within_2pct_abs"] else (" ↑" if c["relative_difference"] > 0 else " ✗")
    return f"{c['ours']:.1f} / {c['reference']:.1f} ({100 * c['relative_difference']:+.1f}%){mark}"


def markdown(result):
    lines = [
        "# Classical baselines vs the RL² tables",
        "",
        f"Produced by `{result['command']}` on {result['machine']} (JAX {result['jax']}, backend "
        f"{result['backend']}) from commit {result.get('commit', 'unknown')}, {result['tasks']} tasks per setting sampled with `PRNGKey({result['seed']})`; "
        f"total wall time {result['wall_seconds']:.0f} s.",
        "",
        "Each cell: **ours / reference (relative difference)**, mean total reward over the trial. "
        "✗ marks a cell more than 2% below the reference, ↑ one more than 2% above it (a better-tuned "
        "constant; see the hyperparameters below). Our 95% intervals are in the JSON.",
        "",
    ]
    for table, title, key_name in (("bandit", "Bernoulli bandits (n pulls, k arms)", "setting"),
                                   ("mdp", "Tabular MDPs (10 states, 5 actions, horizon 10, n episodes)", "setting")):
        rows = result[table]
        cols = [c["column"] for c in rows[0]["cells"]]
        lines += [f"## {title}", "", "| " + " | ".join([key_name] + cols + ["Oracle (ours)"]) + " |",
                  "|" + "---|" * (len(cols) + 2)]
        for row in rows:
            lines.append("| " + " | ".join([row["setting"]] + [fmt_cell(c) for c in row["cells"]]
                                            + [f"{row['oracle']['ours']:.1f}"]) + " |")
        lines += ["", "Hyperparameters (tuned defaults, see the tuning results) and run time after compilation:", "",
                  "| setting | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for row in rows:
            cells = []
            for c in row["cells"]:
                hp = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in c["hparams"].items())
                cells.append(f"{hp + '; ' if hp else ''}{c['run_seconds']:.2f} s")
            lines.append("| " + " | ".join([row["setting"]] + cells) + " |")
        lines.append("")
    for title, keep in (("more than 2% below the reference (misses)", lambda c: not c["within_2pct"]),
                        ("more than 2% above the reference", lambda c: c["relative_difference"] > TOLERANCE)):
        lines += [f"## Cells {title}", ""]
        off = [(t, row["setting"], c) for t in ("bandit", "mdp") for row in result[t] for c in row["cells"] if keep(c)]
        if not off:
            lines.append("None.")
        for t, setting, c in off:
            lines.append(f"- {t} {setting}, {c['column']}: {c['ours']:.1f} vs {c['reference']:.1f} "
                         f"({100 * c['relative_difference']:+.1f}%)")
        explained = sorted({(t, c["column"]) for t, _, c in off})
        if explained:
            lines += ["", "Why:", ""]
        for t, column in explained:
            why = result["explanations"].get(t, {}).get(column)
            lines.append(f"- **{t} {column}**: {why or 'not explained yet (noise or tuning; see the tuning results).'}")
        lines.append("")
    return "\n".join(lines)


def explanations() -> dict[str, dict[str, str]]:
    """Why a column sits off the reference, per table, as the tuning scripts found (printed only
    for cells more than 2% off)."""
    import tune_bandit_baselines
    import tune_mdp_baselines

    bandit = {
        "OTS": "OTS sits 1-2% below at k=50 (n=100: -1.5% to -2.1% across our runs, about 1.5 standard errors of a "
        "1000-task mean). Its tuned sample count comes from a coarse grid on 200 tuning tasks (tune_bandit.md): "
        + tune_bandit_baselines.EXPLANATIONS.get(next(iter(tune_bandit_baselines.EXPLANATIONS)), ""),
        "Random": "noise: a 1000-task mean of 10 Bernoulli pulls has a standard error of ~0.05 (1%).",
        "Greedy": tune_bandit_baselines.EXPLANATIONS.get(list(tune_bandit_baselines.EXPLANATIONS)[-1], ""),
        "eps-Greedy": "as Greedy.",
        "TS": "at n=10 our Thompson sampling is 3% above (0.2 pulls); better than the reference is within the target.",
    }
    return {"bandit": bandit, "mdp": tune_mdp_baselines.EXPLANATIONS}


def source_commit() -> str:
    """The git commit the numbers come from ("+dirty" when the work tree had changes)."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../metarl"], cwd=here, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--markdown-only", action="store_true", help="rewrite baselines.md from baselines.json")
    args = parser.parse_args(argv)
    if args.markdown_only:
        with open(os.path.join(args.out, "baselines.json")) as f:
            result = json.load(f)
        result["explanations"] = explanations()
        common.write_results("baselines", result, markdown(result), args.out)
        return
    start = time.perf_counter()
    result = {
        "command": "python -m benchmarks.rl2_baselines" + (f" --tasks {args.tasks}" if args.tasks != 1000 else "")
        + (f" --seed {args.seed}" if args.seed else ""),
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU",
        "jax": jax.__version__, "backend": jax.default_backend(), "tasks": args.tasks, "seed": args.seed,
        "commit": source_commit(),
        "bandit": [], "mdp": [], "explanations": explanations(),
    }
    for (n, k) in ref.BANDIT:
        env = metarl.make("bandit", arms=k)
        row = run_setting(env, n, args.tasks, args.seed, ref.BANDIT_AGENTS, lambda col: ref.bandit_reference(n, k, col))
        result["bandit"].append({"setting": f"n={n},k={k}", "episodes": n, "arms": k, **row})
        print(f"bandit n={n} k={k}: " + ", ".join(fmt_cell(c) for c in row["cells"]), flush=True)
    for n in ref.MDP:
        env = metarl.make("tabular-mdp")
        row = run_setting(env, n, args.tasks, args.seed, ref.MDP_AGENTS, lambda col: ref.mdp_reference(n, col))
        result["mdp"].append({"setting": f"n={n}", "episodes": n, **row})
        print(f"mdp n={n}: " + ", ".join(fmt_cell(c) for c in row["cells"]), flush=True)
    result["wall_seconds"] = time.perf_counter() - start
    common.write_results("baselines", result, markdown(result), args.out)
    print(f"wrote {args.out}/baselines.md and .json in {result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
