"""The trial's cost against the bare environment: steps/s of random actions on every registered
family, (a) the vmapped `env.step` alone in a scan (no resets, the state carried), (b) the same
steps through `Trial` and `metarl.rollout.rollout` (auto-reset, trial bookkeeping), (c) through a
resampling `Trial` on a pool of tasks (a new task at every trial's end), (d) a resampling `Trial`
without a pool (a task sampled at every step, kept when a trial starts: the old behaviour; timed
over 20 steps, once) and,
for the bandit, (e) gymnax's own BernoulliBandit stepping (its `step` with auto-reset). Tasks
and pools are sampled before the clock starts (sampling is the family's cost, not the trial's;
one pool per rollout holds `steps / trial length + 2` tasks per stream).

    python -m benchmarks.trial_speed [--trials 4096] [--steps 200] [--repeats 5]

Writes benchmarks/results/trial_speed.{json,md}. Each figure is the best of `--repeats` timed runs
after one compile-and-warm-up run.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp

import metarl
from benchmarks.common import machine, markdown_table, write_results
from metarl.envs import Trial
from metarl.rollout import rollout

SAMPLING_STEPS = 20  #: steps the "sampling every step" variant is timed over (best of 1)
FAMILIES = {  # family -> options (the defaults, the settings the issue measured)
    "bandit": {},
    "fixed-arm-bandit": {},
    "tabular-mdp": {},
    "dark-treasure-room": {},
    "ray-maze": {},
}


def _random_actions(env, key, shape):
    if env.discrete:
        return jax.random.randint(key, shape, 0, env.num_actions, jnp.int32)
    space = env.action_space()
    return jax.random.uniform(key, shape + env.action_shape, jnp.float32, space.low, space.high)


def _tasks(env, trials, steps, trial):
    """The tasks (one per trial) and the pool ([trials, K, ...]) the timed functions run on."""
    per_stream = steps // trial.num_steps + 2  # tasks a stream can start within `steps`
    tasks = env.sample_tasks(jax.random.PRNGKey(100), trials)
    flat = env.sample_tasks(jax.random.PRNGKey(101), trials * per_stream)
    pool = jax.tree.map(lambda x: x.reshape((trials, per_stream) + x.shape[1:]), flat)
    return tasks, pool


def _trial(env, steps, resample):
    return Trial(env, episodes=max(1, math.ceil(steps / env.max_steps_in_episode) // 4), resample=resample)


def bare(env, trials, steps):
    def run(key, tasks):
        key_reset, key_steps = jax.random.split(key)
        _, state = jax.vmap(env.reset)(jax.random.split(key_reset, trials), tasks)

        def body(state, key_t):
            key_a, key_e = jax.random.split(key_t)
            action = _random_actions(env, key_a, (trials,))
            _, state, reward, _, _, _ = jax.vmap(env.step)(jax.random.split(key_e, trials), state, action, tasks)
            return state, reward.sum()

        return jax.lax.scan(body, state, jax.random.split(key_steps, steps))[1].sum()

    return jax.jit(run)


def through_trial(env, trials, steps, mode):
    """mode: "plain", "pool" (resampling on a pool) or "sample" (resampling, sampled every step)."""
    trial = _trial(env, steps, resample=mode != "plain")

    def run(key, tasks, pool):
        key_reset, key_steps = jax.random.split(key)
        keys = jax.random.split(key_reset, trials)
        if mode == "pool":
            timestep, state = jax.vmap(lambda k, p: trial.reset(k, pool=p))(keys, pool)
        else:
            timestep, state = jax.vmap(trial.reset)(keys, tasks)

        def policy(carry, ts, key, t):
            return _random_actions(env, key, (trials,)), carry, None

        def add(acc, s):
            return acc + jnp.where(s.info["valid"], s.reward, 0.0).sum()

        (_, _, _, total), _ = rollout(
            trial, policy, None, timestep, state, jax.random.split(key_steps, steps), batch=True, record=None, reduce=add,
            acc=jnp.float32(0.0), pool=pool if mode == "pool" else None,
        )
        return total

    return jax.jit(run)


def gymnax_bandit(trials, steps):
    import gymnax

    env, params = gymnax.make("BernoulliBandit-misc")

    def run(key, *_):
        key_reset, key_steps = jax.random.split(key)
        _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, trials), params)

        def body(state, key_t):
            key_a, key_e = jax.random.split(key_t)
            action = jax.random.randint(key_a, (trials,), 0, 2)
            _, state, reward, _, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(jax.random.split(key_e, trials), state, action, params)
            return state, reward.sum()

        return jax.lax.scan(body, state, jax.random.split(key_steps, steps))[1].sum()

    return jax.jit(run)


def best_seconds(fn, repeats, *args):
    jax.block_until_ready(fn(jax.random.PRNGKey(0), *args))
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(jax.random.PRNGKey(i + 1), *args))
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows, data = [], {"trials": args.trials, "steps": args.steps, "repeats": args.repeats, "families": {}}
    for name in args.families.split(","):
        env = metarl.make(name, **FAMILIES[name])
        total = args.trials * args.steps
        tasks, pool = _tasks(env, args.trials, args.steps, _trial(env, args.steps, True))
        timed = lambda fn, *a: total / best_seconds(fn, args.repeats, *a)  # noqa: E731
        entry = {
            "bare": timed(bare(env, args.trials, args.steps), tasks),
            "trial": timed(through_trial(env, args.trials, args.steps, "plain"), tasks, pool),
            "trial_resample_pool": timed(through_trial(env, args.trials, args.steps, "pool"), tasks, pool),
            # the old behaviour is slow enough (a task sampled per step) that 20 steps measure it
            "trial_resample_sampling": args.trials * SAMPLING_STEPS
            / best_seconds(through_trial(env, args.trials, SAMPLING_STEPS, "sample"), 1, tasks, pool),
        }
        if name == "bandit":
            entry["gymnax_bernoulli_bandit"] = timed(gymnax_bandit(args.trials, args.steps))
        data["families"][name] = entry
        ratio = lambda k: f"{entry['bare'] / entry[k]:.2f}x"  # noqa: E731
        gym = f"{entry['gymnax_bernoulli_bandit']:,.0f}" if "gymnax_bernoulli_bandit" in entry else ""
        rows.append([name, f"{entry['bare']:,.0f}", f"{entry['trial']:,.0f} ({ratio('trial')})",
                     f"{entry['trial_resample_pool']:,.0f} ({ratio('trial_resample_pool')})",
                     f"{entry['trial_resample_sampling']:,.0f} ({ratio('trial_resample_sampling')})", gym])
        print(rows[-1], flush=True)
    data["meta"] = machine()
    command = "python -m benchmarks.trial_speed " + " ".join(argv or [])
    data["command"] = command.strip()
    md = (
        "# The trial's cost against the bare environment\n\n"
        f"Random actions, {args.trials} trials x {args.steps} steps, best of {args.repeats} runs, steps/s "
        "(in brackets: how many times slower than the bare vmapped `env.step`).\n\n"
        + markdown_table(["family", "bare env.step", "Trial + rollout", "Trial(resample) on a pool",
                          "Trial(resample), sampling every step", "gymnax BernoulliBandit"], rows)
        + f"\nCommand: `{data['command']}`. Machine: {data['meta']['machine']}, jax {data['meta']['jax']}, "
        f"load average {data['meta']['load_average_1min']}.\n"
    )
    if not args.no_write:
        write_results("trial_speed", data, md)
    print(md)


if __name__ == "__main__":
    main()
