"""Where DQN's time goes on CartPole (CleanRL's settings, 10 seeds vmapped): one whole update (10 env
steps of each seed, the replay write and one gradient step) beside one gradient step alone (batch
128 through the 120-84 Q-network, its backward pass, the target network's forward and Adam), both
jitted and looped on the device, timed in the same process.

    python -m benchmarks.dqn_update_cost [--seeds 10] [--updates 2000]

If the gradient step alone takes most of the update's time, the loop is bound by the network's
arithmetic on this CPU, not by environment stepping or dispatch: a faster loop then needs fewer
FLOPs per step (a smaller batch or network), which the reference setting fixes.
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
    macs = seeds * c.batch_size * sum(a * b for a, b in zip((4,) + c.hidden, c.hidden + (env.num_actions,)))
    flops = 2 * macs * 4  # forward, backward (2x), the target's forward
    data = {
        "meta": common.machine(), "seeds": seeds, "updates": n, "update_ms": whole * 1e3, "gradient_step_ms": grad_only * 1e3,
        "gradient_share": grad_only / whole, "gradient_step_gflop": flops / 1e9, "gradient_step_gflops_per_s": flops / grad_only / 1e9,
        "env_steps_per_second": seeds * algo.steps_per_update / whole,
        "command": "python -m benchmarks.dqn_update_cost" + (f" --seeds {seeds}" if seeds != 10 else "") + (f" --updates {n}" if n != 2000 else ""),
    }
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
    ])
    json_path, _ = common.write_results("dqn_update_cost", data, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
