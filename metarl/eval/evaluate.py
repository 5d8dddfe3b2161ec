"""The evaluation protocol: run an agent on a batch of tasks, one trial each, all in one jit.

`evaluate(agent, agent_params, env, tasks, episodes, key)` -> returns[task, episode] (float32),
the total reward of every episode of every trial. Tasks are never seen in training; the same
tasks and key give every agent the same environments (up to the agents' own randomness). Both
paths below are `metarl.rollout.rollout` with the agent's `act` as the policy.

An agent with `reads_context = True` (an explicit-context policy) is shown its task's
`env.context(task)` in every `TimeStep.context`; only a `privileged` agent (the Oracle) is given
the whole task.
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
from metarl.rollout import rollout


def _agent_policy(agent: Agent, params: Any):
    return lambda carry, timestep, key, t: (*agent.act(params, carry, timestep, key), None)


def run_trial(agent: Agent, agent_params: Any, trial: Trial, task: Any, key: jax.Array) -> jax.Array:
    """One trial of `agent` on `task`; returns [episodes] float32 per-episode returns."""
    key_reset, key_init, key_loop = jax.random.split(key, 3)
    timestep, state = trial.reset(key_reset, task)
    carry = agent.init(key_init)

    def add_return(returns, step):
        credit = jax.nn.one_hot(step.info["episode_index"], trial.episodes, dtype=jnp.float32)
        return returns + jnp.where(step.info["valid"], step.reward, 0.0) * credit

    keys = jax.random.split(key_loop, trial.num_steps)
    zeros = jnp.zeros((trial.episodes,), jnp.float32)
    (_, _, _, returns), _ = rollout(
        trial, _agent_policy(agent, agent_params), carry, timestep, state, keys, record=None, reduce=add_return, acc=zeros
    )
    return returns


def check_key(owner: str, key: Any) -> jax.Array:
    """A PRNG key (`jax.random.PRNGKey(seed)` or `jax.random.key(seed)`), or a ConfigError."""
    if isinstance(key, (int, np.integer)) or not hasattr(key, "dtype"):
        raise ConfigError(f"{owner}: key must be a JAX PRNG key such as jax.random.PRNGKey(0), got {type(key).__name__} {key!r}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ConfigError(f"{owner}: key must be one PRNG key, got a batch of shape {key.shape}")
        return key
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise ConfigError(
            f"{owner}: key must be a JAX PRNG key such as jax.random.PRNGKey(0) (uint32 [2]), got {key.dtype} {tuple(key.shape)}"
        )
    return key


def check_agent(owner: str, agent: Agent, env: Environment, episodes: int) -> None:
    """The agent was built for this family and this number of episodes."""
    if agent.env != env:
        raise ConfigError(f"{owner}: agent was built for {agent.env.describe()} but env is {env.describe()}")
    if agent.episodes != episodes:
        raise ConfigError(
            f"{owner}: agent was built for trials of {agent.episodes} episodes but the evaluation has {episodes}; "
            "build the agent (or train the algorithm) with the same number of episodes"
        )


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
    many trials run at once (memory); results do not depend on it. Raises ConfigError for tasks
    that are not this family's, an agent built for another family or number of episodes, or a key
    that is not a PRNG key."""
    check_int("evaluate", "episodes", episodes, low=1)
    if batch_size is not None:
        check_int("evaluate", "batch_size", batch_size, low=1)
    check_agent("evaluate", agent, env, episodes)
    num = env.check_tasks(tasks, "evaluate")
    key = check_key("evaluate", key)
    trial = Trial(env, episodes, expose_context=agent.reads_context)
    keys = jax.random.split(key, num)  # one key per task, so batching does not change results
    batch_size = num if batch_size is None else min(batch_size, num)
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
    act = jax.vmap(agent.act, in_axes=(params_axis, 0, ts_axes, 0))

    def policy(carry, timestep, key, t):
        timestep = timestep.replace(episode_index=t // horizon, step_index=t % horizon, first=t == 0)
        action, carry = act(params, carry, timestep, key)
        return action, carry, None

    def add_return(returns, step):
        reward = jnp.where(step.info["valid"], step.reward, 0.0)
        return returns + reward[:, None] * jax.nn.one_hot(step.t // horizon, trial.episodes, dtype=jnp.float32)

    zeros = jnp.zeros((keys.shape[0], trial.episodes), jnp.float32)
    (_, _, _, returns), _ = rollout(
        trial, policy, carry, timestep, state, jnp.swapaxes(step_keys, 0, 1), batch=True, record=None, reduce=add_return, acc=zeros
    )
    return returns


@functools.partial(jax.jit, static_argnames=("agent", "trial"))
def _evaluate_keys(agent: Agent, trial: Trial, agent_params: Any, tasks: Any, keys: jax.Array) -> jax.Array:
    if trial.env.fixed_horizon:
        return run_trials_lockstep(agent, agent_params, trial, tasks, keys)
    if agent.privileged:
        return jax.vmap(lambda task, k: run_trial(agent, task, trial, task, k))(tasks, keys)
    return jax.vmap(lambda task, k: run_trial(agent, agent_params, trial, task, k))(tasks, keys)
