"""The trial (meta-episode): n episodes of one task, auto-reset between episodes.

One implementation used by every family and every collection (through `metarl.rollout`). The task
is part of the trial's state and is kept until the trial ends; with `resample=True` a finished
trial starts a new one on another task (what training loops that do not align rollouts to trials
want), otherwise the trial stays finished and its steps are marked invalid (what the evaluator
wants: it scans a fixed number of steps, `num_steps`, and a family whose episodes can end early
finishes before that). A resampling trial can run on a *pool* of tasks the caller sampled once
(`reset(key, pool=tasks)` and `step(..., pool=tasks)`, e.g. once per update): trial k of the stream
is on `pool[k % K]`, and the state holds only that index, so starting a trial copies no task;
without a pool it samples a task at every step and keeps it only if a trial starts (correct, but
each step costs the family's `sample_task` and a select over the whole task).

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
    task: Any  #: the task's params pytree, kept for the whole trial (None on a pool: pool[trial_index % K])
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

    def reset(self, key: jax.Array, task: Any = None, pool: Any = None) -> tuple[TimeStep, TrialState]:
        """Start a trial on `task` (sampled from the family when None), or on `pool[0]` when a
        pool is given (then pass the same pool to every `step`)."""
        key_task, key_reset = jax.random.split(key)
        if pool is not None:
            obs, env_state = self.env.reset(key_reset, _pick(pool, jnp.int32(0)))
            timestep = self._first_timestep(obs, _pick(pool, jnp.int32(0)))
            return timestep, TrialState(None, env_state, timestep, jnp.bool_(False), jnp.int32(0))
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

        `pool`: the tasks (stacked on axis 0, K of them) a trial started with `reset(..., pool=)`
        runs on, trial k on `pool[k % K]`."""
        # The family's step gets `key` itself; the resets' keys are derived from it (a family whose
        # reset ignores its key, e.g. a bandit, pays nothing for them: XLA drops unused keys).
        key_step, key_reset, key_new = key, jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
        action = jnp.asarray(action, self.env.action_dtype).reshape(self.env.action_shape)
        ts = state.timestep
        if state.task is None and pool is None:
            raise ValueError("this trial was started on a pool: pass the same pool to Trial.step")
        task = state.task if state.task is not None else _pick(pool, state.trial_index)
        obs, env_state, reward, terminated, truncated, info = self.env.step(key_step, state.env_state, action, task)
        reward = jnp.asarray(reward, jnp.float32)
        terminated = jnp.asarray(terminated, jnp.bool_)
        truncated = jnp.asarray(truncated, jnp.bool_) & ~terminated
        done = terminated | truncated
        valid = ~state.finished
        trial_done = done & (ts.episode_index + 1 >= self.episodes) & valid

        reset_obs, reset_env_state = self.env.reset_episode(key_reset, task, ts.episode_index + 1)
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
        if self.resample and state.task is None:
            # The next trial on the pool's next task: only the index, the env state and the
            # timestep change (the agent sees `first=True` and resets its memory).
            index = state.trial_index + trial_done.astype(jnp.int32)
            new_task = _pick(pool, index)
            first_obs, first_env_state = self.env.reset(key_new, new_task)
            # outcome_obs stays what the last action led to: a learner bootstrapping through a
            # truncation at the trial's end must see the state the episode was cut in
            first_ts = self._first_timestep(first_obs, new_task).replace(outcome_obs=obs)
            pick_new = lambda a, b: jax.tree.map(lambda x, y: jnp.where(trial_done, x, y), a, b)  # noqa: E731
            next_ts = pick_new(first_ts, next_ts)
            next_state = TrialState(None, pick_new(first_env_state, next_env_state), next_ts, jnp.bool_(False), index)
        elif self.resample:
            # A new trial on a new task; the agent sees `first=True` and resets its memory.
            new_ts, new_state = self.reset(key_new)
            new_ts = new_ts.replace(outcome_obs=obs)  # as above: what the last action led to
            new_state = new_state.replace(trial_index=state.trial_index + 1, timestep=new_ts)
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


def _pick(pool: Any, index: jax.Array) -> Any:
    """Task `index % K` of a pool of K tasks stacked on axis 0."""
    size = jax.tree.leaves(pool)[0].shape[0]
    return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, index % size, keepdims=False), pool)
