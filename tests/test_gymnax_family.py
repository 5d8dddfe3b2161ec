"""gymnax environments as task families: sampled EnvParams, derived physics, errors, dynamics
against Gymnasium's CartPole one step at a time from shared states."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl.envs import Trial
from metarl.errors import ConfigError

KEY = jax.random.PRNGKey(0)


def test_factors_sample_multiples_of_the_defaults_and_recompute_derived_physics():
    env = metarl.make("gymnax", env_id="CartPole-v1", factors="length=0.2:2.2,masspole=0.5:2")
    tasks = env.sample_tasks(KEY, 2000)
    length, masspole = np.asarray(tasks.length), np.asarray(tasks.masspole)
    assert 0.1 <= length.min() and length.max() <= 1.1 and abs(length.mean() - 0.6) < 0.02  # U(0.2, 2.2) x 0.5
    assert 0.05 <= masspole.min() and masspole.max() <= 0.2
    np.testing.assert_allclose(tasks.polemass_length, masspole * length, rtol=1e-6)
    np.testing.assert_allclose(tasks.total_mass, masspole + 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(tasks.gravity), 9.8, rtol=1e-6)  # not sampled: the default
    task = jax.tree.map(lambda x: x[0], tasks)
    np.testing.assert_array_equal(env.context(task), [task.length, task.masspole])
    carl = metarl.make("gymnax", env_id="CartPole-v1", factors="length=0.2:2.2", update_derived=False)
    np.testing.assert_allclose(carl.sample_tasks(KEY, 5).polemass_length, 0.05)  # CARL 1.1.1: left at the default


@pytest.mark.parametrize("options, message", [
    (dict(factors="lenght=1:2"), "unknown parameter 'lenght'.*length"),
    (dict(factors="max_steps_in_episode=1:2"), "not real-valued"),
    (dict(factors="length=2:1"), "LOW <= HIGH"),
    (dict(factors="length"), "NAME=LOW:HIGH"),
    (dict(factors="length=1:2,length=1:3"), "appears twice"),
    (dict(env_id="CartPole-v9"), "unknown gymnax environment"),
])
def test_bad_factors_are_clear_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        metarl.make("gymnax", **options)


def test_cartpole_step_equals_gymnasium_one_step_from_shared_states():
    gymnasium = pytest.importorskip("gymnasium")
    env = metarl.make("gymnax", env_id="CartPole-v1", factors="length=0.2:2.2,gravity=0.2:2.2")
    tasks = env.sample_tasks(KEY, 8)
    step = jax.jit(env.step)
    ref = gymnasium.make("CartPole-v1").unwrapped
    rng = np.random.default_rng(0)
    for i in range(8):
        task = jax.tree.map(lambda x: x[i], tasks)
        ref.length, ref.gravity = float(task.length), float(task.gravity)
        ref.polemass_length, ref.total_mass = ref.masspole * ref.length, ref.masspole + ref.masscart
        _, state = env.reset(KEY, task)
        for _ in range(20):
            x = rng.uniform([-2.6, -2, -0.25, -2], [2.6, 2, 0.25, 2]).astype(np.float32)  # some states past the thresholds
            action = int(rng.integers(2))
            state = state.replace(x=x[0], x_dot=x[1], theta=x[2], theta_dot=x[3], time=0)
            ref.state, ref.steps_beyond_terminated = x.astype(np.float64), None
            ref_obs, _, ref_terminated, _, _ = ref.step(action)
            obs, _, _, terminated, truncated, _ = step(KEY, state, action, task)
            # float32 against float64 from the same state, one Euler step of 0.02 s: a few ulps
            np.testing.assert_allclose(obs, ref_obs, rtol=1e-5, atol=1e-6)
            assert bool(terminated) == bool(ref_terminated) and not bool(truncated)


def test_time_limit_is_a_truncation_and_box_actions_flow_through_the_trial():
    env = metarl.make("gymnax", env_id="Pendulum-v1", factors="l=0.5:2.2")
    assert not env.discrete and env.action_shape == (1,) and env.context_size == 1
    trial = Trial(env, 1)
    ts, state = trial.reset(KEY, env.sample_task(KEY))
    assert ts.prev_action.shape == (1,) and ts.prev_action.dtype == jnp.float32
    step = jax.jit(trial.step)
    for t in range(200):
        ts, state, _, info = step(jax.random.fold_in(KEY, t), state, jnp.array([0.5]))
    assert bool(info["truncated"]) and not bool(info["terminated"]) and bool(info["trial_done"])
    np.testing.assert_allclose(ts.prev_action, [0.5])


def test_default_params_stay_concrete_when_first_built_inside_a_trace():
    # the gymnax environment and its default params are cached per id; built first by the jitted
    # sample_tasks, they must not hold that trace's tracers (later eager use would see them leak)
    from metarl.envs import gymnax_family

    gymnax_family._make.cache_clear()
    env = metarl.make("acrobot")
    env.sample_tasks(jax.random.PRNGKey(0), 3)
    assert not isinstance(env.default_params.link_length_1, jax.core.Tracer)
    _, tasks, _ = env.evaluation_tasks(num=2)  # stacks default params eagerly
    assert np.isfinite(np.asarray(tasks.link_length_1)).all()
