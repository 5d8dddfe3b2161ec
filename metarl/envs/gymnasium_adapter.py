"""Gymnasium both ways (the `gymnasium` extra).

- A metarl family as Gymnasium environments: `GymnasiumEnv(env)` is a `gymnasium.Env` whose every
  `reset` samples a new task (or keeps `task`), stepping with the jitted `env.step`;
  `GymnasiumVectorEnv(env, num_envs)` is a `gymnasium.vector.VectorEnv` of `num_envs` such
  environments stepped as one vmapped, jitted call, with same-step auto-reset (a finished
  environment returns its reset observation and puts the last one in `info["final_obs"]`).
- A Gymnasium environment (not jittable) run from the host: `host_trials(agent, agent_params,
  make_env, num_trials, episodes, key)` plays an in-context agent, its `act` jitted, through whole
  trials of `make_env(i)` (one Gymnasium environment per trial: its own task), building the same
  `TimeStep`s as `metarl.envs.Trial`, and returns returns[trial, episode] like `metarl.eval.evaluate`.
  A Python loop over steps, as a non-jittable environment needs.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from metarl.envs.base import Environment, is_discrete
from metarl.envs.trial import TimeStep
from metarl.errors import ConfigError


def _gymnasium():
    try:
        import gymnasium
    except ImportError:
        raise ConfigError("the Gymnasium adapter needs gymnasium: pip install 'metarl[gymnasium]'") from None
    return gymnasium


def to_gymnasium_space(space: Any):
    """A gymnax Discrete/Box space as the Gymnasium one."""
    g = _gymnasium()
    if is_discrete(space):
        return g.spaces.Discrete(int(space.n))
    low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape)
    high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape)
    return g.spaces.Box(low, high, tuple(space.shape), np.float32)


def _env_base():
    return _gymnasium().Env


class GymnasiumEnv(_env_base()):
    """A metarl family as a `gymnasium.Env` (one episode per `reset`, a new task each time
    unless `task` is given)."""

    metadata = {"render_modes": []}

    def __init__(self, env: Environment, task: Any = None, seed: int = 0):
        self.env, self.fixed_task = env, task
        self.action_space = to_gymnasium_space(env.action_space())
        self.observation_space = to_gymnasium_space(env.observation_space())
        self._key = jax.random.PRNGKey(seed)
        self._reset = jax.jit(lambda key, task: env.reset(key, task))
        self._step = jax.jit(env.step)
        self._sample = jax.jit(env.sample_task)
        self._state = self._task = None

    def _next_key(self):
        self._key, key = jax.random.split(self._key)
        return key

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._key = jax.random.PRNGKey(seed)
        self._task = self.fixed_task if self.fixed_task is not None else self._sample(self._next_key())
        obs, self._state = self._reset(self._next_key(), self._task)
        return np.asarray(obs), {}

    def step(self, action):
        if self._state is None:
            raise ConfigError("GymnasiumEnv.step before reset")
        action = np.asarray(action, np.int32 if self.env.discrete else np.float32)
        obs, self._state, reward, terminated, truncated, _ = self._step(self._next_key(), self._state, action, self._task)
        return np.asarray(obs), float(reward), bool(terminated), bool(truncated), {}


def _vector_base():
    return _gymnasium().vector.VectorEnv


class GymnasiumVectorEnv(_vector_base()):
    """`num_envs` environments of a metarl family as one `gymnasium.vector.VectorEnv`: one jitted,
    vmapped step for all; same-step auto-reset onto a new task."""

    def __init__(self, env: Environment, num_envs: int, seed: int = 0):
        g = _gymnasium()
        from gymnasium.vector.utils import batch_space

        if not isinstance(num_envs, int) or num_envs < 1:
            raise ConfigError(f"GymnasiumVectorEnv: num_envs must be a positive integer, got {num_envs!r}")
        self.env, self.num_envs = env, num_envs
        self.single_action_space = to_gymnasium_space(env.action_space())
        self.single_observation_space = to_gymnasium_space(env.observation_space())
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.metadata = {"autoreset_mode": g.vector.AutoresetMode.SAME_STEP}
        self._key = jax.random.PRNGKey(seed)

        def start(key):
            key_task, key_reset = jax.random.split(key)
            task = env.sample_task(key_task)
            obs, state = env.reset(key_reset, task)
            return obs, state, task

        def step(key, state, action, task):
            key_step, key_new = jax.random.split(key)
            obs, state, reward, terminated, truncated, _ = env.step(key_step, state, action, task)
            done = terminated | truncated
            new_obs, new_state, new_task = start(key_new)
            pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(done, x, y), a, b)  # noqa: E731
            return pick(new_obs, obs), pick(new_state, state), pick(new_task, task), reward, terminated, truncated, obs

        self._start = jax.jit(jax.vmap(start))
        self._stepper = jax.jit(jax.vmap(step))
        self._state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._key = jax.random.PRNGKey(seed)
        self._key, key = jax.random.split(self._key)
        obs, self._state, self._task = self._start(jax.random.split(key, self.num_envs))
        return np.asarray(obs), {}

    def step(self, actions):
        if self._state is None:
            raise ConfigError("GymnasiumVectorEnv.step before reset")
        actions = np.asarray(actions, np.int32 if self.env.discrete else np.float32)
        self._key, key = jax.random.split(self._key)
        obs, self._state, self._task, reward, terminated, truncated, final = self._stepper(
            jax.random.split(key, self.num_envs), self._state, actions, self._task
        )
        done = np.asarray(terminated | truncated)
        info = {"final_obs": np.asarray(final), "_final_obs": done} if done.any() else {}  # Gymnasium's masked-info layout
        return np.asarray(obs), np.asarray(reward), np.asarray(terminated), np.asarray(truncated), info


def host_trials(
    agent: Any,
    agent_params: Any,
    make_env: Callable[[int], Any],
    num_trials: int,
    episodes: int,
    key: jax.Array,
    max_steps_per_episode: int | None = None,
) -> np.ndarray:
    """Play `agent` (an in-context agent, `act` jitted) through `num_trials` trials of `episodes`
    episodes of the Gymnasium environments `make_env(i)`, from the host. Returns
    returns[trial, episode] (numpy float32). The TimeSteps are those `metarl.envs.Trial` builds
    (prev action/reward, done, episode and step index, first, outcome_obs; no context). An
    episode also ends after `max_steps_per_episode` steps when given."""
    if num_trials < 1 or episodes < 1:
        raise ConfigError(f"host_trials: num_trials and episodes must be >= 1, got {num_trials} and {episodes}")
    act = jax.jit(agent.act)
    init = jax.jit(agent.init)
    discrete = agent.env.discrete
    shape, dtype = agent.env.action_shape, agent.env.action_dtype
    out = np.zeros((num_trials, episodes), np.float32)
    for i in range(num_trials):
        gym_env = make_env(i)
        key_trial = jax.random.fold_in(key, i)
        carry = init(jax.random.fold_in(key_trial, 0))
        obs, _ = gym_env.reset(seed=int(jax.random.randint(jax.random.fold_in(key_trial, 1), (), 0, 2**31 - 1)))
        ts = TimeStep(
            obs=jnp.asarray(obs, jnp.float32), prev_action=jnp.zeros(shape, dtype), prev_reward=jnp.float32(0.0),
            done=jnp.bool_(False), episode_index=jnp.int32(0), step_index=jnp.int32(0), first=jnp.bool_(True),
            outcome_obs=jnp.asarray(obs, jnp.float32), context=jnp.zeros((0,), jnp.float32),
        )
        step = 0
        for episode in range(episodes):
            t = 0
            while True:
                action, carry = act(agent_params, carry, ts, jax.random.fold_in(key_trial, 2 + step))
                step += 1
                a = int(action) if discrete else np.asarray(action, np.float32)
                obs, reward, terminated, truncated, _ = gym_env.step(a)
                out[i, episode] += float(reward)
                t += 1
                done = bool(terminated or truncated or (max_steps_per_episode is not None and t >= max_steps_per_episode))
                outcome = jnp.asarray(obs, jnp.float32)
                if done and episode + 1 < episodes:
                    obs, _ = gym_env.reset()
                ts = TimeStep(
                    obs=jnp.asarray(obs, jnp.float32), prev_action=jnp.asarray(action, dtype).reshape(shape),
                    prev_reward=jnp.float32(reward), done=jnp.bool_(done), episode_index=jnp.int32(episode + int(done)),
                    step_index=jnp.int32(0 if done else t), first=jnp.bool_(False), outcome_obs=outcome,
                    context=jnp.zeros((0,), jnp.float32),
                )
                if done:
                    break
        gym_env.close()
    return out
