"""Why RL² does not learn the tabular MDP (n=10) at our budgets: short single-seed probes.

Each probe trains one RL² seed for the same number of environment steps on 10-episode trials of
random tabular MDPs (10 states, 5 actions, 10 steps per episode, rewards N(mu, 1), mu ~ N(1, 1)),
changing one thing from the "fast-long" preset, and scores it on held-out tasks (PRNGKey(0)) beside
Random and Greedy on the same tasks. The "1 state" probe keeps everything but gives the MDP a single
state: 10 episodes of 10 pulls of a 5-armed Gaussian bandit, which checks the multi-step-episode and
Gaussian-reward machinery apart from the state dimension.

    python benchmarks/rl2_mdp_probe.py [PROBE ...] [--steps 900000] [--tasks 300]

Run folders go to runs/mdp_probe/PROBE (rerunning continues them); results to
benchmarks/results/rl2_mdp_probe.md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rl2_reproduce import learning_curve  # noqa: E402

import metarl  # noqa: E402
from metarl import algos  # noqa: E402
from metarl.run import evaluate_run, train  # noqa: E402
from metarl.run.folder import write_json_atomic  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

#: name -> (what it tests, tabular-mdp options, RL² config changes from "fast-long")
PROBES = {
    "fast-long": ("the preset of rl2.md's mdp-n10 row", {}, {}),
    "separate-nets": ("separate policy and value GRUs (no value gradient in the policy's core)", {}, {"shared": False}),
    "vf-0.05": ("value loss weighted 0.05 in the shared core", {}, {"vf_coef": 0.05}),
    "ent-0.03-lambda-0.9": ("3x the entropy bonus and longer-horizon advantages", {}, {"ent_coef": 0.03, "gae_lambda": 0.9}),
    "gru-256": ("a shared GRU of 256 units instead of 128", {}, {"hidden": 256}),
    "1-state": ("the same trials with one state: a 5-armed Gaussian bandit, 10 episodes of 10 pulls", {"states": 1}, {}),
    "3-states": ("three states instead of ten", {"states": 3}, {}),
    "noiseless-rewards": ("ten states, rewards exactly mu(s, a) (no N(0, 1) noise)", {"reward_noise_std": 0.0}, {}),
}


def run_probe(name, steps, tasks):
    what, options, changes = PROBES[name]
    env = metarl.make("tabular-mdp", **options)
    config = dataclasses.replace(algos.algorithm_class("rl2").presets["fast-long"], **changes)
    algo = algos.make("rl2", env, 10, **dataclasses.asdict(config))
    out = os.path.join("runs", "mdp_probe", name)
    resume = os.path.exists(os.path.join(out, "config.json"))
    every = max(algo.steps_per_update, steps // 3 // algo.steps_per_update * algo.steps_per_update)
    start = time.perf_counter()
    result = train(algo, seeds=1, total_steps=steps, out_dir=out, resume=resume, eval_every=every, eval_tasks=tasks,
                   eval_seed=0, eval_baselines=[], quiet=True, command=["python", "benchmarks/rl2_mdp_probe.py", name])
    wall = time.perf_counter() - start
    if result.interrupted:
        sys.exit(f"stopped; {out} resumes when this command is run again")
    summary = evaluate_run(out, tasks=tasks, seed=0, baselines=["random", "greedy"])
    agents = {a["name"]: a for a in summary["agents"]}
    curve, _ = learning_curve(out, float("inf"))
    return {
        "probe": name, "tests": what, "family_options": options, "changes": changes, "config": dataclasses.asdict(config),
        "steps": result.env_steps, "train_seconds": result.train_seconds, "wall_seconds": wall, "resumed": resume,
        "tasks": tasks, "curve": [(c["env_steps"], c["mean"]) for c in curve],
        **{k: {"mean": agents[k]["mean_total_return"], "ci95": agents[k]["ci95"]} for k in ("rl2", "random", "greedy")},
    }


def markdown(data):
    lines = [
        "# RL² on tabular MDPs (n=10): probes",
        "",
        f"Produced by `benchmarks/rl2_mdp_probe.py` on {data['meta']['machine']} (JAX {data['meta']['jax']}). One seed "
        "per probe, the same steps each, scored on held-out tasks (PRNGKey(0)) beside Random and Greedy on the same "
        "tasks (95% t-intervals over tasks). \"gap closed\" = (RL² - Random) / (Greedy - Random). Each row: "
        "`python benchmarks/rl2_mdp_probe.py PROBE --steps STEPS --tasks TASKS`, training seed 0; training time is "
        "the summed training chunks (evaluation excluded), measured with other jobs sharing the 2 cores.",
        "",
        "| probe | what it tests | steps | RL² | Random | Greedy | gap closed | held-out curve (steps: mean) | training time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in PROBES:
        e = data["entries"].get(name)
        if e is None:
            continue
        r, rnd, g = e["rl2"], e["random"], e["greedy"]
        gap = (r["mean"] - rnd["mean"]) / (g["mean"] - rnd["mean"])
        curve = ", ".join(f"{s // 1000}k: {m:.1f}" for s, m in e["curve"])
        lines.append(f"| {name} | {e['tests']} | {e['steps']:,} | {r['mean']:.1f} [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] | "
                     f"{rnd['mean']:.1f} | {g['mean']:.1f} | {gap:.0%} | {curve} | {e['train_seconds']:.0f} s |")
    return "\n".join(lines + [""])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probes", nargs="*", help=f"default: all ({', '.join(PROBES)})")
    parser.add_argument("--steps", type=int, default=900_000)
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args(argv)
    unknown = [p for p in args.probes if p not in PROBES]
    if unknown:
        parser.error(f"unknown probe(s) {unknown}; valid: {', '.join(PROBES)}")
    path = os.path.join(RESULTS, "rl2_mdp_probe.json")
    for name in args.probes or list(PROBES):
        entry = run_probe(name, args.steps, args.tasks)
        print(f"{name}: RL² {entry['rl2']['mean']:.1f}, Random {entry['random']['mean']:.1f}, Greedy {entry['greedy']['mean']:.1f}",
              flush=True)
        data = json.load(open(path)) if os.path.exists(path) else {"entries": {}}
        data["meta"] = {"machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "jax": jax.__version__}
        data["entries"][name] = entry
        os.makedirs(RESULTS, exist_ok=True)
        write_json_atomic(path, data)
        with open(os.path.join(RESULTS, "rl2_mdp_probe.md"), "w") as f:
            f.write(markdown(data))


if __name__ == "__main__":
    main()
