"""Seconds per First-Explore update on the 10-armed fixed-arm bandit, n = 100 pulls, 64 tasks per
update, preset "fast-bandit": the episode path (`fused=False`: a start and a closing token per
pull, exploit pulls in their own slots, 3n sequential network steps per rollout, 3n training
tokens) against the fused one-step path (`fused=True`, the default: exploit i and explore i + 1
in one network step of 2 tokens, n + 1 steps, 2n + 1 training tokens; the same records, loss
and gradients) and, for reference, the one-token-per-pull layout (`layout="pull"`, a different
network: n + 1 steps of 1 token, n + 1 training tokens). Also times the two pieces of an update
(the batched rollout; the loss and its gradient) for each, which is where the time goes.

    python -m benchmarks.first_explore_speed [--episodes 100] [--repeats 3] [--updates 5]

Each time is the best of `--repeats` runs of a jitted scan of `--updates` updates (or of the
piece), after a compile run. Writes benchmarks/results/first_explore_speed.md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import jax
import jax.numpy as jnp

import metarl
from metarl.algos.first_explore import PRESETS, FirstExplore
from metarl.run.folder import write_json_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
PATHS = {
    "episode path (fused=False, before)": dict(fused=False),
    "fused one-step path (fused=True, now the default)": dict(fused=True),
    "one token per pull (layout='pull')": dict(layout="pull"),
}


def best_time(fn, arg, repeats):
    jax.block_until_ready(fn(arg))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - start)
    return min(times)


def measure(env, episodes, overrides, updates, repeats):
    config = dataclasses.replace(PRESETS["fast-bandit"], total_updates=1000, **overrides)
    algo = FirstExplore(env, episodes, config)
    state = algo.init(jax.random.PRNGKey(0))
    state, _ = jax.jit(algo.update)(state)  # past update 0 (uniform rollouts): the on-policy rollouts
    train = jax.jit(lambda s: jax.lax.scan(lambda s, _: algo.update(s), s, None, length=updates)[1]["loss"])
    per_update = best_time(train, state, repeats) / updates

    tasks = env.sample_tasks(jax.random.PRNGKey(1), config.batch_tasks)
    keys = jax.random.split(jax.random.PRNGKey(2), config.batch_tasks)
    rollout = jax.jit(lambda p: jax.vmap(lambda t, k: algo.rollout_task(p, t, k, jnp.float32(1.0), epsilon=config.rollout_epsilon))(tasks, keys))
    records = rollout(state.params)
    loss_grad = jax.jit(lambda p: jax.grad(lambda q: algo._loss(q, records)[0])(p))
    return {
        "seconds_per_update": per_update,
        "rollout_seconds": best_time(rollout, state.params, repeats),
        "loss_and_gradient_seconds": best_time(loss_grad, state.params, repeats),
        "config": dataclasses.asdict(config),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = metarl.make("fixed-arm-bandit", arms=10, fixed_mean=0.5)
    results = {}
    for label, overrides in PATHS.items():
        results[label] = measure(env, args.episodes, overrides, args.updates, args.repeats)
        print(label, {k: round(v, 3) for k, v in results[label].items() if k != "config"}, flush=True)
    base = results[next(iter(PATHS))]["seconds_per_update"]
    command = f"python -m benchmarks.first_explore_speed --episodes {args.episodes} --updates {args.updates} --repeats {args.repeats}"
    out = {"command": command, "machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "jax": jax.__version__,
           "episodes": args.episodes, "batch_tasks": PRESETS["fast-bandit"].batch_tasks, "results": results}
    os.makedirs(RESULTS, exist_ok=True)
    write_json_atomic(os.path.join(RESULTS, "first_explore_speed.json"), out)
    lines = [
        "# First-Explore: seconds per update, fixed-arm bandit (10 arms), n = "
        f"{args.episodes} pulls, 64 tasks per update, preset fast-bandit",
        "",
        f"Produced by `{command}` on {out['machine']} (JAX {jax.__version__}; the machine was shared with another job, so "
        "all rows ran in the same process, one after the other). Best of the repeats; compilation excluded.",
        "",
        "| path | s/update | speed-up | rollout s | loss + gradient s |",
        "|---|---|---|---|---|",
    ]
    for label, r in results.items():
        lines.append(f"| {label} | {r['seconds_per_update']:.3f} | {base / r['seconds_per_update']:.2f}x | "
                     f"{r['rollout_seconds']:.3f} | {r['loss_and_gradient_seconds']:.3f} |")
    lines += ["", "The first two rows compute the same function (tests/test_first_explore_paths.py checks the records, the loss "
              "and the gradients against each other); the third is the reference's bandit network (a different model)."]
    with open(os.path.join(RESULTS, "first_explore_speed.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
