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


@functools.partial(jax.jit, static_argnames=("agent", "trial"))
def _evaluate_keys(agent: Agent, trial: Trial, agent_params: Any, tasks: Any, keys: jax.Array) -> jax.Array:
    if agent.privileged:
        return jax.vmap(lambda task, k: run_trial(agent, task, trial, task, k))(tasks, keys)
    return jax.vmap(lambda task, k: run_trial(agent, agent_params, trial, task, k))(tasks, keys)
