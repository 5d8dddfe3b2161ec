"""Which self-imitation rule lets First-Explore's exploit policy learn fastest on a bandit?

The reference code has two rules (docs/first_explore.md): its bandit runs are on-policy with 5%
random actions, unweighted, and compare an exploit pull with the best *explore* reward in its
context ("fast-bandit" here); its treasure-room and maze runs refresh the rollout parameters
periodically, weight by the improvement and compare with the best of all earlier episodes ("fast",
here refreshed every 10 updates). This script trains both on the 10-armed fixed-arm bandit with
n = 20 pulls (small enough for minutes on a 2-core CPU), `--seeds` seeds vmapped in one jit, and
records the exploit policy's mean reward per pull during training (its context: the explore pulls
so far) and after the last explore pull. Random pulls score (0.5 + 9 x 0) / 10 = 0.05 on the
deceptive variant, the safe arm 0.5; exploiting the best arm in a 20-pull random context about 1.

    python -m benchmarks.first_explore_rules [--updates 1000] [--seeds 2] [--episodes 20]

Writes benchmarks/results/first_explore_rules.md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time

import jax
import numpy as np

import metarl
from metarl.algos.first_explore import PRESETS, FirstExplore
from metarl.run.folder import write_json_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
RULES = {
    "bandit rule (fast-bandit)": ("fast-bandit", {}),
    "room rule (fast, refresh 10)": ("fast", {"refresh_every": 10}),
}
CHUNK = 50


def train_rule(preset, overrides, env, episodes, updates, seeds):
    config = dataclasses.replace(PRESETS[preset], total_updates=updates, **overrides)
    algo = FirstExplore(env, episodes, config)
    states = jax.vmap(algo.init)(jax.random.split(jax.random.PRNGKey(0), seeds))

    @jax.jit
    def chunk(states):
        def body(s, _):
            s, m = jax.vmap(algo.update)(s)
            return s, (m["exploit_return"], m["final_exploit_return"])

        return jax.lax.scan(body, states, None, length=CHUNK)

    start = time.perf_counter()
    curve = []
    for c in range(updates // CHUNK):
        states, (mean_pull, final_pull) = chunk(states)
        curve.append({
            "updates": (c + 1) * CHUNK,
            "exploit_reward_per_pull": float(np.mean(mean_pull)),
            "exploit_reward_after_last_explore": float(np.mean(final_pull)),
            "per_seed": np.asarray(mean_pull).mean(0).round(4).tolist(),
        })
        print(f"  {preset}: {curve[-1]['updates']} updates, exploit/pull {curve[-1]['exploit_reward_per_pull']:.3f}", flush=True)
    return {"preset": preset, "overrides": overrides, "config": dataclasses.asdict(config), "curve": curve,
            "seconds": time.perf_counter() - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    if args.updates < CHUNK or args.seeds < 1 or args.episodes < 1:
        sys.exit(f"--updates must be >= {CHUNK}, --seeds and --episodes >= 1")
    env = metarl.make("fixed-arm-bandit", arms=10, fixed_mean=0.5)
    results = {}
    for label, (preset, overrides) in RULES.items():
        results[label] = train_rule(preset, overrides, env, args.episodes, args.updates, args.seeds)
    command = f"python -m benchmarks.first_explore_rules --updates {args.updates} --seeds {args.seeds} --episodes {args.episodes}"
    out = {"command": command, "machine": f"{os.cpu_count()}-core {platform.machine()} CPU", "jax": jax.__version__,
           "family": "fixed-arm-bandit", "options": {"arms": 10, "fixed_mean": 0.5}, "episodes": args.episodes,
           "seeds": args.seeds, "updates": args.updates, "results": results}
    os.makedirs(RESULTS, exist_ok=True)
    write_json_atomic(os.path.join(RESULTS, "first_explore_rules.json"), out)
    lines = [
        "# First-Explore: the bandit rule vs the room rule on the 10-armed deceptive bandit",
        "",
        f"Produced by `{command}` on {out['machine']} (JAX {jax.__version__}); {args.seeds} seeds vmapped per rule, "
        f"n = {args.episodes} pulls, 64 tasks per update. Exploit reward per pull = mean over the n exploit pulls of an "
        "update's rollouts (each reads the explore pulls so far); after last explore = the exploit pull that reads all n. "
        "Random: 0.05; the safe arm: 0.5.",
        "",
        "| updates | " + " | ".join(f"{label}: per pull / after last explore" for label in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    rows = len(next(iter(results.values()))["curve"])
    for i in range(rows):
        if (i + 1) % 2 and i != rows - 1:
            continue
        cells = [f"{r['curve'][i]['exploit_reward_per_pull']:.3f} / {r['curve'][i]['exploit_reward_after_last_explore']:.3f}"
                 for r in results.values()]
        lines.append(f"| {results[next(iter(results))]['curve'][i]['updates']} | " + " | ".join(cells) + " |")
    lines += ["", "Training time: " + "; ".join(f"{label} {r['seconds']:.0f} s (compile included)" for label, r in results.items()) + "."]
    with open(os.path.join(RESULTS, "first_explore_rules.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
