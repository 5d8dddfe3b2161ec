"""PPO on CartPole-v1 and Pendulum-v1 (gymnax families at their default physics) through the host
loop: seeds trained at once (vmapped), held-out greedy evaluations during training, the final one
on `--eval-episodes` episodes per seed. Targets: CartPole mean return >= 475; Pendulum >= -250
(RL Zoo's tuned PPO reports about -170).

    python -m benchmarks.ppo_classic [--seeds 4] [--settings cartpole,pendulum]

Run folders go to runs/bench/ppo-SETTING (rerunning continues them); writes
benchmarks/results/ppo.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import numpy as np

import metarl
from benchmarks.common import machine, markdown_table, write_results
from metarl import algos
from metarl.eval import stats
from metarl.run import train

#: name -> (gymnax env id, preset, env steps per seed, target, RL Zoo's reported return)
SETTINGS = {
    "cartpole": ("CartPole-v1", "reference", 512_000, 475.0, "500 (CleanRL, PureJaxRL)"),
    "cartpole-zoo": ("CartPole-v1", "cartpole", 204_800, 475.0, "500 (RL Zoo)"),
    "pendulum": ("Pendulum-v1", "pendulum", 409_600, -250.0, "about -170 (RL Zoo, with gSDE)"),
}


def run(name, seeds, eval_episodes, out_root):
    env_id, preset, steps, target, reference = SETTINGS[name]
    env = metarl.make("gymnax", env_id=env_id)
    base = algos.algorithm_class("ppo").presets[preset]
    spu = base.num_envs * base.num_steps
    updates = steps // spu
    algo = algos.make("ppo", env, **{**base.__dict__, "lr_decay_updates": updates})
    out = os.path.join(out_root, f"ppo-{name}")
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, so the wall time is this run's
    start = time.perf_counter()
    result = train(algo, seeds=seeds, total_steps=updates * spu, out_dir=out, eval_every=steps // 8, eval_tasks=32, quiet=True)
    wall = time.perf_counter() - start
    history = [json.loads(line) for line in open(os.path.join(out, "eval", "history.jsonl"))]
    import jax

    final = np.stack([
        algo.evaluate(jax.tree.map(lambda x: x[i], result.state), jax.random.PRNGKey(10_000 + i), tasks=eval_episodes)[:, 0]
        for i in range(seeds)
    ])  # [seed, episode]
    per_seed = final.mean(axis=1)
    ci = stats.t_interval(per_seed)
    mean, lo, hi = ci.mean, ci.low, ci.high
    first = next((h["env_steps"] for h in history if h["mean_total_return"] >= target), None)
    return {
        "env_id": env_id, "preset": preset, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in algo.config.__dict__.items()},
        "steps_per_seed": updates * spu, "seeds": seeds, "eval_episodes": eval_episodes,
        "per_seed": per_seed.tolist(), "mean": mean, "ci95": [lo, hi], "target": target, "reference": reference,
        "met": bool(mean >= target), "first_eval_at_target_steps": first,
        "curve": [(h["env_steps"], h["mean_total_return"]) for h in history],
        "train_seconds": result.train_seconds, "compile_seconds": result.compile_seconds, "wall_seconds": wall,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", default=os.path.join("runs", "bench"))
    args = parser.parse_args(argv)
    data = {"results": {}, "meta": machine()}
    data["command"] = "python -m benchmarks.ppo_classic" + (f" --seeds {args.seeds}" if args.seeds != 4 else "")
    rows = []
    for name in args.settings.split(","):
        r = run(name, args.seeds, args.eval_episodes, args.out)
        data["results"][name] = r
        curve = ", ".join(f"{s // 1000}k: {v:.0f}" for s, v in r["curve"])
        rows.append([
            f"{r['env_id']} ({r['preset']})", f"{r['steps_per_seed']:,}", f"**{r['mean']:.1f}** [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]",
            ", ".join(f"{v:.1f}" for v in r["per_seed"]), f">= {r['target']:g}: {'met' if r['met'] else 'not met'}", r["reference"],
            f"{r['first_eval_at_target_steps']:,}" if r["first_eval_at_target_steps"] else "not reached",
            f"{r['train_seconds']:.0f} s (+{r['compile_seconds']:.0f} s compile)",
        ])
        print(rows[-1], "\n  curve:", curve, flush=True)
    md = (
        "# PPO on classic control (gymnax, default physics)\n\n"
        f"{args.seeds} seeds trained at once; greedy policy, {args.eval_episodes} episodes per seed after training; "
        "95% t-interval over the per-seed means. Steps are environment steps per seed; the time is the whole "
        "training of all seeds on this CPU.\n\n"
        + markdown_table(["setting", "steps", "mean return", "per seed", "target", "reference", "first eval at target (32 episodes)", "training time"], rows)
        + "\nLearning curves (held-out greedy evaluations on 32 episodes, mean over seeds):\n\n"
        + "\n".join(f"- {n}: " + ", ".join(f"{s // 1000}k: {v:.0f}" for s, v in r["curve"]) for n, r in data["results"].items())
        + f"\n\nCommand: `{data['command']}`. Machine: {data['meta']['machine']}, jax {data['meta']['jax']}.\n"
    )
    write_results("ppo", data, md)
    print(md)


if __name__ == "__main__":
    main()
