"""The contract every registered task family keeps (one test, parametrised over the registry, so a
new family is checked by being registered): jit and vmap, shapes and dtypes against its spaces,
episodes that end within `max_steps_in_episode` (exactly there for a fixed-horizon family), the same
key giving the same result, and no retracing when only the key and task change."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarl import envs

#: small options per family (tiny shapes keep the compilation short); a family not listed runs
#: with its defaults
SMALL = {
    "bandit": {"arms": 3},
    "fixed-arm-bandit": {"arms": 3},
    "tabular-mdp": {"states": 3, "actions": 2, "horizon": 4},
    "dark-treasure-room": {"size": 5, "treasures": 3, "horizon": 6},
    "ray-maze": {"rays": 5, "horizon": 6},
    "gymnax": {"env_id": "CartPole-v1", "factors": "length=0.5:1.5"},
}
EPISODES = 4  #: vmapped episodes per family




def _random_action(env, key, params):
    space = env.action_space(params)
    if env.discrete:
        return jax.random.randint(key, (), 0, space.n).astype(jnp.int32)
    return jax.random.uniform(key, env.action_shape, jnp.float32, jnp.asarray(space.low), jnp.asarray(space.high))


def _episode_runner(env):
    """key -> one episode of random actions on a sampled task, `max_steps_in_episode` steps long
    (steps after the episode ended are masked): obs, rewards, dones, the first done's index."""
    horizon = env.max_steps_in_episode

    @chex.assert_max_traces(n=1)
    def episode(key):
        task_key, reset_key, step_key = jax.random.split(key, 3)
        params = env.sample_task(task_key)
        obs0, state = env.reset(reset_key, params)

        def body(carry, key):
            state, ended = carry
            act_key, env_key = jax.random.split(key)
            action = _random_action(env, act_key, params)
            obs, state, reward, terminated, truncated, info = env.step(env_key, state, action, params)
            done = jnp.logical_or(terminated, truncated)
            return (state, ended | done), (obs, reward, terminated, truncated, ended)

        _, (obs, rewards, terminated, truncated, already) = jax.lax.scan(
            body, (state, jnp.bool_(False)), jax.random.split(step_key, horizon)
        )
        return obs0, obs, rewards, terminated, truncated, already

    return jax.jit(jax.vmap(episode))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "ray-maze" else n  # ray-maze: 30 s, its own tests cover it
                                  for n in envs.jitted_names()])  # lunarlander: tests/test_lunarlander.py
def test_family_contract(name):
    env = envs.make(name, **SMALL.get(name, {}))
    chex.clear_trace_counter()
    run = _episode_runner(env)
    keys = jax.random.split(jax.random.PRNGKey(0), EPISODES)
    obs0, obs, rewards, terminated, truncated, already = jax.device_get(run(keys))

    # shapes and dtypes: what the spaces say, float32 observations and rewards, bool flags
    horizon = env.max_steps_in_episode
    assert obs0.shape == (EPISODES, *env.obs_shape) and obs0.dtype == np.float32
    assert obs.shape == (EPISODES, horizon, *env.obs_shape) and obs.dtype == np.float32
    assert rewards.shape == (EPISODES, horizon) and rewards.dtype == np.float32
    assert terminated.dtype == np.bool_ and truncated.dtype == np.bool_
    assert np.isfinite(obs).all() and np.isfinite(rewards).all()
    obs_space = env.observation_space()
    assert tuple(obs_space.shape) == tuple(env.obs_shape)
    assert (obs0 >= np.asarray(obs_space.low) - 1e-6).all() and (obs0 <= np.asarray(obs_space.high) + 1e-6).all()
    shape, dtype = env.action_shape, env.action_dtype
    assert (shape, dtype) == (((), jnp.int32) if env.discrete else (shape, jnp.float32))
    assert env.context(env.sample_task(jax.random.PRNGKey(1))).shape == (env.context_size,)

    # every episode ends within max_steps_in_episode: exactly at it for a fixed horizon
    done = terminated | truncated
    assert done.any(axis=1).all(), f"{name}: an episode did not end within {horizon} steps"
    first_done = done.argmax(axis=1)
    if env.fixed_horizon:
        assert (first_done == horizon - 1).all(), f"{name}: a fixed-horizon episode ended at {first_done}"

    # same key, same result; another key runs the same compiled function (no retracing)
    again = jax.device_get(run(keys))
    for a, b in zip((obs0, obs, rewards, terminated, truncated), again):
        np.testing.assert_array_equal(a, b)
    other = jax.device_get(run(jax.random.split(jax.random.PRNGKey(1), EPISODES)))
    assert other[1].shape == obs.shape  # a second trace would have raised in assert_max_traces

    # the family checks a batch of its own tasks and names what is wrong with another shape
    tasks = env.sample_tasks(jax.random.PRNGKey(2), 3)
    assert env.check_tasks(tasks) == 3


@pytest.mark.parametrize("name", envs.names())
def test_family_options_rebuild_the_family(name):
    """What a run folder records (`options()`) rebuilds the same family: no fixed field leaks in."""
    env = envs.make(name, **SMALL.get(name, {}))
    assert envs.make(name, **env.options()) == env
