"""DQN on contextual classic control: zero-shot generalisation over physical contexts, per context
mode, beside the contextual-RL reference study's setting (../shared/reference/contextual_rl.md).

Rows (each trains `--seeds` DQN seeds at once, vmapped, with CleanRL's settings for `--steps` env
steps per seed, then scores every seed's greedy policy):

    default                 CartPole-v1's default context alone (the learning target: >= 475)
    FAMILY-FACTOR-MODE      e.g. cartpole-length-explicit: trained on 100 contexts of FACTOR x
                            U(LOW, HIGH) of its default, with context mode hidden, explicit,
                            learned (JRPL), predictor (IIDA) or probing (EPI); scored on 40 contexts
                            linspace(LOW / 2, HIGH x 2) (interpolation inside [LOW, HIGH],
                            extrapolation outside); FAMILY-FACTOR-MODE-ddqn: Double DQN
    FAMILY-FACTOR-oracle    a hidden-context DQN trained on each of 6 evaluation contexts alone

    python -m benchmarks.contextual_dqn default cartpole-length-hidden cartpole-length-explicit [--seeds 5]
    python -m benchmarks.contextual_dqn --list

Per evaluation context: the mean over seeds of each seed's mean greedy return over `--episodes`
episodes (the reference used 50), with a 95% t-interval over seeds. Aggregates (rliable, the
`bench` extra): the interquartile mean and the optimality gap of normalised scores ((return - the
lowest possible) / (highest possible - lowest), bounds of the family's reward) over seeds x contexts, separately for interpolation and extrapolation
contexts, with 95% stratified-bootstrap intervals. One PNG per family and factor: return against
the context's multiplier for every mode run, the training range shaded. Results accumulate in
benchmarks/results/contextual.json (one entry per row) and contextual.md is regenerated from all.
Run folders: runs/contextual/ROW (rerunning resumes).
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np

from benchmarks import common
from benchmarks.common import RESULTS

import metarl
from metarl import algos
from metarl.eval import stats
from metarl.run.evaluation import seed_slice

#: family -> (factors run, the family's options, (the lowest, the highest) return an episode can
#: have: scores are (return - lowest) / (highest - lowest), bounds of the reward, not optimal returns)
FAMILIES = {
    "cartpole": (("length", "tau", "gravity"), {}, (0.0, 500.0)),  # +1 per step, 500 steps at most
    "mountaincar": (("gravity",), {}, (-200.0, 0.0)),  # -1 per step, 200 steps at most
    # -(theta^2 + 0.1 thetadot^2 + 0.001 u^2) per step, at most pi^2 + 0.1 x 8^2 + 0.001 x 2^2 = 16.27, 200 steps
    "pendulum": (("length",), {"action_bins": 5}, (-200 * (np.pi**2 + 6.4 + 0.004), 0.0)),
    # Box2D, stepped from the host (metarl.algos.host); its return has no tight bound: -300 (a fast crash scores
    # about -100 to -600) to 300 (a landing about 200 to 300; 200 counts as solved), a scale, not bounds
    "lunarlander": (("gravity",), {}, (-300.0, 300.0)),
}
MODES = ("hidden", "explicit", "learned", "predictor", "probing", "oracle")
#: the oracle's evaluation contexts (indices into the 40): a hidden-context agent trained on each alone
ORACLE_CONTEXTS = (0, 4, 10, 18, 26, 34)


def row_names() -> list[str]:
    rows = ["default", "default-ddqn"]
    for fam, (factors, _, _) in FAMILIES.items():
        for factor in factors:
            rows += [f"{fam}-{factor}-{mode}" for mode in MODES]
            if fam == "cartpole":  # the reference ran Double DQN on CartPole too
                rows += [f"{fam}-{factor}-{mode}-ddqn" for mode in MODES if mode != "oracle"]
    return rows


def parse_row(name: str):
    if name in ("default", "default-ddqn"):
        return "gymnax", {"env_id": "CartPole-v1"}, "hidden", None
    base = name.removesuffix("-ddqn")
    family, factor, mode = base.rsplit("-", 2)
    return family, {"factors": factor, **FAMILIES[family][1]}, mode, factor


def factor_rows(entries, family, factor) -> list:
    """The rows run for one family and factor, DQN's modes then Double DQN's."""
    names = [f"{family}-{factor}-{m}" for m in MODES] + [f"{family}-{factor}-{m}-ddqn" for m in MODES]
    return [entries[n] for n in names if n in entries]


def mode_label(entry) -> str:
    return entry["mode"] + (" (DDQN)" if entry.get("preset") == "ddqn" else "")


def preset_of(name: str) -> str:
    return "ddqn" if name.endswith("-ddqn") else "reference"


def per_seed_returns(algo, state, seeds, tasks, episodes, key):
    """[seeds, tasks] each seed's mean greedy return per task."""
    out = []
    for i in range(seeds):
        returns = algo.evaluate(seed_slice(state, i), key, tasks=tasks, episodes=episodes)
        out.append(np.asarray(returns, np.float64).mean(axis=-1))
    return np.stack(out)


def run_oracle(name, family, options, factor, seeds, steps, episodes):
    """A hidden-context DQN trained on each of a few evaluation contexts alone, scored there."""
    env = metarl.make(family, **options)
    multipliers, tasks, inside = env.evaluation_tasks(factor, 40)
    per_seed, train_seconds, wall, compile_seconds, env_steps = [], 0.0, 0.0, 0.0, 0
    key = jax.random.PRNGKey(0)
    for j in ORACLE_CONTEXTS:
        m = float(multipliers[j])
        alone = metarl.make(family, **{**options, "factors": f"{factor}={m}:{m}"})
        algo = algos.make("dqn", alone, preset="reference", context_mode="hidden")
        run = common.train_or_resume(algo, os.path.join("runs", "contextual", name, f"context{j}"), steps, seeds,
                                     command=["python", "-m", "benchmarks.contextual_dqn", name])
        algo = algo.for_run(run.result.updates)
        task = jax.tree.map(lambda x: x[j:j + 1], tasks)
        per_seed.append(per_seed_returns(algo, run.result.state, seeds, task, episodes, key)[:, 0])
        train_seconds += run.train_seconds
        wall += run.wall_seconds
        compile_seconds += run.result.compile_seconds
        env_steps = run.result.env_steps
        print(f"  {name}: {factor} x {m:.3f}: {per_seed[-1].mean():.1f}", flush=True)
    per_seed = np.stack(per_seed, axis=1)  # [seeds, contexts]
    cells = [stats.t_interval(per_seed[:, j]) for j in range(per_seed.shape[1])]
    idx = list(ORACLE_CONTEXTS)
    return {
        "row": name, "preset": "reference", "family": family, "options": options, "mode": "oracle", "factor": factor, "seeds": seeds,
        "steps_per_seed": env_steps, "episodes": episodes, "train_seconds": train_seconds, "compile_seconds": compile_seconds,
        "wall_seconds": wall, "eval_seconds": 0.0, "resumed": False, "steps_per_second_all_seeds": len(idx) * env_steps * seeds / max(train_seconds, 1e-9),
        "multipliers": multipliers[idx].tolist(), "inside": inside[idx].tolist(), "context_index": idx, "per_seed": per_seed.tolist(),
        "mean": [c.mean for c in cells], "ci95": [[c.low, c.high] for c in cells], "training_range": list(env.FACTORS[factor][1]),
    }


def run_row(name, seeds, steps, episodes):
    family, options, mode, factor = parse_row(name)
    if mode == "oracle":
        return run_oracle(name, family, options, factor, seeds, steps, episodes)
    env = metarl.make(family, **options)
    algo = algos.make("dqn", env, preset=preset_of(name), context_mode=mode)
    out = os.path.join("runs", "contextual", name)
    run = common.train_or_resume(algo, out, steps, seeds, command=["python", "-m", "benchmarks.contextual_dqn", name])
    algo = algo.for_run(run.result.updates)
    key = jax.random.PRNGKey(0)
    start = time.perf_counter()
    if factor is None:
        tasks = jax.tree.map(lambda x: x[None], env.sample_task(key))
        per_seed = per_seed_returns(algo, run.result.state, seeds, tasks, episodes, key)  # [seeds, 1]
        multipliers, inside = np.ones(1), np.ones(1, bool)
    else:
        multipliers, tasks, inside = env.evaluation_tasks(factor, 40)
        per_seed = per_seed_returns(algo, run.result.state, seeds, tasks, episodes, key)  # [seeds, 40]
    eval_seconds = time.perf_counter() - start
    cells = [stats.t_interval(per_seed[:, j]) for j in range(per_seed.shape[1])]
    steps_per_second = run.result.updates * algo.steps_per_update * seeds / max(run.train_seconds, 1e-9)
    return {
        "row": name, "preset": preset_of(name), "family": family, "options": options, "mode": mode, "factor": factor, "seeds": seeds,
        "steps_per_seed": run.result.env_steps, "episodes": episodes, "train_seconds": run.train_seconds,
        "compile_seconds": run.result.compile_seconds, "wall_seconds": run.wall_seconds, "eval_seconds": eval_seconds,
        "resumed": run.resumed, "steps_per_second_all_seeds": steps_per_second,
        "multipliers": multipliers.tolist(), "inside": inside.tolist(), "per_seed": per_seed.tolist(),
        "mean": [c.mean for c in cells], "ci95": [[c.low, c.high] for c in cells],
        "training_range": None if factor is None else list(env.FACTORS[factor][1]),
    }


def aggregates(entry, bounds):
    """rliable's IQM and optimality gap of the normalised return (`FAMILIES`), over seeds x contexts, for interpolation
    and extrapolation contexts separately, with 95% stratified-bootstrap intervals."""
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError:
        return None
    lowest, highest = bounds
    scores = (np.asarray(entry["per_seed"]) - lowest) / (highest - lowest)
    inside = np.asarray(entry["inside"], bool)
    out = {}
    for part, columns in (("interpolation", inside), ("extrapolation", ~inside)):
        if not columns.any():
            continue
        fn = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_optimality_gap(x, 1.0)])  # noqa: E731
        point, interval = rly.get_interval_estimates({"m": scores[:, columns]}, fn, reps=2000)
        out[part] = {"iqm": float(point["m"][0]), "iqm_ci95": [float(interval["m"][0, 0]), float(interval["m"][1, 0])],
                     "optimality_gap": float(point["m"][1]), "optimality_gap_ci95": [float(interval["m"][0, 1]), float(interval["m"][1, 1])]}
    return out


def plot(entries, family, factor, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for e in entries:
        m, mean, ci = np.asarray(e["multipliers"]), np.asarray(e["mean"]), np.asarray(e["ci95"])
        if e["mode"] == "oracle":  # a few contexts, each its own agent
            ax.errorbar(m, mean, yerr=np.abs(ci.T - mean), fmt="k*", markersize=9, capsize=3, label="oracle (trained on that context)")
            continue
        ax.plot(m, mean, marker=".", label=mode_label(e), linestyle="--" if e.get("preset") == "ddqn" else "-")
        ax.fill_between(m, ci[:, 0], ci[:, 1], alpha=0.15)
    low, high = entries[0]["training_range"]
    ax.axvspan(low, high, color="grey", alpha=0.12, label="training range")
    ax.set_xlabel(f"{factor} (multiple of the default)")
    ax.set_ylabel("greedy return")
    ax.set_title(f"DQN on {family}, {factor} contexts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(data):
    entries = data["entries"]
    lines = [
        "# DQN on contextual classic control",
        "",
        f"Produced by `python -m benchmarks.contextual_dqn ROW ...` (the command of each row is in contextual.json) on "
        f"{data['meta']['machine']}, JAX {data['meta']['jax']}. DQN with CleanRL's settings (MLP 120-84, Adam 2.5e-4, buffer "
        "10,000, batch 128, target copied every 500 steps, epsilon 1 -> 0.05 over half the run, learning from step 10,000, "
        "a gradient step every 10 steps), seeds trained at once (vmapped); greedy evaluation. Training time: the summed "
        "training chunks of all seeds together (compile and evaluation excluded).",
        "",
    ]
    defaults = [entries[k] for k in ("default", "default-ddqn") if k in entries]
    if defaults:
        rows = []
        for d in defaults:
            mean, ci = d["mean"][0], d["ci95"][0]
            rows.append([d.get("preset", "reference"), f"{d['steps_per_seed']:,}", d["seeds"], f"**{mean:.1f}** [{ci[0]:.1f}, {ci[1]:.1f}]",
                         ", ".join(f"{x[0]:.0f}" for x in d["per_seed"]), "met" if mean >= 475 else "not met",
                         f"{d['train_seconds']:.0f} s (+{d['compile_seconds']:.0f} s compile)", f"{d['steps_per_second_all_seeds']:,.0f}"])
        lines += ["## CartPole-v1, default context (target: mean greedy return >= 475; CleanRL's DQN about 490)", "",
                  common.markdown_table(["preset", "steps per seed", "seeds", "mean greedy return", "per seed", "target", "training time",
                                         "env steps/s (all seeds)"], rows), ""]
    for family, (factors, _, (lowest, highest)) in FAMILIES.items():
        for factor in factors:
            rows = factor_rows(entries, family, factor)
            if not rows:
                continue
            low, high = rows[0]["training_range"]
            lines += [f"## {family}, {factor} (training x U({low}, {high}) of the default, 100 contexts; 40 evaluation contexts "
                      f"over [{low / 2:g}, {high * 2:g}], {rows[0]['episodes']} episodes each)", ""]
            table = []
            for e in rows:
                agg = e.get("aggregates") or {}
                cell = lambda part: (f"{agg[part]['iqm']:.2f} [{agg[part]['iqm_ci95'][0]:.2f}, {agg[part]['iqm_ci95'][1]:.2f}]"  # noqa: E731
                                     if part in agg else "n/a")
                gap = lambda part: f"{agg[part]['optimality_gap']:.2f}" if part in agg else "n/a"  # noqa: E731
                inside = np.asarray(e["inside"], bool)
                mean = np.asarray(e["mean"])
                label = mode_label(e) + (f" ({len(mean)} contexts)" if e["mode"] == "oracle" else "")
                table.append([label, e["seeds"], f"{e['steps_per_seed']:,}", f"{mean[inside].mean():.1f}", f"{mean[~inside].mean():.1f}",
                              cell("interpolation"), cell("extrapolation"), gap("interpolation"), gap("extrapolation"),
                              f"{e['train_seconds']:.0f} s"])
            lines += [common.markdown_table(["mode", "seeds", "steps per seed", "mean return, inside", "mean return, outside",
                                             f"IQM inside (score = (return - {lowest:g}) / {highest - lowest:g})", "IQM outside", "opt. gap inside",
                                             "opt. gap outside", "training time"], table), "",
                      f"![return per context](contextual_{family}_{factor}.png)", ""]
            curves = [e for e in rows if e["mode"] != "oracle"]
            oracle = next((e for e in rows if e["mode"] == "oracle"), None)
            if oracle and curves:
                head = ["multiplier", "oracle (trained there alone)"] + [mode_label(e) for e in curves]
                body = [[f"{m:.3f}{'' if ins else ' (out)'}", f"{oracle['mean'][k]:.0f} [{oracle['ci95'][k][0]:.0f}, {oracle['ci95'][k][1]:.0f}]"]
                        + [f"{e['mean'][j]:.0f}" for e in curves]
                        for k, (j, m, ins) in enumerate(zip(oracle["context_index"], oracle["multipliers"], oracle["inside"]))]
                lines += ["The ceiling: a hidden-context agent trained on one evaluation context alone, beside the agents trained on the "
                          "range (mean over seeds):", "", common.markdown_table(head, body), ""]
            if curves:
                per = ["| multiplier | " + " | ".join(mode_label(e) for e in curves) + " |", "|---|" + "---|" * len(curves)]
                for j, m in enumerate(curves[0]["multipliers"]):
                    per.append(f"| {m:.3f}{'' if curves[0]['inside'][j] else ' (out)'} | "
                               + " | ".join(f"{e['mean'][j]:.0f} [{e['ci95'][j][0]:.0f}, {e['ci95'][j][1]:.0f}]" for e in curves) + " |")
                lines += ["<details><summary>per context (mean [95% CI] over seeds)</summary>", "", *per, "", "</details>", ""]
    missing = [r for r in row_names() if r not in entries]
    lines += [f"Not run yet: {', '.join(missing)}." if missing else "", ""]
    lines += verdicts(entries) + study_time(entries)
    return "\n".join(lines)


def _compare(a, b, part):
    """'above', 'below' or 'level': IQM of entry a against b on `part`, by their 95% intervals."""
    ia, ib = a["aggregates"][part]["iqm_ci95"], b["aggregates"][part]["iqm_ci95"]
    return "above" if ia[0] > ib[1] else "below" if ia[1] < ib[0] else "level"


def verdicts(entries) -> list[str]:
    """Where each context mode wins or loses, inside and outside the training range, from the rows
    run: explicit against hidden (the issue's check), and the best and worst mode by IQM."""
    lines = ["## Where each mode wins or loses (computed from the rows above)", "",
             "IQM of normalised scores with 95% stratified-bootstrap intervals; 'above'/'below' when the intervals do not overlap, "
             "else 'level'. DQN rows only (Double DQN's are compared among themselves in the tables).", ""]
    for family, (factors, _, _) in FAMILIES.items():
        for factor in factors:
            rows = [e for e in factor_rows(entries, family, factor)
                    if e["mode"] != "oracle" and e.get("preset", "reference") == "reference" and e.get("aggregates")]
            by_mode = {e["mode"]: e for e in rows}
            if len(rows) < 2:
                continue
            parts = []
            for part, where in (("interpolation", "inside"), ("extrapolation", "outside")):
                ranked = sorted(rows, key=lambda e: -e["aggregates"][part]["iqm"])
                text = f"{where}: best {ranked[0]['mode']} ({ranked[0]['aggregates'][part]['iqm']:.2f}), worst {ranked[-1]['mode']} " \
                       f"({ranked[-1]['aggregates'][part]['iqm']:.2f})"
                if "explicit" in by_mode and "hidden" in by_mode:
                    text += f"; explicit {_compare(by_mode['explicit'], by_mode['hidden'], part)} hidden"
                parts.append(text)
            lines.append(f"- {family} {factor}: " + "; ".join(parts) + ".")
    return lines + [""]


def study_time(entries) -> list[str]:
    """The whole study's time on this machine: every row's training (and whole wall time) summed."""
    train = sum(e["train_seconds"] for e in entries.values())
    wall = sum(e["wall_seconds"] for e in entries.values())
    total = len(row_names())
    return ["## The whole study's time", "",
            f"{len(entries)} of {total} rows run; their training took {train / 3600:.2f} h summed ({wall / 3600:.2f} h of wall time with "
            f"compilation and evaluation) on this 2-core CPU, one row after another (target: the whole study under 2 h: "
            f"{'met' if wall <= 7200 and len(entries) == total else 'not met'}). Many rows trained beside another job on the same two "
            "cores, so their times are upper bounds; benchmarks/results/dqn_update_cost.md gives the CPU's arithmetic ceiling for "
            "one row's gradient steps.", ""]


def main(argv=None):
    parser = common.parser(__doc__, "rows", seeds=5)
    parser.add_argument("--steps", type=int, default=500_000, help="env steps per seed")
    parser.add_argument("--episodes", type=int, default=10, help="greedy episodes per evaluation context")
    parser.add_argument("--report", action="store_true", help="rewrite contextual.md from contextual.json, training nothing")
    args = parser.parse_args(argv)
    path = os.path.join(RESULTS, "contextual.json")
    if args.report:
        data = common.read_json(path)
        if not data:
            parser.error(f"--report: no results in {path}")
        common.write_results("contextual", data, markdown(data))
        return
    if args.list or not args.rows:
        print("\n".join(row_names()))
        return
    unknown = [r for r in args.rows if r not in row_names()]
    if unknown:
        parser.error(f"unknown row(s) {unknown}; see --list")
    for name in args.rows:
        entry = run_row(name, args.seeds, args.steps, args.episodes)
        entry["command"] = "python -m benchmarks.contextual_dqn " + name + f" --seeds {args.seeds} --steps {args.steps} --episodes {args.episodes}"
        if entry["factor"] is not None:
            entry["aggregates"] = aggregates(entry, FAMILIES[entry["family"]][2])
        print(f"{name}: mean {np.mean(entry['mean']):.1f}, training {entry['train_seconds']:.0f} s", flush=True)
        data = common.read_json(path) or {"entries": {}}
        data["meta"] = common.machine()
        data["entries"][name] = entry
        for family, (factors, _, _) in FAMILIES.items():
            for factor in factors:
                rows = factor_rows(data["entries"], family, factor)
                if rows:
                    plot(rows, family, factor, os.path.join(RESULTS, f"contextual_{family}_{factor}.png"))
        common.write_results("contextual", data, markdown(data))


if __name__ == "__main__":
    sys.exit(main())
