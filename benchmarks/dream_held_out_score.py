"""DREAM run folders scored as `dream_compare` scores its rows: per seed, the greedy agent's
exploitation return on `--tasks` tasks of the family's held-out split (sampled with PRNGKey(0),
the seeds on the same tasks; the run's own explorer and the decoder's z), and the same on its
training split; the 95% interval pooled over seeds x tasks; beside the optimum with the id known
and the no-information return, computed by the package. For settings tried outside the
comparison (options on the command line of `metarl train`, scratch run folders), so that their
numbers come from the comparison's own evaluation.

    python -m benchmarks.dream_held_out_score RUN [RUN ...] [--tasks 1000] [--tag TAG]

Written to benchmarks/results/dream_held_out_score[_TAG].{json,md}.
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np

import metarl
from benchmarks import common
from benchmarks.dream_compare import evaluate_greedy
from metarl.envs import dream_optimal
from metarl.envs.dream_grid import exploit_return
from metarl.eval import stats
from metarl.run import folder
from metarl.run.evaluation import load_run, seed_slice


def changed_options(algo) -> dict:
    """The config's entries that differ from the preset DREAM chooses for the family (not the
    learning rate's schedule, which the run's length sets)."""
    chosen = type(algo).default_preset(algo.env, algo.episodes)
    base = folder.jsonable(type(algo).presets[chosen[0]]) if chosen else {}
    return {k: v for k, v in folder.jsonable(algo.config).items() if base.get(k) != v and k != "lr_decay_updates"}


def score(run_dir: str, tasks: int) -> dict:
    _, algo, seeds, state, header, _ = load_run(run_dir, None, lambda *a: None)
    if algo.name != "dream":
        raise SystemExit(f"{run_dir} is a {algo.name} run; this script reads DREAM runs")
    key = jax.random.PRNGKey(0)
    out = {"run_folder": run_dir, "family": algo.env.name, "env_steps": header.get("env_steps"), "seeds": seeds,
           "changed_options": changed_options(algo), "config": folder.jsonable(algo.config)}
    for split in ("test", "train"):
        env = metarl.make(algo.env.name, split=split)
        sampled = env.sample_tasks(key, tasks)
        returns = np.stack([evaluate_greedy(algo, seed_slice(state, i), key, sampled) for i in range(seeds)])  # [seed, task, episode]
        interval = stats.total_return(returns[..., 1:], pooled=True)
        ids = env.split_ids()
        out[split] = {"per_seed": [float(x) for x in exploit_return(returns).mean(1)], "mean": interval.mean,
                      "ci95": [interval.low, interval.high],
                      "optimal": float(np.mean(dream_optimal.full_information(env, ids)))}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="DREAM run folders")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per split (every seed plays the same)")
    parser.add_argument("--tag", default="", help="write dream_held_out_score_TAG.* (keeps other results)")
    args = parser.parse_args(argv)
    for run in args.runs:
        if not os.path.exists(os.path.join(run, "config.json")):
            parser.error(f"{run} is not a run folder (no config.json)")
    entries = [score(run, args.tasks) for run in args.runs]
    command = "python -m benchmarks.dream_held_out_score " + " ".join(args.runs) + f" --tasks {args.tasks}" + (f" --tag {args.tag}" if args.tag else "")
    data = {"meta": common.machine(), "command": command, "tasks": args.tasks, "entries": entries}
    rows = []
    for e in entries:
        options = ", ".join(f"{k}={v}" for k, v in e["changed_options"].items()) or "(the family's preset)"
        cell = lambda s: f"{s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] ({', '.join(f'{x:.3f}' for x in s['per_seed'])})"  # noqa: E731
        rows.append([e["run_folder"], e["family"], f"{e['env_steps']:,}" if e["env_steps"] else "?", options,
                     cell(e["test"]), f"{e['test']['optimal']:.3f}", cell(e["train"]), f"{e['train']['optimal']:.3f}"])
    md = "\n".join([
        "# DREAM run folders, scored as dream_compare scores its rows", "",
        f"Produced by `{command}` ({data['meta']['machine']}); do not edit by hand. Greedy exploitation return on "
        f"{args.tasks} tasks per split sampled with PRNGKey(0) (every seed on the same tasks), the run's own explorer "
        "and decoder; mean and 95% interval pooled over seeds x tasks, then each seed's mean. Options: the run's "
        "config where it differs from the preset DREAM chooses for the family.", "",
        common.markdown_table(["run folder", "family", "env steps per seed", "options", "held out", "optimum",
                               "training ids", "optimum"], rows), ""])
    common.write_results("dream_held_out_score" + (f"_{args.tag}" if args.tag else ""), data, md)
    print(md)


if __name__ == "__main__":
    main()
