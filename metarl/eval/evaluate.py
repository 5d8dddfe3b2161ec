"""The evaluation protocol: run an agent on a batch of tasks, one trial each, all in one jit.

`evaluate(agent, agent_params, env, tasks, episodes, key)` -> returns[task, episode] (float32),
the total reward of every episode of every trial. Tasks are never seen in training; the same
tasks and key give every agent the same environments (up to the agents' own randomness).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metarl.agents import Agent
from metarl.envs.base import Environment
from metarl.envs.trial import Trial
from metarl.errors import ConfigError, check_int


def run_trial(agent: Agent, agent_params: Any, trial: Trial, task: Any, key: jax.Array) -> jax.Array:
    """One trial of `agent` on `task`; returns [episodes] float32 per-episode returns."""
    key_reset, key_init, key_loop = jax.random.split(key, 3)
    timestep, state = trial.reset(key_reset, task)
    carry = agent.init(key_init)

    def body(loop, key_t):
        timestep, state, carry, returns = loop
        key_act, key_env = jax.random.split(key_t)
        action, carry = agent.act(agent_params, carry, timestep, key_act)
        timestep, state, reward, info = trial.step(key_env, state, action)
        credit = jax.nn.one_hot(info["episode_index"], trial.episodes, dtype=jnp.float32)
        returns = returns + jnp.where(info["valid"], reward, 0.0) * credit
        return (timestep, state, carry, returns), None

    init = (timestep, state, carry, jnp.zeros((trial.episodes,), jnp.float32))
    (_, _, _, returns), _ = jax.lax.scan(body, init, jax.random.split(key_loop, trial.num_steps))
    return returns


def evaluate(
    agent: Agent,
    agent_params: Any,
    env: Environment,
    tasks: Any,
    episodes: int,
    key: jax.Array,
    batch_size: int | None = None,
) -> np.ndarray:
    """Score `agent` on every task in `tasks` (a params pytree stacked on axis 0).

    Returns a numpy array [num_tasks, episodes] of per-episode returns. `batch_size` bounds how
    many trials run at once (memory); results do not depend on it."""
    check_int("evaluate", "episodes", episodes, low=1)
    leaves = jax.tree.leaves(tasks)
    if not leaves:
        raise ConfigError("evaluate: tasks is empty")
    num = leaves[0].shape[0]
    if any(leaf.shape[:1] != (num,) for leaf in leaves):
        raise ConfigError("evaluate: every leaf of tasks must have the same leading (task) axis")
    if agent.env != env:
        raise ConfigError(f"evaluate: agent was built for {agent.env.describe()} but env is {env.describe()}")
    trial = Trial(env, episodes)
    keys = jax.random.split(key, num)  # one key per task, so batching does not change results
    batch_size = num if batch_size is None else max(1, min(batch_size, num))
    outs = []
    for start in range(0, num, batch_size):
        sl = slice(start, start + batch_size)
        batch = jax.tree.map(lambda x: x[sl], tasks)
        outs.append(np.asarray(_evaluate_keys(agent, trial, agent_params, batch, keys[sl])))
    return np.concatenate(outs, axis=0)


def run_trials_lockstep(agent: Agent, agent_params: Any, trial: Trial, tasks: Any, keys: jax.Array) -> jax.Array:
    """`vmap(run_trial)` over tasks for a fixed-horizon family, with the time loop outside the vmap.

    Every trial of a fixed-horizon family is at the same episode and step index at the same time,
    so the evaluator passes those indices (and `first`) unbatched: an agent's `lax.cond` on
    `timestep.step_index == 0` (re-plan at an episode's start) stays a real branch instead of
    becoming a select that computes the plan at every step. Uses the same keys as `run_trial`, so
    the returns are identical. Returns [tasks, episodes] float32."""
    horizon = trial.env.max_steps_in_episode
    per_task = jax.vmap(lambda k: jax.random.split(k, 3))(keys)  # [T, 3, 2]
    timestep, state = jax.vmap(trial.reset)(per_task[:, 0], tasks)
    carry = jax.vmap(agent.init)(per_task[:, 1])
    step_keys = jax.vmap(lambda k: jax.random.split(k, trial.num_steps))(per_task[:, 2])  # [T, steps, 2]
    params_axis = 0 if agent.privileged else None
    params = tasks if agent.privileged else agent_params
    shared = ("episode_index", "step_index", "first")
    ts_axes = timestep.replace(**{f: (None if f in shared else 0) for f in timestep.__dataclass_fields__})

    def act_and_step(params, carry, timestep, state, key_t):
        key_act, key_env = jax.random.split(key_t)
        action, carry = agent.act(params, carry, timestep, key_act)
        timestep, state, reward, info = trial.step(key_env, state, action)
        return carry, timestep, state, jnp.where(info["valid"], reward, 0.0)

    batched = jax.vmap(act_and_step, in_axes=(params_axis, 0, ts_axes, 0, 0))

    def body(loop, xs):
        timestep, state, carry, returns = loop
        t, keys_t = xs
        timestep = timestep.replace(episode_index=t // horizon, step_index=t % horizon, first=t == 0)
        carry, timestep, state, reward = batched(params, carry, timestep, state, keys_t)
        returns = returns + reward[:, None] * jax.nn.one_hot(t // horizon, trial.episodes, dtype=jnp.float32)
        return (timestep, state, carry, returns), None

    num = keys.shape[0]
    init = (timestep, state, carry, jnp.zeros((num, trial.episodes), jnp.float32))
    xs = (jnp.arange(trial.num_steps, dtype=jnp.int32), jnp.swapaxes(step_keys, 0, 1))
    (_, _, _, returns), _ = jax.lax.scan(body, init, xs)
    return returns


@functools.partial(jax.jit, static_argnames=("agent", "trial"))
def _evaluate_keys(agent: Agent, trial: Trial, agent_params: Any, tasks: Any, keys: jax.Array) -> jax.Array:
    if trial.env.fixed_horizon:
        return run_trials_lockstep(agent, agent_params, trial, tasks, keys)
    if agent.privileged:
        return jax.vmap(lambda task, k: run_trial(agent, task, trial, task, k))(tasks, keys)
    return jax.vmap(lambda task, k: run_trial(agent, agent_params, trial, task, k))(tasks, keys)
