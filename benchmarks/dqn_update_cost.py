"""Where DQN's time goes on CartPole (CleanRL's settings, 10 seeds vmapped): one whole update (10 env
steps of each seed, the replay write and one gradient step) beside one gradient step alone (batch
128 through the 120-84 Q-network, its backward pass, the target network's forward and Adam), both
jitted and looped on the device, timed in the same process.

    python -m benchmarks.dqn_update_cost [--seeds 10] [--updates 2000]

If the gradient step alone takes most of the update's time, the loop is bound by the network's
arithmetic on this CPU, not by environment stepping or dispatch: a faster loop then needs fewer
FLOPs per step (a smaller batch or network), which the reference setting fixes.

It also measures this CPU's ceiling for that arithmetic, in the same process: XLA's rate on one
large dense float32 matmul (2048 x 2048 x 2048, the best case for the CPU's vector units) and on the
gradient step's own largest matmul (every seed's batch of 128 through 120 -> 84, vmapped), and
from it the least time the reference run's gradient steps can take at that rate: what bounds the
env steps per second of `contextual_speed.py`'s run, whatever the rest of the loop costs.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import optax

from benchmarks import common

import metarl
from metarl import algos
from metarl.algos.dqn import QNetwork, td_targets


def time_loop(fn, state, n):
    jax.block_until_ready(fn(state, n))  # compile and warm
    t = time.perf_counter()
    jax.block_until_ready(fn(state, n))
    return (time.perf_counter() - t) / n


def main(argv=None):
    parser = common.parser(__doc__, "rows", seeds=10)
    parser.add_argument("--updates", type=int, default=2000, help="updates timed (after a warm-up of as many)")
    args = parser.parse_args(argv)
    seeds, n = args.seeds, args.updates

    env = metarl.make("gymnax", env_id="CartPole-v1")
    algo = algos.make("dqn", env, preset="reference", learning_starts=0, schedule_steps=500_000)
    states = jax.vmap(algo.init)(jax.random.split(jax.random.PRNGKey(0), seeds))

    @jax.jit
    def updates(state, n):
        return jax.lax.fori_loop(0, n, lambda i, s: jax.vmap(algo.update)(s)[0], state)

    whole = time_loop(updates, states, n)

    c = algo.config
    net = QNetwork(env.num_actions, c.hidden)
    opt = optax.adam(c.lr, eps=c.adam_eps)
    params = states.params
    batch = jax.vmap(lambda b, k: jax.tree.map(lambda x: x[jax.random.randint(k, (c.batch_size,), 0, c.buffer_size)], b))(
        states.buffer, jax.random.split(jax.random.PRNGKey(1), seeds))

    def gradient_step(p, o, target, mb):
        def loss(p):
            q = jnp.take_along_axis(net.apply(p, mb["obs"], mb["context"]), mb["action"][:, None], axis=-1)[:, 0]
            y = td_targets(mb["reward"], mb["terminated"], c.gamma, net.apply(target, mb["next_obs"], mb["context"]))
            return jnp.mean(jnp.square(q - jax.lax.stop_gradient(y)))

        u, o = opt.update(jax.grad(loss)(p), o, p)
        return optax.apply_updates(p, u), o

    @jax.jit
    def steps(carry, n):
        return jax.lax.fori_loop(0, n, lambda i, c_: jax.vmap(gradient_step)(c_[0], c_[1], params, batch), carry)

    grad_only = time_loop(steps, (params, jax.vmap(opt.init)(params)), n)

    def matmul_rate(a, b, repeats):
        mm = jax.jit(lambda a, b: jnp.matmul(a, b))
        jax.block_until_ready(mm(a, b))
        t = time.perf_counter()
        for _ in range(repeats):
            out = mm(a, b)
        jax.block_until_ready(out)
        return 2 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.size // (a.shape[-2] * a.shape[-1])) * repeats / (time.perf_counter() - t) / 1e9

    big = jax.random.normal(jax.random.PRNGKey(2), (2048, 2048), jnp.float32)
    dense_gflops = max(matmul_rate(big, big, 10) for _ in range(3))
    small_a = jax.random.normal(jax.random.PRNGKey(3), (seeds, c.batch_size, c.hidden[0]), jnp.float32)
    small_b = jax.random.normal(jax.random.PRNGKey(4), (seeds, c.hidden[0], c.hidden[1]), jnp.float32)
    layer_gflops = max(matmul_rate(small_a, small_b, 2000) for _ in range(3))
    macs = seeds * c.batch_size * sum(a * b for a, b in zip((4,) + c.hidden, c.hidden + (env.num_actions,)))
    flops = 2 * macs * 4  # forward, backward (2x), the target's forward
    data = {
        "meta": common.machine(), "seeds": seeds, "updates": n, "update_ms": whole * 1e3, "gradient_step_ms": grad_only * 1e3,
        "gradient_share": grad_only / whole, "gradient_step_gflop": flops / 1e9, "gradient_step_gflops_per_s": flops / grad_only / 1e9,
        "env_steps_per_second": seeds * algo.steps_per_update / whole,
        "dense_matmul_gflops_per_s": dense_gflops, "layer_matmul_gflops_per_s": layer_gflops,
        "command": "python -m benchmarks.dqn_update_cost" + (f" --seeds {seeds}" if seeds != 10 else "") + (f" --updates {n}" if n != 2000 else ""),
    }
    # the reference run (500k env steps per seed, gradient steps from step 10k, one per 10 steps) at the dense rate
    starts = algos.make("dqn", env, preset="reference").config.learning_starts  # the reference's 10,000 (this run's algo starts at 0)
    run_gflop = flops * (500_000 - starts) / c.train_every / 1e9
    floor_seconds = run_gflop / dense_gflops
    data.update(reference_run_gflop=run_gflop, reference_run_floor_seconds=floor_seconds,
                reference_run_ceiling_steps_per_second=seeds * 500_000 / floor_seconds,
                reference_run_layer_rate_seconds=run_gflop / layer_gflops)
    md = "\n".join([
        "# DQN on CartPole: one update against its gradient step alone", "",
        f"Command: `{data['command']}` ({seeds} seeds vmapped, CleanRL's settings, {n} updates timed after as many to warm up; "
        f"{data['meta'].get('machine', '')}, load {data['meta'].get('load_average_1min', 0):.2f}).", "",
        common.markdown_table(["", "ms per update of all seeds", "share"], [
            ["whole update (10 env steps per seed, replay write, 1 gradient step)", f"{whole * 1e3:.3f}", "1.00"],
            ["gradient step alone (batch 128, 120-84, target forward, Adam)", f"{grad_only * 1e3:.3f}", f"{grad_only / whole:.2f}"],
        ]), "",
        f"The gradient step is {flops / 1e9:.3f} GFLOP for the {seeds} seeds, {data['gradient_step_gflops_per_s']:.1f} GFLOP/s; the whole "
        f"update runs {data['env_steps_per_second']:,.0f} env steps/s over the seeds.", "",
        f"The CPU's ceiling, measured here: XLA runs one dense 2048^3 float32 matmul at {dense_gflops:.1f} GFLOP/s and the "
        f"gradient step's 128 x 120 x 84 layer matmul ({seeds} seeds vmapped) at {layer_gflops:.1f} GFLOP/s. The reference run's "
        f"gradient steps (500,000 env steps per seed, one per {c.train_every} steps from step {starts:,}) are "
        f"{run_gflop:,.0f} GFLOP for {seeds} seeds: at least {floor_seconds:.0f} s even at the dense rate, so no loop on this "
        f"CPU runs them faster than {data['reference_run_ceiling_steps_per_second']:,.0f} env steps/s (all seeds), before "
        "environment steps, replay, acting and compilation. At the rate XLA reaches on the layer's own shapes they take at "
        f"least {run_gflop / layer_gflops:.0f} s ({seeds * 500_000 / (run_gflop / layer_gflops):,.0f} env steps/s at most).", "",
    ])
    json_path, _ = common.write_results("dqn_update_cost", data, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
