"""RL² training throughput in the reference setting (GRU 256 + LayerNorm, separate policy and value
networks, Bernoulli bandit k=5, trials of 100 pulls, 240,000 steps per update, 8 epochs,
minibatches of 60 trials) on this machine's CPU.

    python -m benchmarks.rl2_speed [--updates 2] [--steps-per-update 240000] [--out benchmarks/results]
    python -m benchmarks.rl2_speed --devices 2 --tag _dev2   # data parallel
    python -m benchmarks.rl2_speed --compare-devices 1,2     # interleaved A/B

`--devices N` runs `RL2Config(devices=N)`: every rollout and PPO minibatch split over N JAX devices;
on a CPU that needs N host devices: this script calls `metarl.use_host_devices(N)` for the most
--devices / --compare-devices ask for, before JAX starts.
`--compare-devices 1,2` times the device counts given alternately in one process (A, B, A, B, ...:
on a shared machine the load changes over time, so only interleaved runs compare fairly) and prints
the min wall and CPU time of each and their ratios; it writes nothing.

Reports environment steps per second *including learning* (one `update` = rollout + GAE + 8
epochs of PPO), the time split between the rollout and the learning, an estimate of the
arithmetic rate (GFLOP/s, counting the recurrent and input matmuls: forward 2*(F+H)*G*H per core
and step, backward twice that) and the machine's load average, since other processes may share
the CPU. Writes rl2_speed.json and rl2_speed.md to --out.

Machine calibration (before and after the timed updates): the rate of a dense 2048 x 2048 float32
matmul and the steps/s of a GRU-256 forward+backward pass over 100 steps at batch 1200 (plain GRU,
no LayerNorm, our `gru_layer`). The issue that set the 4x target measured ~220-250 GFLOP/s and
~95,000 steps/s for these on "a 2-core machine of this kind"; hosts of this kind differ by tens of
percent from day to day, so read the steps/s beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def _wanted_devices(argv: list[str]) -> int:
    """The most devices --devices / --compare-devices ask for (read before JAX starts)."""
    wanted = 1
    for i, arg in enumerate(argv):
        for flag in ("--devices", "--compare-devices"):
            if arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            else:
                continue
            wanted = max([wanted] + [int(v) for v in value.split(",") if v.strip().isdigit()])
    return wanted


import metarl  # noqa: E402  (light: no JAX computation yet)

if _wanted_devices(sys.argv[1:]) > 1:  # must precede the first JAX computation
    metarl.use_host_devices(_wanted_devices(sys.argv[1:]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from metarl.algos.rl2 import RL2, RL2Config  # noqa: E402

#: The PyTorch re-implementation's training throughput at this size (steps/s), and the bar.
REFERENCE_STEPS_PER_S = 1_100
TARGET_STEPS_PER_S = 4 * REFERENCE_STEPS_PER_S


def flops_per_env_step(algo: RL2) -> dict[str, float]:
    """Matmul FLOPs per environment step: rollout (forward) and learning (epochs x fwd+bwd)."""
    c = algo.config
    net = algo.network
    gates = 3 if c.core == "gru" else 4
    features = int(jnp.prod(jnp.array(algo.env.obs_shape))) + algo.env.num_actions + 2 + int(c.episode_index_input)
    core_fwd = 2 * (features + c.hidden) * gates * c.hidden * net.num_cores
    heads_fwd = 2 * c.hidden * (algo.env.num_actions + 1)
    fwd = core_fwd + heads_fwd
    return {"rollout": fwd, "learning": 3 * fwd * c.epochs}


#: The calibration figures quoted by the issue for the machine its 1,100 steps/s was measured on.
ISSUE_MATMUL_GFLOPS = (220, 250)
ISSUE_GRU_STEPS_PER_S = 95_000


def _best_time(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def calibrate() -> dict[str, float]:
    """This machine's dense-matmul GFLOP/s (2048^2 float32) and GRU-256 fwd+bwd steps/s (batch 1200,
    100 steps): the two figures the issue quotes for its machine."""
    from metarl.nets.recurrent import gru_layer

    n, T, B, H, F = 2048, 100, 1200, 256, 8
    keys = jax.random.split(jax.random.key(1), 4)
    a = jax.random.normal(keys[0], (n, n), jnp.float32)
    matmul_s = _best_time(jax.jit(lambda a: a @ a), a)
    w_x = jax.random.normal(keys[1], (1, F, 3 * H)) * 0.1
    w_h = jax.random.normal(keys[2], (1, H, 3 * H)) * 0.05
    zeros = jnp.zeros((1, 1, 3, H))
    x = jax.random.normal(keys[3], (T, B, F))
    reset = jnp.zeros((T, B), bool).at[0].set(True)

    def loss(w_x, w_h, bias):
        _, hs = gru_layer(False, 2, w_x, zeros, bias, w_h, zeros, zeros, x, jnp.zeros((1, B, H)), reset)
        return jnp.sum(hs)

    gru_s = _best_time(jax.jit(jax.grad(loss, argnums=(0, 1, 2))), w_x, w_h, zeros, repeats=3)
    return {"matmul_gflop_per_s": 2 * n**3 / matmul_s / 1e9, "gru256_fwd_bwd_steps_per_s": T * B / gru_s}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def compare_devices(env, args, device_counts: list[int]) -> None:
    """Interleaved A/B: one jitted update per device count, timed alternately `--updates` times."""
    variants = []
    for devices in device_counts:
        config = RL2Config(steps_per_update=args.steps_per_update, minibatch_trials=args.minibatch_trials, devices=devices)
        algo = RL2(env, args.episodes, config)
        update = jax.jit(algo.update)
        ts = algo.init(jax.random.key(0))
        jax.block_until_ready(update(ts))  # compile and warm up
        variants.append((devices, algo, update, ts))
    print(f"{variants[0][1].steps_per_update} steps/update, minibatches of {variants[0][1].minibatch_size} trials", flush=True)
    times = {d: [] for d in device_counts}
    for _ in range(args.updates):
        for devices, algo, update, ts in variants:
            load = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(update(ts))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            times[devices].append((wall, cpu))
            print(f"devices={devices}: {algo.steps_per_update / wall:,.0f} steps/s, wall {wall:.1f} s, cpu {cpu:.1f} s "
                  f"(cores busy {cpu / wall:.2f}), load average {load:.1f}", flush=True)
    base = device_counts[0]
    best = {d: (min(w for w, _ in t), min(c for _, c in t)) for d, t in times.items()}
    for d in device_counts:
        print(f"devices={d}: min wall {best[d][0]:.1f} s, min cpu {best[d][1]:.1f} s; "
              f"wall ratio devices={base}/devices={d}: {best[base][0] / best[d][0]:.2f}x, "
              f"cpu ratio: {best[base][1] / best[d][1]:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=2, help="timed updates (after one warm-up)")
    parser.add_argument("--steps-per-update", type=int, default=240_000)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--minibatch-trials", type=int, default=60,
                        help="60 = the reference's per-process minibatch; 480 = its effective (8 MPI processes) one")
    parser.add_argument("--devices", type=int, default=1, help="split the trials over this many devices (RL2Config.devices)")
    parser.add_argument("--compare-devices", default="",
                        help="comma-separated device counts to time alternately in one process (A/B); writes nothing")
    parser.add_argument("--tag", default="", help="suffix of the output files")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    env = metarl.make("bandit", arms=args.arms)
    if args.compare_devices:
        compare_devices(env, args, [int(d) for d in args.compare_devices.split(",")])
        return
    config = RL2Config(steps_per_update=args.steps_per_update, minibatch_trials=args.minibatch_trials, devices=args.devices)
    algo = RL2(env, args.episodes, config)
    print(f"RL² {config.core.upper()} {config.hidden}, {algo.trials_per_update} trials x {algo.trial_steps} steps "
          f"= {algo.steps_per_update} steps/update, {algo.num_minibatches} minibatches x {algo.minibatch_size} trials, "
          f"{config.epochs} epochs, {config.devices} device(s)", flush=True)
    load_before = os.getloadavg()
    calibration_before = calibrate()

    ts = algo.init(jax.random.key(0))
    update = jax.jit(algo.update, donate_argnums=0)
    t0 = time.perf_counter()
    compiled = update.lower(ts).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ts, metrics = compiled(ts)
    jax.block_until_ready(metrics)
    warmup_s = time.perf_counter() - t0

    rollout = jax.jit(algo.rollout)
    jax.block_until_ready(rollout(ts.params, ts.key))
    t0 = time.perf_counter()
    jax.block_until_ready(rollout(ts.params, ts.key))
    rollout_s = time.perf_counter() - t0

    times, cpu_times = [], []
    for _ in range(args.updates):
        t0, c0 = time.perf_counter(), time.process_time()
        ts, metrics = compiled(ts)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    load_after = os.getloadavg()
    calibration_after = calibrate()
    update_s = min(times)
    steps_per_s = algo.steps_per_update / update_s
    flops = flops_per_env_step(algo)
    total_flops = (flops["rollout"] + flops["learning"]) * algo.steps_per_update
    result = {
        "setting": {
            "env": env.describe(), "episodes": args.episodes, "core": config.core, "hidden": config.hidden,
            "shared": config.shared, "layer_norm": config.layer_norm, "steps_per_update": algo.steps_per_update,
            "trials_per_update": algo.trials_per_update, "minibatch_trials": algo.minibatch_size,
            "minibatches": algo.num_minibatches, "epochs": config.epochs, "devices": config.devices,
        },
        "steps_per_s": steps_per_s,
        "update_s": update_s,
        "update_s_all": times,
        "update_cpu_s": min(cpu_times),
        "cores_used": min(cpu_times) / update_s,
        "steps_per_cpu_s": algo.steps_per_update / min(cpu_times),
        "rollout_s": rollout_s,
        "learning_s": update_s - rollout_s,
        "compile_s": compile_s,
        "first_update_s": warmup_s,
        "gflop_per_update": total_flops / 1e9,
        "gflop_per_s": total_flops / update_s / 1e9,
        "learning_gflop_per_s": flops["learning"] * algo.steps_per_update / max(update_s - rollout_s, 1e-9) / 1e9,
        "reference_steps_per_s": REFERENCE_STEPS_PER_S,
        "speedup_vs_reference": steps_per_s / REFERENCE_STEPS_PER_S,
        "target_steps_per_s": TARGET_STEPS_PER_S,
        "meets_target": steps_per_s >= TARGET_STEPS_PER_S,
        "machine": {
            "cpu": cpu_name(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "loadavg_before": load_before, "loadavg_after": load_after,
            "calibration_before": calibration_before, "calibration_after": calibration_after,
            "issue_machine": {"matmul_gflop_per_s": ISSUE_MATMUL_GFLOPS, "gru256_fwd_bwd_steps_per_s": ISSUE_GRU_STEPS_PER_S},
        },
        "trial_return": float(metrics["trial_return"]),
    }
    print(json.dumps(result, indent=1))
    if args.no_write:
        return
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"rl2_speed{args.tag}.json"), "w") as f:
        json.dump(result, f, indent=1)
    s = result["setting"]
    md = f"""# RL² training speed (CPU)

Setting: {s['env']}, trials of {s['episodes']} pulls, {s['core'].upper()} {s['hidden']} + LayerNorm,
{'shared' if s['shared'] else 'separate'} policy and value networks, {s['steps_per_update']:,} steps per update
({s['trials_per_update']} trials), {s['epochs']} epochs x {s['minibatches']} minibatches of {s['minibatch_trials']} trials,
{s['devices']} device(s).
Machine: {result['machine']['cpu']}, {result['machine']['cpus']} CPUs, jax {jax.__version__};
load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (other processes shared the CPU when > ~1).
Calibration (before / after the timed updates; the issue's machine in brackets): dense 2048^2 matmul
{calibration_before['matmul_gflop_per_s']:.0f} / {calibration_after['matmul_gflop_per_s']:.0f} GFLOP/s
[{ISSUE_MATMUL_GFLOPS[0]}-{ISSUE_MATMUL_GFLOPS[1]}]; GRU-256 forward+backward, batch 1200, 100 steps
{calibration_before['gru256_fwd_bwd_steps_per_s']:,.0f} / {calibration_after['gru256_fwd_bwd_steps_per_s']:,.0f} steps/s [{ISSUE_GRU_STEPS_PER_S:,}].

| measure | value |
|---|---|
| env steps/s including learning | **{steps_per_s:,.0f}** |
| PyTorch reference (steps/s) | {REFERENCE_STEPS_PER_S:,} |
| speed-up vs reference | {result['speedup_vs_reference']:.1f}x (target 4x = {TARGET_STEPS_PER_S:,} steps/s: {'met' if result['meets_target'] else 'NOT met'}) |
| one update (s) | {update_s:.1f} (all: {', '.join(f'{t:.1f}' for t in times)}) |
| CPU time of one update (s, all threads) | {min(cpu_times):.1f} (cores busy on average: {min(cpu_times) / update_s:.2f}) |
| env steps per CPU-second (load-independent) | {algo.steps_per_update / min(cpu_times):,.0f} |
| of which rollout (s) | {rollout_s:.1f} |
| of which GAE + PPO epochs (s) | {update_s - rollout_s:.1f} |
| matmul GFLOP per update (estimate) | {result['gflop_per_update']:.0f} |
| GFLOP/s overall (estimate) | {result['gflop_per_s']:.1f} |
| GFLOP/s in learning (estimate) | {result['learning_gflop_per_s']:.1f} |
| compile (s) | {compile_s:.1f} |

Regenerate: `python -m benchmarks.rl2_speed --updates {args.updates}{' --steps-per-update ' + str(args.steps_per_update) if args.steps_per_update != 240_000 else ''} --minibatch-trials {s['minibatch_trials']}{' --devices ' + str(s['devices']) if s['devices'] > 1 else ''}{' --tag ' + args.tag if args.tag else ''}`.

Where the time goes (jax.profiler trace of one 60-trial PPO minibatch step, see the commit log):
before the fused GRU layer about half of it was memory-bound work on [T, N, B, 3H] = 37 MB arrays
(the precomputed input projection, its LayerNorm, broadcasts of its gradient and transposes for the
weight-gradient matmul); `metarl.nets.recurrent.gru_layer` now projects each step's 8 input features
inside the scan and accumulates the gradients in the backward carry. What remains is ~200 sequential
scan steps per minibatch (forward + backward), each a few [2, b, 256] x [2, 256, 768] matmuls plus
~40 small elementwise/reduction ops; at b = 60 those matmuls are too small to use both cores or reach
the rate a large matmul gets (see the calibration above), and the small ops' fixed cost per op dominates. Larger
minibatches (480) amortise it. The load average matters: with other jobs on the 2 cores, the wall
time grows roughly with the load, so compare the load-independent steps per CPU-second too.
"""
    with open(os.path.join(args.out, f"rl2_speed{args.tag}.md"), "w") as f:
        f.write(md)


if __name__ == "__main__":
    main()
