"""The trial (meta-episode): n episodes of one task, auto-reset between episodes.

One implementation used by every family and every collection (through `metarl.rollout`). The task
is part of the trial's state and is kept until the trial ends; with `resample=True` a finished
trial starts a new one on another task (what training loops that do not align rollouts to trials
want), otherwise the trial stays finished and its steps are marked invalid (what the evaluator
wants: it scans a fixed number of steps, `num_steps`, and a family whose episodes can end early
finishes before that). A resampling trial takes its next task from a *pool* the caller sampled
once (`step(..., pool=tasks)`, e.g. once per update), so no task is sampled at a step that does
not start a trial; without a pool it samples one at every step and keeps it only if a trial
starts (correct, but the sampling costs as much as the family's `sample_task`).

What an in-context agent reads at each step is a `TimeStep`: the observation, the previous action
and reward, whether the previous step ended an episode, the episode index and the step index
within the episode, and (only with `expose_context=True`, for agents allowed to read it) the
task's context vector.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from metarl.envs.base import Environment
from metarl.errors import check_int


@struct.dataclass
class TimeStep:
    """What an agent sees before acting. Shapes are per trial (vmap adds a leading axis)."""

    obs: jax.Array  #: observation of the current state, `env.obs_shape`
    #: the action taken at the previous step, in the action space's dtype and shape (int32 scalar
    #: for Discrete, float32 vector for Box); zeros where there is none (`first`, see `has_prev_action`)
    prev_action: jax.Array
    prev_reward: jax.Array  #: float32, the reward of the previous step; 0 at trial start
    done: jax.Array  #: bool, the previous step ended an episode (so `obs` is a reset observation)
    episode_index: jax.Array  #: int32, index in [0, episodes) of the episode `obs` belongs to
    step_index: jax.Array  #: int32, steps taken so far in the current episode
    first: jax.Array  #: bool, true only at the first step of a trial: there is no previous action
    #: observation the previous action led to (before auto-reset); equals `obs` unless `done`.
    #: Model-based baselines read it to count the last transition of an episode.
    outcome_obs: jax.Array
    #: float32 [context_size], the task's `env.context(task)` with `Trial(expose_context=True)`;
    #: [0] (nothing) otherwise
    context: jax.Array

    @property
    def has_prev_action(self) -> jax.Array:
        """bool: `prev_action` holds an action (false at a trial's first step)."""
        return ~self.first


def prev_action_features(timestep: TimeStep, env: Environment) -> jax.Array:
    """The previous action as features [*batch, env.action_size] float32: one-hot for Discrete,
    the raw vector for Box; zeros where there is no previous action (a trial's first step)."""
    present = timestep.has_prev_action.astype(jnp.float32)[..., None]
    if env.discrete:
        return jax.nn.one_hot(timestep.prev_action, env.num_actions, dtype=jnp.float32) * present
    batch = timestep.prev_reward.shape
    return timestep.prev_action.reshape(batch + (-1,)).astype(jnp.float32) * present


@struct.dataclass
class TrialState:
    task: Any  #: the task's params pytree, kept for the whole trial
    env_state: Any
    timestep: TimeStep
    finished: jax.Array  #: bool, all episodes of this trial are done (only if resample=False)
    trial_index: jax.Array  #: int32, trials started so far in this stream (0 for the first)


@dataclasses.dataclass(frozen=True)
class Trial:
    """n episodes of one task. `Trial(env, episodes)`; all methods are pure and jittable."""

    env: Environment
    episodes: int
    resample: bool = False
    expose_context: bool = False  #: put `env.context(task)` in every TimeStep (agents allowed to read it)

    def __post_init__(self):
        check_int("Trial", "episodes", self.episodes, low=1)

    @property
    def num_steps(self) -> int:
        """Steps a scan must take to cover a whole trial (exact for fixed-horizon families)."""
        return self.episodes * self.env.max_steps_in_episode

    def _context(self, task: Any) -> jax.Array:
        return self.env.context(task) if self.expose_context else jnp.zeros((0,), jnp.float32)

    def _first_timestep(self, obs: jax.Array, task: Any) -> TimeStep:
        shape, dtype = self.env.action_shape, self.env.action_dtype
        return TimeStep(
            obs=obs,
            prev_action=jnp.zeros(shape, dtype),
            prev_reward=jnp.float32(0.0),
            done=jnp.bool_(False),
            episode_index=jnp.int32(0),
            step_index=jnp.int32(0),
            first=jnp.bool_(True),
            outcome_obs=obs,
            context=self._context(task),
        )

    def reset(self, key: jax.Array, task: Any = None) -> tuple[TimeStep, TrialState]:
        """Start a trial on `task` (sampled from the family when None)."""
        key_task, key_reset = jax.random.split(key)
        if task is None:
            task = self.env.sample_task(key_task)
        obs, env_state = self.env.reset(key_reset, task)
        timestep = self._first_timestep(obs, task)
        state = TrialState(task, env_state, timestep, jnp.bool_(False), jnp.int32(0))
        return timestep, state

    def step(
        self, key: jax.Array, state: TrialState, action: jax.Array, pool: Any = None
    ) -> tuple[TimeStep, TrialState, jax.Array, dict]:
        """Take `action`. Returns the next timestep, state, the reward of this step and an info
        dict with `valid` (this step belongs to the trial; false after it finished),
        `episode_index` (the episode this step belongs to), `terminated` and `truncated` (this
        step ended its episode by termination / by a time limit) and `trial_done`.

        With `resample=True`, `pool` (tasks stacked on axis 0, K of them) gives the task of the
        next trial of this stream: `pool[(trial_index + 1) % K]`; None samples one."""
        key_step, key_reset, key_new = jax.random.split(key, 3)
        action = jnp.asarray(action, self.env.action_dtype).reshape(self.env.action_shape)
        ts = state.timestep
        obs, env_state, reward, terminated, truncated, info = self.env.step(key_step, state.env_state, action, state.task)
        reward = jnp.asarray(reward, jnp.float32)
        terminated = jnp.asarray(terminated, jnp.bool_)
        truncated = jnp.asarray(truncated, jnp.bool_) & ~terminated
        done = terminated | truncated
        valid = ~state.finished
        trial_done = done & (ts.episode_index + 1 >= self.episodes) & valid

        reset_obs, reset_env_state = self.env.reset(key_reset, state.task)
        pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(done, x, y), a, b)  # noqa: E731
        next_obs = pick(reset_obs, obs)
        next_env_state = pick(reset_env_state, env_state)
        next_ts = TimeStep(
            obs=next_obs,
            prev_action=action,
            prev_reward=reward,
            done=done,
            episode_index=ts.episode_index + done.astype(jnp.int32),
            step_index=jnp.where(done, 0, ts.step_index + 1).astype(jnp.int32),
            first=jnp.bool_(False),
            outcome_obs=obs,
            context=ts.context,
        )
        next_state = TrialState(state.task, next_env_state, next_ts, state.finished | trial_done, state.trial_index)
        if self.resample:
            # A new trial on a new task; the agent sees `first=True` and resets its memory.
            task = None
            if pool is not None:
                size = jax.tree.leaves(pool)[0].shape[0]
                index = (state.trial_index + 1) % size
                task = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, index, keepdims=False), pool)
            new_ts, new_state = self.reset(key_new, task)
            new_state = new_state.replace(trial_index=state.trial_index + 1)
            next_ts, next_state = jax.tree.map(
                lambda x, y: jnp.where(trial_done, x, y), (new_ts, new_state), (next_ts, next_state)
            )
        info = {
            "valid": valid,
            "episode_index": ts.episode_index,
            "terminated": terminated & valid,
            "truncated": truncated & valid,
            "trial_done": trial_done,
            **info,
        }
        return next_ts, next_state, reward, info
