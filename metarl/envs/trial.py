"""The trial (meta-episode): n episodes of one task, auto-reset between episodes.

One implementation used by every family. The task is part of the trial's state and is kept until
the trial ends; with `resample=True` a finished trial starts a new one on a freshly sampled task
(what training loops that do not align rollouts to trials want), otherwise the trial stays
finished and its steps are marked invalid (what the evaluator wants: it scans a fixed number of
steps, `num_steps`, and a family whose episodes can end early finishes before that).

What an in-context agent reads at each step is a `TimeStep`: the observation, the previous action
and reward, whether the previous step ended an episode, the episode index and the step index
within the episode.
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
    prev_action: jax.Array  #: int32, the action taken at the previous step; -1 at trial start
    prev_reward: jax.Array  #: float32, the reward of the previous step; 0 at trial start
    done: jax.Array  #: bool, the previous step ended an episode (so `obs` is a reset observation)
    episode_index: jax.Array  #: int32, index in [0, episodes) of the episode `obs` belongs to
    step_index: jax.Array  #: int32, steps taken so far in the current episode
    first: jax.Array  #: bool, true only at the first step of a trial
    #: observation the previous action led to (before auto-reset); equals `obs` unless `done`.
    #: Model-based baselines read it to count the last transition of an episode.
    outcome_obs: jax.Array


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

    def __post_init__(self):
        check_int("Trial", "episodes", self.episodes, low=1)

    @property
    def num_steps(self) -> int:
        """Steps a scan must take to cover a whole trial (exact for fixed-horizon families)."""
        return self.episodes * self.env.max_steps_in_episode

    def _first_timestep(self, obs: jax.Array) -> TimeStep:
        return TimeStep(
            obs=obs,
            prev_action=jnp.int32(-1),
            prev_reward=jnp.float32(0.0),
            done=jnp.bool_(False),
            episode_index=jnp.int32(0),
            step_index=jnp.int32(0),
            first=jnp.bool_(True),
            outcome_obs=obs,
        )

    def reset(self, key: jax.Array, task: Any = None) -> tuple[TimeStep, TrialState]:
        """Start a trial on `task` (sampled from the family when None)."""
        key_task, key_reset = jax.random.split(key)
        if task is None:
            task = self.env.sample_task(key_task)
        obs, env_state = self.env.reset(key_reset, task)
        timestep = self._first_timestep(obs)
        state = TrialState(task, env_state, timestep, jnp.bool_(False), jnp.int32(0))
        return timestep, state

    def step(
        self, key: jax.Array, state: TrialState, action: jax.Array
    ) -> tuple[TimeStep, TrialState, jax.Array, dict]:
        """Take `action`. Returns the next timestep, state, the reward of this step and an info
        dict with `valid` (this step belongs to the trial; false after it finished),
        `episode_index` (the episode this step belongs to) and `trial_done`."""
        key_step, key_reset, key_new = jax.random.split(key, 3)
        action = jnp.asarray(action, jnp.int32)
        ts = state.timestep
        obs, env_state, reward, done, info = self.env.step(key_step, state.env_state, action, state.task)
        reward = jnp.asarray(reward, jnp.float32)
        done = jnp.asarray(done, jnp.bool_)
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
        )
        next_state = TrialState(state.task, next_env_state, next_ts, state.finished | trial_done, state.trial_index)
        if self.resample:
            # A new trial on a new task; the agent sees `first=True` and resets its memory.
            new_ts, new_state = self.reset(key_new)
            new_state = new_state.replace(trial_index=state.trial_index + 1)
            next_ts, next_state = jax.tree.map(
                lambda x, y: jnp.where(trial_done, x, y), (new_ts, new_state), (next_ts, next_state)
            )
        info = {"valid": valid, "episode_index": ts.episode_index, "trial_done": trial_done, **info}
        return next_ts, next_state, reward, info
