"""RL² training throughput of this tree against an earlier commit's, interleaved on one machine.

    git worktree add /tmp/pre REV
    python -m benchmarks.rl2_speed_ab /tmp/pre [--runs 2] [--steps-per-update 48000] [--updates 2]

Runs `rl2_speed` (the reference network, bandit trials of 100 pulls) alternately in this tree and
in the other one (A B A B ...: the machine's speed drifts, so only interleaved runs compare), each
in its own process, and writes rl2_speed_ab.json and .md to benchmarks/results: every run's env
steps/s including learning, the medians and their ratio. The other tree runs its own
benchmarks/rl2_speed.py with its own metarl (PYTHONPATH), whatever layout it has.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks import common

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_run(tree: str, steps_per_update: int, updates: int) -> dict:
    script = os.path.join(tree, "benchmarks", "rl2_speed.py")
    args = [sys.executable, script, "--updates", str(updates), "--steps-per-update", str(steps_per_update), "--no-write"]
    env = dict(os.environ, PYTHONPATH=tree)
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{"):])


def revision(tree: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True).stdout.strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", help="a checkout of the commit to compare with (git worktree add)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps-per-update", type=int, default=48_000)
    parser.add_argument("--updates", type=int, default=2)
    args = parser.parse_args(argv)
    trees = {"this": HERE, "other": os.path.abspath(args.other)}
    runs = {name: [] for name in trees}
    for i in range(args.runs):
        for name, tree in trees.items():
            r = one_run(tree, args.steps_per_update, args.updates)
            runs[name].append({"steps_per_s": r["steps_per_s"], "learning_s": r["learning_s"], "rollout_s": r["rollout_s"],
                               "calibration_before": r["machine"]["calibration_before"]})
            print(f"run {i} {name}: {r['steps_per_s']:,.0f} steps/s", flush=True)
    med = {name: statistics.median(x["steps_per_s"] for x in rs) for name, rs in runs.items()}
    data = {"machine": common.machine(), "revisions": {name: revision(tree) for name, tree in trees.items()},
            "steps_per_update": args.steps_per_update, "updates": args.updates, "runs": runs, "median_steps_per_s": med,
            "ratio_this_over_other": med["this"] / med["other"],
            "command": f"python -m benchmarks.rl2_speed_ab OTHER --runs {args.runs} --steps-per-update {args.steps_per_update} --updates {args.updates}"}
    rows = [[name, data["revisions"][name], ", ".join(f"{x['steps_per_s']:,.0f}" for x in rs), f"{med[name]:,.0f}"] for name, rs in runs.items()]
    md = (f"# RL² training speed: this tree against {data['revisions']['other']}\n\n"
          f"Produced by `{data['command']}` (OTHER = a worktree of {data['revisions']['other']}) on {data['machine']['machine']}, "
          f"JAX {data['machine']['jax']}. `rl2_speed` with the reference network (GRU 256 + LayerNorm, separate policy and value, "
          f"bandit k=5, trials of 100 pulls, 8 epochs of 60-trial minibatches), {args.steps_per_update:,} steps per update, "
          f"{args.updates} timed updates per run, runs interleaved (A B A B ...). Env steps/s include learning.\n\n"
          + common.markdown_table(["tree", "commit", "steps/s per run", "median"], rows)
          + f"\nThis tree / {data['revisions']['other']}: **{data['ratio_this_over_other']:.3f}x**.\n")
    common.write_results("rl2_speed_ab", data, md)
    print(md)


if __name__ == "__main__":
    main()
