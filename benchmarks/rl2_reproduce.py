"""Train RL² on the settings of the RL² tables and report it beside the reference numbers.

Each setting trains `--seeds` independent agents in one process (vmapped), for the setting's
environment-step budget, with a named config (`--preset`; by default "fast" for trials of 10 steps and "fast-long" for
trials of about 100: the reference run's 240,000-step updates and 12,000 updates are weeks on a
2-core CPU), then scores every seed's
agent on 1000 held-out tasks (sampled with PRNGKey(0), never trained on) beside our classical
baselines on the same tasks. Results accumulate in benchmarks/results/rl2.json (one entry per
setting, rewritten when the setting is rerun) and rl2.md is regenerated from all entries.

    python -m benchmarks.rl2_reproduce bandit-n10-k5 mdp-n10 [--seeds 3] [--steps N] [--preset NAME]
    python -m benchmarks.rl2_reproduce --list

Run folders go to runs/repro/SETTING (resumable: rerunning continues a killed run).
"""

from __future__ import annotations

import json
import os

from benchmarks import common
from benchmarks import reference_tables as ref
from benchmarks.common import RESULTS

import metarl
from metarl import algos
from metarl.run.folder import write_bytes_atomic, write_json_atomic

#: name -> (family, family options, episodes n, default env-step budget per seed, default preset)
SETTINGS = {
    "bandit-n10-k5": ("bandit", {"arms": 5}, 10, 600_000, "fast"),
    "bandit-n10-k10": ("bandit", {"arms": 10}, 10, 1_000_000, "fast"),
    "bandit-n10-k50": ("bandit", {"arms": 50}, 10, 2_000_000, "fast"),
    "bandit-n100-k5": ("bandit", {"arms": 5}, 100, 4_000_000, "fast-long"),
    "bandit-n100-k10": ("bandit", {"arms": 10}, 100, 6_000_000, "fast-long"),
    "bandit-n100-k50": ("bandit", {"arms": 50}, 100, 10_000_000, "fast-long"),
    "mdp-n10": ("tabular-mdp", {}, 10, 3_000_000, "fast-long"),
    "mdp-n25": ("tabular-mdp", {}, 25, 6_000_000, "fast-long"),
}
#: the issue's time-to-result targets: setting -> held-out mean whose first crossing is reported
TIME_TARGETS = {"bandit-n100-k5": 78.0}
BANDIT_BASELINES = ["random", "gittins", "ucb1", "thompson"]
MDP_BASELINES = ["random", "psrl", "opsrl", "ucrl2", "beb"]


def reference_row(family, options, n):
    if family == "bandit":
        k = options["arms"]
        cols = {c: ref.bandit_reference(n, k, c) for c in ("RL² GRU paper", "RL² GRU re-impl", "Gittins", "Random")}
        best = ("Gittins", cols["Gittins"])
    else:
        cols = {c: ref.mdp_reference(n, c) for c in ("RL² GRU paper", "RL² GRU re-impl", "PSRL", "OPSRL", "UCRL2", "BEB", "Random")}
        best = max(((c, cols[c]) for c in ("PSRL", "OPSRL", "UCRL2", "BEB")), key=lambda x: x[1])
    return cols, best


def run_setting(name, seeds, steps, preset, tasks, eval_points=10):
    family, options, n, default_steps, default_preset = SETTINGS[name]
    steps = steps or default_steps
    preset = preset or default_preset
    env = metarl.make(family, **options)
    algo = algos.make("rl2", env, n, preset=preset)
    config = dict(dataclass_items(algo.config))
    # A preset other than the setting's default is its own run and its own row. Held-out evaluations
    # (1000 tasks, PRNGKey(0)) during training give the learning curve and the time to reach the
    # reference number; they are not counted in the training time.
    out = os.path.join("runs", "repro", name if preset == default_preset else f"{name}--{preset}")
    names = BANDIT_BASELINES if family == "bandit" else MDP_BASELINES
    command = ["python", "-m", "benchmarks.rl2_reproduce", name] + ([] if preset == default_preset else ["--preset", preset])
    run = common.train_or_resume(algo, out, steps, seeds, eval_points, tasks, baselines=names, command=command)
    result, summary = run.result, run.summary
    agents = {a["name"]: a for a in summary["agents"]}
    rl2 = agents["rl2"]
    cols, best = reference_row(family, options, n)
    target = max(v for v in (cols["RL² GRU paper"], cols.get("RL² GRU re-impl")) if v is not None)
    reached = common.first_reaching(run.curve, target)
    ours_best = max((a for a in summary["agents"] if a["name"] not in ("rl2", "oracle", "random")),
                    key=lambda a: a["mean_total_return"])
    return {
        "key": entry_key(name, preset), "setting": name, "family": family, "options": options, "episodes": n, "seeds": seeds,
        "steps_per_seed": result.env_steps, "updates": result.updates, "preset": preset, "config": config,
        "train_seconds": result.train_seconds, "compile_seconds": result.compile_seconds,
        "train_wall_seconds": run.wall_seconds, "resumed": run.resumed,
        "rl2": {"mean": rl2["mean_total_return"], "ci95": rl2["ci95"], "per_seed": rl2.get("per_seed_mean_total_return")},
        "baselines": {a["name"]: {"mean": a["mean_total_return"], "ci95": a["ci95"]} for a in summary["agents"] if a["name"] != "rl2"},
        "reference": cols, "reference_best_baseline": {"name": best[0], "value": best[1]},
        "our_best_baseline": {"name": ours_best["name"], "mean": ours_best["mean_total_return"], "ci95": ours_best["ci95"]},
        "eval_tasks": tasks, "interval": summary["header"]["interval"],
        "target": target, "learning_curve": run.curve,
        "time_to_target": None if reached is None else {
            "env_steps": reached["env_steps"], "train_seconds": reached["train_seconds"],
            "with_compile_seconds": reached["train_seconds"] + result.compile_seconds},
    }


def entry_key(name, preset):
    """rl2.json's key of a setting's row: the setting, or "setting (preset)" for a non-default preset."""
    return name if preset == SETTINGS[name][4] else f"{name} ({preset})"


def dataclass_items(cfg):
    import dataclasses

    return [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]


def training_time(e):
    """Training seconds over every session of the run (from its metrics log, evaluations excluded)
    when a resumed run's learning curve has them, else this invocation's wall time."""
    total = max((c["train_seconds"] for c in e.get("learning_curve") or []), default=None)
    if e["resumed"] and total is not None:
        return f"{total:.0f} s over sessions (last: {e['train_wall_seconds']:.0f} s wall)"
    return f"{e['train_wall_seconds']:.0f} s (compile {e['compile_seconds']:.0f} s)"


def markdown(entries, meta):
    lines = [
        "# RL² vs the RL² tables",
        "",
        f"Produced by `benchmarks/rl2_reproduce.py` on {meta['machine']} (JAX {meta['jax']}). Each row: RL² trained "
        "with the named preset for the given environment steps per seed, several seeds vmapped in one process; "
        "evaluated on 1000 held-out tasks (PRNGKey(0)) with the same evaluator as our baselines. RL²'s interval is "
        "the 95% t-interval over per-seed means; baselines' over tasks.",
        "",
        "| setting | RL² ours (seeds) | RL² paper | RL² re-impl | best baseline (ref) | our best baseline | preset | steps/seed | training time | time to reference | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        r = e["rl2"]
        paper, reimpl = e["reference"]["RL² GRU paper"], e["reference"].get("RL² GRU re-impl")
        target = max(v for v in (paper, reimpl) if v is not None)
        verdict = "at or above the reference" if r["mean"] >= target else (
            f"below ({r['mean'] - target:+.1f}); the reference is inside the seeds' CI" if r["ci95"][1] >= target
            else f"below ({r['mean'] - target:+.1f})")
        per_seed = ", ".join(f"{x:.{2 if abs(r['mean']) < 20 else 1}f}" for x in r["per_seed"]) if r.get("per_seed") else ""
        ttt = e.get("time_to_target", "n/a")
        ttt = ("not reached" if ttt is None else "not measured" if ttt == "n/a" else
               f"{ttt['with_compile_seconds']:.0f} s ({ttt['env_steps']:,} steps)")
        lines.append(
            f"| {e['setting']} | {r['mean']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] ({e['seeds']}: {per_seed}) | {paper} | "
            f"{reimpl if reimpl is not None else '—'} | {e['reference_best_baseline']['name']} {e['reference_best_baseline']['value']} | "
            f"{e['our_best_baseline']['name']} {e['our_best_baseline']['mean']:.2f} | {e['preset']} | {e['steps_per_seed']:,} | "
            f"{training_time(e)} | {ttt} | {verdict} |"
        )
    lines += ["", "Time to reference: training seconds (compile included, evaluations excluded) until the first "
              "held-out evaluation during training (1000 tasks, ~10 per run) whose mean over seeds reaches the higher "
              "of the two RL² reference numbers; with several seeds vmapped this is the time for all of them together.",
              ""]
    for setting, goal in TIME_TARGETS.items():
        for e in entries:
            if e["setting"] != setting:
                continue
            hit = next((c for c in e["learning_curve"] if c["mean"] >= goal), None)
            best = max(e["learning_curve"], key=lambda c: c["mean"])
            lines.append(f"Time to {goal:g} on {setting} ({e['preset']}): " + (
                f"{hit['train_seconds']:.0f} s of training ({hit['env_steps']:,} steps)." if hit else
                f"not reached (best held-out mean {best['mean']:.2f} at {best['env_steps']:,} steps, "
                f"{best['train_seconds']:.0f} s of training)."))
            lines.append("")
    lines += ["Configs (preset and every field) and all baseline numbers are in `rl2.json`. Settings of the tables "
              "not listed were not run yet.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = common.parser(__doc__, "settings", seeds=3)
    parser.add_argument("--steps", type=int, default=None, help="env steps per seed (default: the setting's budget)")
    parser.add_argument("--preset", default=None, help="named RL² config (default: the setting's)")
    parser.add_argument("--eval-points", type=int, default=10, help="held-out evaluations during training")
    parser.add_argument("--markdown", action="store_true", help="only regenerate rl2.md from rl2.json")
    args = parser.parse_args(argv)
    path = os.path.join(RESULTS, "rl2.json")
    if args.markdown:
        write_markdown(json.load(open(path)))
        return
    if args.list or not args.settings:
        for name, (family, options, n, steps, preset) in SETTINGS.items():
            print(f"{name}: {family} {options} n={n}, default budget {steps:,} steps per seed, preset {preset}")
        return
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; valid: {', '.join(SETTINGS)}")
    presets = algos.algorithm_class("rl2").presets
    if args.preset is not None and args.preset not in presets:
        parser.error(f"unknown preset {args.preset!r}; valid: {', '.join(presets)}")
    meta = common.machine()
    for name in args.settings:
        entry = run_setting(name, args.seeds, args.steps, args.preset, args.tasks, args.eval_points)
        print(f"{name}: RL² {entry['rl2']['mean']:.2f} {entry['rl2']['ci95']} vs paper {entry['reference']['RL² GRU paper']}; "
              f"{entry['train_wall_seconds']:.0f} s", flush=True)
        # re-read before writing: other invocations may have added settings meanwhile
        data = json.load(open(path)) if os.path.exists(path) else {"entries": {}}
        data["meta"] = meta
        data["entries"][entry["key"]] = entry
        os.makedirs(RESULTS, exist_ok=True)
        write_json_atomic(path, data)
        write_markdown(data)


def write_markdown(data):
    # the setting's default-preset row first, then its other presets'
    ordered = [e for k in SETTINGS for e in sorted(data["entries"].values(), key=lambda e: e.get("key", e["setting"]))
               if e["setting"] == k]
    write_bytes_atomic(os.path.join(RESULTS, "rl2.md"), markdown(ordered, data["meta"]).encode())


if __name__ == "__main__":
    main()
