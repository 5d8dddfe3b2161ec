"""DQN speed beside Stable-Baselines3, same machine, same run: the contextual-RL reference setting
(CleanRL's DQN on CartPole-v1, 500,000 steps per seed) with ours training `--seeds` seeds at once
(vmapped, one process) and SB3's DQN training one seed with the same hyperparameters.

    python -m benchmarks.contextual_speed --sb3-python /path/to/venv/bin/python [--steps 500000] [--seeds 10]

The SB3 side runs in its own virtual environment (`--sb3-python`: one with stable-baselines3,
PyTorch's CPU build and Gymnasium; not a dependency of metarl), one after the other with ours, so
that they never share the two cores. Both are whole processes timed from outside (start-up, JAX's
compilation and PyTorch's set-up included): the figure is all seeds' environment steps over that
wall time, and the ratio is ours over SB3's. Each side also reports its training loop alone and
the mean greedy return of what it learnt (10 episodes per seed), so that the speed is of a run that
learns. Writes benchmarks/results/contextual_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: CleanRL's DQN on CartPole-v1, the reference's; SB3's names
SB3_SETTINGS = dict(learning_rate=2.5e-4, buffer_size=10_000, learning_starts=10_000, batch_size=128, tau=1.0, gamma=0.99,
                    train_freq=10, gradient_steps=1, target_update_interval=500, exploration_fraction=0.5,
                    exploration_initial_eps=1.0, exploration_final_eps=0.05)


def run_sb3(steps: int, seed: int) -> dict:
    """One SB3 DQN run (in the SB3 environment): its training and greedy-evaluation figures."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.evaluation import evaluate_policy

    env = gym.make("CartPole-v1")
    model = DQN("MlpPolicy", env, policy_kwargs=dict(net_arch=[120, 84]), seed=seed, device="cpu", verbose=0, **SB3_SETTINGS)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    train = time.perf_counter() - start
    mean, _ = evaluate_policy(model, gym.make("CartPole-v1"), n_eval_episodes=10, deterministic=True)
    import stable_baselines3

    return {"train_seconds": train, "greedy_return": float(mean), "torch": torch.__version__, "sb3": stable_baselines3.__version__,
            "torch_threads": torch.get_num_threads()}


def run_ours(steps: int, seeds: int, host_devices: int) -> dict:
    """`seeds` DQN seeds at once (split over `host_devices` CPU devices, as `metarl --host-devices N
    train` does): the training loop's time (compilation apart) and greedy returns."""
    import metarl

    if host_devices > 1:
        metarl.use_host_devices(host_devices)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from metarl import algos
    from metarl.run.evaluation import seed_slice
    from metarl.run.loop import init_states, run_chunk, spread_seeds
    from metarl.run.settings import init_keys

    algo = algos.make("dqn", metarl.make("gymnax", env_id="CartPole-v1"), preset="reference")
    updates = steps // algo.steps_per_update
    algo = algo.for_run(updates)
    start = time.perf_counter()
    state = spread_seeds(algo, init_states(algo, init_keys(0, seeds)), seeds)
    state, _, _ = run_chunk(algo, state, jnp.int32(1))  # compiles (the update count is not static)
    jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    state, _, bad = run_chunk(algo, state, jnp.int32(updates - 1))
    jax.block_until_ready(state)
    train = time.perf_counter() - start
    key = jax.random.PRNGKey(1)
    returns = [float(np.asarray(algo.evaluate(seed_slice(state, i), key, tasks=10)).mean()) for i in range(seeds)]
    return {"train_seconds": train, "compile_seconds": compile_seconds, "greedy_return": float(np.mean(returns)),
            "greedy_per_seed": returns, "diverged": int((np.asarray(bad) >= 0).sum()), "jax": jax.__version__,
            "devices": len(jax.local_devices())}


def timed(cmd: list[str]) -> tuple[dict, float]:
    """Run `cmd` (which prints one JSON line last) as a whole process: (its JSON, wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500_000, help="env steps per seed (the reference: 500,000)")
    parser.add_argument("--seeds", type=int, default=10, help="our seeds, vmapped in one process")
    parser.add_argument("--host-devices", type=int, default=2, help="our seeds split over this many CPU devices (the cores)")
    parser.add_argument("--sb3-python", help="the Python of a virtual environment with stable-baselines3")
    parser.add_argument("--side", choices=("ours", "sb3"), help=argparse.SUPPRESS)  # one side, in its own process
    args = parser.parse_args(argv)
    if args.side == "sb3":
        print(json.dumps(run_sb3(args.steps, 0)))
        return
    if args.side == "ours":
        print(json.dumps(run_ours(args.steps, args.seeds, args.host_devices)))
        return
    if not args.sb3_python:
        parser.error("--sb3-python is needed (a venv with stable-baselines3: pip install stable-baselines3 gymnasium torch)")
    module = [ "-m", "benchmarks.contextual_speed", "--steps", str(args.steps)]
    ours_cmd = [sys.executable, *module, "--seeds", str(args.seeds), "--host-devices", str(args.host_devices), "--side", "ours"]
    sb3_cmd = [args.sb3_python, *module, "--side", "sb3"]
    ours, ours_wall = timed(ours_cmd)
    print(f"ours: {args.seeds} seeds x {args.steps:,} steps in {ours_wall:.0f} s", flush=True)
    sb3, sb3_wall = timed(sb3_cmd)
    print(f"sb3: 1 seed x {args.steps:,} steps in {sb3_wall:.0f} s", flush=True)

    from benchmarks import common

    ours_rate = args.seeds * args.steps / ours_wall
    sb3_rate = args.steps / sb3_wall
    data = {
        "meta": common.machine(), "steps_per_seed": args.steps, "seeds_ours": args.seeds, "settings": SB3_SETTINGS,
        "command": f"python -m benchmarks.contextual_speed --steps {args.steps} --seeds {args.seeds} --host-devices {args.host_devices} --sb3-python PYTHON",
        "ours": {**ours, "wall_seconds": ours_wall, "steps_per_second": ours_rate,
                 "loop_steps_per_second": args.seeds * args.steps / ours["train_seconds"]},
        "sb3": {**sb3, "wall_seconds": sb3_wall, "steps_per_second": sb3_rate, "loop_steps_per_second": args.steps / sb3["train_seconds"]},
        "ratio": ours_rate / sb3_rate, "target": 50.0,
    }
    rows = [
        [f"metarl DQN (JAX, vmapped, seeds over {ours['devices']} CPU devices)", args.seeds, f"{ours_wall:.0f} s", f"{ours['compile_seconds']:.0f} s", f"{ours['train_seconds']:.0f} s",
         f"{ours_rate:,.0f}", f"{data['ours']['loop_steps_per_second']:,.0f}", f"{ours['greedy_return']:.1f}"],
        [f"Stable-Baselines3 {sb3['sb3']} DQN (PyTorch {sb3['torch']}, {sb3['torch_threads']} threads)", 1, f"{sb3_wall:.0f} s", "", f"{sb3['train_seconds']:.0f} s",
         f"{sb3_rate:,.0f}", f"{data['sb3']['loop_steps_per_second']:,.0f}", f"{sb3['greedy_return']:.1f}"],
    ]
    md = "\n".join([
        "# DQN speed beside Stable-Baselines3 (CartPole-v1, the reference's settings)", "",
        f"Produced by `{data['command']}` on {data['meta']['machine']}, one side after the other. CleanRL's DQN settings on both "
        f"(MLP 120-84, Adam 2.5e-4, buffer 10,000, batch 128, target copied every 500 steps, epsilon 1 -> 0.05 over half the run, "
        f"learning from step 10,000, a gradient step every 10 steps), {args.steps:,} env steps per seed. Env steps/s: all seeds' "
        "steps over the whole process's wall time (start-up and compilation included); the loop's: over the training loop alone.", "",
        common.markdown_table(["run", "seeds", "wall time", "compile", "training loop", "env steps/s (all seeds, wall)", "env steps/s (loop)",
                               "mean greedy return"], rows), "",
        f"Ratio (ours / SB3, whole processes): **{data['ratio']:.1f}x** (target >= 50x): {'met' if data['ratio'] >= 50 else 'not met'}.", "",
    ])
    common.write_results("contextual_speed", data, md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
