"""The Gymnasium adapter both ways."""

import jax
import numpy as np
import pytest

import metarl
from metarl import baselines
from metarl.eval import evaluate

gymnasium = pytest.importorskip("gymnasium")
from metarl.envs.gymnasium_adapter import GymnasiumEnv, GymnasiumVectorEnv, host_trials  # noqa: E402

KEY = jax.random.PRNGKey(0)


def test_a_family_is_a_gymnasium_env_that_passes_its_checker():
    from gymnasium.utils.env_checker import check_env

    env = GymnasiumEnv(metarl.make("gymnax", env_id="CartPole-v1", factors="length=0.5:2"))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        total, done = total + reward, terminated or truncated
    assert 1 <= total <= 500


def test_vector_env_steps_all_at_once_and_resets_finished_ones_on_new_tasks():
    venv = GymnasiumVectorEnv(metarl.make("bandit", arms=3), num_envs=4, seed=0)
    obs, _ = venv.reset(seed=1)
    assert obs.shape == (4, 1) and venv.action_space.shape == (4,)
    obs, reward, terminated, truncated, info = venv.step(np.array([0, 1, 2, 0]))
    assert reward.shape == (4,) and terminated.all() and not truncated.any()  # every pull ends its episode
    assert info["_final_obs"].all() and info["final_obs"].shape == (4, 1)


@pytest.mark.slow
def test_host_trials_on_gymnasium_match_the_jitted_evaluator_on_gymnax():
    family = metarl.make("gymnax", env_id="CartPole-v1")
    agent = baselines.make("random", family, 2)
    host = host_trials(agent, None, lambda i: gymnasium.make("CartPole-v1"), 60, 2, KEY)
    jitted = evaluate(agent, None, family, family.sample_tasks(KEY, 60), 2, KEY)
    assert host.shape == jitted.shape == (60, 2)
    # a uniformly random CartPole episode lasts ~22 steps: both means agree within sampling noise
    assert abs(host.mean() - jitted.mean()) < 4.0 and 15 < host.mean() < 30
