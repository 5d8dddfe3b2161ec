"""DREAM vs E-RL² (and IMPORT where built) on DREAM's two-phase grid worlds, on held-out ids, beside
the optimal and the no-information returns computed by the package.

Families (rules in metarl.envs.dream_grid): city (sanity check, train = test ids), map,
distraction (53 training ids, 523 held out) and cooking (63 training ids, test id 10). A trial is
one exploration episode and one exploitation episode (20 steps each); the score is the
exploitation return (the exploration episode's rewards do not count).

Every method trains `--seeds` agents in one process (vmapped) for `--steps` env steps per seed
(exploration and exploitation steps both counted, as the reference counts them; its budget is 5M),
with `--points` greedy evaluations on the training ids during training (the learning curve), then
each seed's greedy agent is scored on `--tasks` trials of held-out ids (sampled with PRNGKey(0)):
mean exploitation return with the 95% Student-t interval over seeds x trials pooled, and each
seed's mean. Results accumulate in benchmarks/results/dream.json (one entry per family and
method, rewritten when rerun); dream.md and one learning-curve PNG per family (dream_FAMILY.png)
are regenerated from all entries. GIFs of one greedy trial per family and method (exploration and
exploitation episodes) go to the run folder's videos/.

    python -m benchmarks.dream_compare city map [--methods dream,e-rl2] [--seeds 3] [--steps 2000000]

Run folders: runs/dream_compare/FAMILY/METHOD-STEPS (a rerun resumes an existing folder).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from benchmarks import common
from benchmarks.common import RESULTS

import metarl
from metarl import algos
from metarl.envs import dream_optimal
from metarl.eval import stats
from metarl.eval.evaluate import evaluate
from metarl.run import evaluation, folder

FAMILIES = ("city", "map", "distraction", "cooking")
METHODS = ("dream", "e-rl2", "import", "varibad")
EPISODES = 2  # one exploration episode, one exploitation episode


def reference_returns(env, ids) -> dict:
    """The optimal (full information) and the no-information (Bayes-optimal, where the package can
    compute it) mean exploitation returns over `ids`, by exact search."""
    out = {"optimal": float(np.mean(dream_optimal.full_information(env, ids))), "no_information": None}
    if env.name in ("city", "map"):  # the expectimax over 24 ids; distraction's 576 and cooking are not computed
        out["no_information"] = float(np.mean(dream_optimal.no_information(env, ids)))
    return out


def evaluate_greedy(algo, seed_state, key, tasks):
    """[tasks, episodes] returns of one seed's greedy agent on `tasks` (the reference tests with epsilon 0)."""
    return np.asarray(evaluate(evaluation.greedy_agent(algo), algo.agent_params(seed_state), algo.env, tasks, algo.episodes, key))


def run_one(family, method, seeds, steps, points, tasks, preset=None):
    env = metarl.make(family)  # the training ids
    test_env = metarl.make(family, split="test")
    algo = algos.make(method, env, EPISODES, preset=preset or "default")
    out = os.path.join("runs", "dream_compare", family, f"{method}-{steps}" + (f"-{preset}" if preset else ""))
    run = common.train_or_resume(algo, out, steps, seeds, eval_points=points, tasks=tasks,
                                 command=["python", "-m", "benchmarks.dream_compare", family, "--methods", method]
                                 + (["--preset", preset] if preset else []))
    state = run.result.state
    key = jax.random.PRNGKey(0)
    test_tasks = test_env.sample_tasks(key, tasks)
    per_seed = np.stack([evaluate_greedy(algo, evaluation.seed_slice(state, i), key, test_tasks) for i in range(seeds)])
    exploit = per_seed[..., 1:].sum(-1)  # [seed, task]
    interval = stats.total_return(per_seed[..., 1:], pooled=True)
    history = [json.loads(line) for line in open(os.path.join(out, "eval", "history.jsonl"))] if points else []
    curve = [{"env_steps": h["env_steps"], "mean_exploit_return": h.get("mean_exploit_return"), "ci95": h.get("exploit_ci95")}
             for h in history]
    # one greedy trial on a held-out id (the same agent and parameters: only the family's split differs)
    videos = [os.path.relpath(p, out) for p in evaluation.write_trial_videos(dataclasses.replace(algo, env=test_env), state, out, run.result.env_steps)]
    print(f"  {family} {method}: {run.result.env_steps:,} steps/seed, {run.wall_seconds:.0f} s, exploitation return "
          f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]", flush=True)
    return {
        "family": family, "method": method, "algorithm": algo.name, "preset": preset, "config": folder.jsonable(algo.config),
        "seeds": seeds, "steps_requested": steps, "env_steps_per_seed": run.result.env_steps, "updates": run.result.updates,
        "train_wall_seconds": run.wall_seconds, "train_seconds": run.train_seconds, "resumed": run.resumed,
        "compile_seconds": run.result.compile_seconds, "eval_tasks": tasks, "eval_split": "test",
        "mean_exploit_return": interval.mean, "ci95": [interval.low, interval.high],
        "per_seed_mean_exploit_return": [float(x) for x in exploit.mean(-1)],
        "mean_explore_return": float(per_seed[..., 0].mean()),
        "curve_split": "train", "curve": curve, "run_folder": out, "videos": videos,
    }


def plot(family, entries, refs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for e in entries:
        pts = [c for c in e["curve"] if c["mean_exploit_return"] is not None]
        if not pts:
            continue
        x = [c["env_steps"] for c in pts]
        y = [c["mean_exploit_return"] for c in pts]
        ax.plot(x, y, marker="o", label=f"{e['method']} ({e['seeds']} seeds)")
        ax.fill_between(x, [c["ci95"][0] for c in pts], [c["ci95"][1] for c in pts], alpha=0.2)
    ax.axhline(refs["optimal"], color="k", ls="--", label=f"optimal {refs['optimal']:.2f}")
    if refs.get("no_information") is not None:
        ax.axhline(refs["no_information"], color="grey", ls=":", label=f"no information {refs['no_information']:.2f}")
    ax.set_xlabel("env steps per seed")
    ax.set_ylabel("exploitation return (greedy, training ids)")
    ax.set_title(family)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def steps_of(entry) -> int:
    """The env steps per seed a row was asked for (a method may have rows at several budgets)."""
    return int(entry.get("steps_requested", entry["run_folder"].rsplit("-", 1)[-1]))


def earlier_config(entry) -> bool:
    """Whether the row's saved config differs from what its command builds now (a preset changed
    since it ran; keys the row's config lacks count as the config's defaults, and the learning
    rate's schedule, which the run's length sets, is not compared)."""
    algo = algos.make(entry["method"], metarl.make(entry["family"]), EPISODES, preset=entry.get("preset") or "default")
    now, defaults = folder.jsonable(algo.config), folder.jsonable(type(algo.config)())
    saved = entry["config"]
    return any(saved.get(k, defaults.get(k)) != v for k, v in now.items() if k != "lr_decay_updates")


def verdict(entries):
    """DREAM's row at each budget against every other method's rows (the budget named where they differ)."""
    dreams = [e for e in entries if e["method"] == "dream"]
    others = [e for e in entries if e["method"] != "dream"]
    if not dreams or not others:
        return None
    parts = []
    for d in dreams:
        for e in others:
            rel = "above" if d["ci95"][0] > e["ci95"][1] else "below" if d["ci95"][1] < e["ci95"][0] else "overlaps"
            same = steps_of(d) == steps_of(e)
            parts.append(f"DREAM{'' if same else f' ({steps_of(d):,} steps)'} {rel} {e['method']}{'' if same else f' ({steps_of(e):,})'}")
    return ", ".join(parts)


def markdown(data):
    refs, entries, meta = data["references"], data["entries"], data["meta"]
    lines = [
        "# DREAM vs E-RL², IMPORT and VariBAD on DREAM's grid worlds",
        "",
        "Produced by `benchmarks/dream_compare.py` (see its docstring); do not edit by hand.",
        f"Machine: {meta['machine']}, JAX {meta['jax']} ({meta['backend']}), commit {meta['commit']}.",
        "",
        "One exploration episode then one exploitation episode per trial (20 steps each). Score: the greedy",
        "agent's mean exploitation return on held-out ids with the 95% Student-t interval over seeds x trials;",
        "optimal (full information) and no-information (Bayes-optimal) returns by the package's exact search.",
        "Env steps count both episodes (the reference's budget: 5M per seed). Wall time: training on this CPU,",
        "all seeds in one process (vmapped). The learning curves (PNG) use each algorithm's own evaluation hook on",
        "the training ids: greedy for dream, import and varibad, sampled actions for e-rl2 (RL²'s agent samples);",
        "the table's held-out scores are greedy for every method.",
        "",
    ]
    cols = ["family", "method", "seeds", "env steps / seed", "exploitation return", "95% CI", "per seed", "optimal",
            "no information", "train time (s)"]
    rows = []
    earlier = {id(e): earlier_config(e) for e in entries}
    for fam in FAMILIES:
        for e in [e for e in entries if e["family"] == fam]:
            r = refs[fam]
            rows.append([fam, e["method"] + (" †" if earlier[id(e)] else ""), e["seeds"], f"{e['env_steps_per_seed']:,}", f"{e['mean_exploit_return']:.3f}",
                         f"[{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]", ", ".join(f"{x:.2f}" for x in e["per_seed_mean_exploit_return"]),
                         f"{r['optimal']:.3f}", "n/c" if r.get("no_information") is None else f"{r['no_information']:.3f}",
                         f"{e['train_seconds']:.0f}"])
    lines.append(common.markdown_table(cols, rows))
    lines += ["", "n/c: not computed (the expectimax over this family's ids is too large)."]
    if any(earlier.values()):
        lines.append("†: ran with an earlier version of the method's preset; its config is in dream.json, and its command "
                     "below now trains the current preset.")
    lines.append("")
    for budget in sorted({steps_of(e) for e in entries}):
        rows_at = [e for e in entries if steps_of(e) == budget]
        lines.append(f"Training time summed over the {len(rows_at)} rows at {budget:,} steps: {sum(e['train_seconds'] for e in rows_at) / 3600:.2f} h "
                     "(the target: the whole comparison under 3 h; rows that ran beside another job count their slower time).")
    lines += ["", "## Verdicts", ""]
    for fam in FAMILIES:
        v = verdict([e for e in entries if e["family"] == fam])
        if v:
            lines.append(f"- {fam}: {v} (non-overlapping 95% CIs count as above/below)")
    lines += ["", "## Commands", ""]
    for e in entries:
        lines.append(f"- {e['family']} {e['method']}: `python -m benchmarks.dream_compare {e['family']} --methods {e['method']} "
                     f"--seeds {e['seeds']} --steps {steps_of(e)}" + (f" --preset {e['preset']}" if e.get("preset") else "") + f"` (run folder {e['run_folder']}, GIFs in its videos/)"
                     + (" †" if earlier[id(e)] else ""))
    lines += ["", "Learning curves (greedy, on the training ids): " + ", ".join(f"dream_{f}.png" for f in FAMILIES
                                                                          if any(e["family"] == f for e in entries)), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = common.parser(__doc__, "families", seeds=3)
    parser.add_argument("--methods", default="dream,e-rl2", help="comma-separated: " + ", ".join(METHODS))
    parser.add_argument("--steps", type=int, default=2_000_000, help="env steps per seed")
    parser.add_argument("--points", type=int, default=8, help="evaluations during training (the curve)")
    parser.add_argument("--report", action="store_true", help="only rewrite dream.md and the PNGs from dream.json")
    parser.add_argument("--preset", default=None, help="the methods' preset (default: each chooses its own per family); "
                        "the run folder's name then ends in -PRESET")
    args = parser.parse_args(argv)
    families = args.families or list(FAMILIES)
    methods = [m for m in args.methods.split(",") if m]
    for f in families:
        if f not in FAMILIES:
            parser.error(f"unknown family {f!r}; choose from {', '.join(FAMILIES)}")
    for m in methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    path = os.path.join(RESULTS, "dream.json")
    data = common.read_json(path) if os.path.exists(path) else {"entries": [], "references": {}}
    if args.report:
        for family in {e["family"] for e in data["entries"]}:
            plot(family, [e for e in data["entries"] if e["family"] == family], data["references"][family],
                 os.path.join(RESULTS, f"dream_{family}.png"))
        common.write_results("dream", data, markdown(data))
        return
    for family in families:
        test_env = metarl.make(family, split="test")
        data["references"][family] = reference_returns(test_env, test_env.split_ids())
        for method in methods:
            entry = run_one(family, method, args.seeds, args.steps, args.points, args.tasks, args.preset)
            saved = common.read_json(path)  # re-read: another invocation may have written its rows meanwhile
            if saved is not None:
                data = {**saved, "references": {**saved["references"], **data["references"]}}
            data["entries"] = [e for e in data["entries"]
                               if not (e["family"] == family and e["method"] == method and steps_of(e) == args.steps)] + [entry]
            data["meta"] = common.machine()
            data["entries"].sort(key=lambda e: (FAMILIES.index(e["family"]), METHODS.index(e["method"]), steps_of(e)))
            plot(family, [e for e in data["entries"] if e["family"] == family], data["references"][family],
                 os.path.join(RESULTS, f"dream_{family}.png"))
            common.write_results("dream", data, markdown(data))


if __name__ == "__main__":
    main()
