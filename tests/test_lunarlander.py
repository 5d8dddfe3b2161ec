"""LunarLander with gravity contexts (Box2D, host-stepped): the family, the context's physics, and
DQN trained and evaluated from the host (metarl.algos.host) through the run folder."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

pytest.importorskip("gymnasium.envs.box2d.lunar_lander", reason="the box2d extra (box2d, pygame)")

import metarl  # noqa: E402
from metarl import algos  # noqa: E402
from metarl.errors import ConfigError  # noqa: E402
from metarl.run import TrainSettings, train  # noqa: E402
from metarl.run.evaluation import seed_slice  # noqa: E402


def test_contexts_training_and_evaluation_sets():
    env = metarl.make("lunarlander", factors="gravity")
    g = np.asarray(env.training_tasks().gravity)
    assert g.shape == (100,) and g.min() >= 10 * 0.1 - 1e-5 and g.max() <= 10 * 2.2 + 1e-5
    m, tasks, inside = env.evaluation_tasks("gravity", 40)
    np.testing.assert_allclose(m, np.linspace(0.05, 4.4, 40))
    np.testing.assert_allclose(np.asarray(tasks.gravity), 10 * m, rtol=1e-6)
    assert inside.sum() == ((m >= 0.1) & (m <= 2.2)).sum() and not inside[0] and not inside[-1]
    np.testing.assert_allclose(env.context(env.task_with(25.0)), [2.5])


@pytest.mark.parametrize(
    "options, message",
    [({"factors": "wind"}, "unknown factor 'wind'"), ({"factors": "gravity=2:1"}, "0 < LOW <= HIGH"), ({"contexts": -1}, "contexts")],
)
def test_bad_options_are_one_clear_line(options, message):
    with pytest.raises(ConfigError, match=message):
        metarl.make("lunarlander", **options)


def test_negative_gravity_and_a_jitted_step_are_errors(tmp_path):
    env = metarl.make("lunarlander")
    with pytest.raises(ConfigError, match="gravity must be positive"):
        env.task_with(-1.0)
    obs, state = env.reset(jax.random.PRNGKey(0), env.sample_task(jax.random.PRNGKey(0)))
    with pytest.raises(ConfigError, match="stepped from the host"):
        env.step(jax.random.PRNGKey(0), state, 0, None)
    with pytest.raises(ConfigError, match="only dqn"):
        metarl.run.train(algos.make("ppo", env), TrainSettings(total_steps=1000, out_dir=str(tmp_path / "ppo"), quiet=True))
    assert not (tmp_path / "ppo").exists()  # a run that cannot start leaves no folder


def test_the_context_sets_the_box2d_world_gravity_even_outside_gymnasiums_range():
    """Gymnasium's constructor asserts -12 < gravity < 0; the context (up to 44 m/s^2 in evaluation)
    goes on the attribute its reset builds the world with. Under noops from the same seed, the
    lander's vertical speed after k steps scales with gravity (no engine fired, no contact yet)."""
    env = metarl.make("lunarlander")
    speeds = {}
    for g in (5.0, 10.0, 40.0):
        gym_env = env.make_gym()
        env.set_context(gym_env, env.task_with(g))
        gym_env.reset(seed=3)
        assert tuple(gym_env.world.gravity) == pytest.approx((0.0, -g))
        v0 = None
        for k in range(5):
            obs, *_ = gym_env.step(0)
            v0 = obs[3] if k == 0 else v0
        speeds[g] = obs[3] - v0  # the change of vy over 4 noop steps
        gym_env.close()
    assert speeds[40.0] < speeds[10.0] < speeds[5.0] < 0
    np.testing.assert_allclose(speeds[40.0] / speeds[10.0], 4.0, rtol=0.05)
    np.testing.assert_allclose(speeds[5.0] / speeds[10.0], 0.5, rtol=0.05)


@pytest.mark.parametrize("mode", [pytest.param("explicit", marks=pytest.mark.slow), "learned"])
def test_host_stepped_dqn_trains_checkpoints_resumes_and_evaluates(tmp_path, mode):
    env = metarl.make("lunarlander", factors="gravity", contexts=5, max_steps=60)
    algo = algos.make("dqn", env, context_mode=mode, learning_starts=100, buffer_size=500, batch_size=16, hidden=(16,), target_every=50)
    out = str(tmp_path / "run")
    result = train(algo, TrainSettings(total_steps=300, out_dir=out, seeds=2, quiet=True, eval_tasks=0))
    assert result.env_steps == 300 and os.path.exists(result.checkpoint)
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    last = records[-1]["metrics"]
    assert last["learning"] == 1.0 and np.isfinite(last["loss"]) and last["episodes_ended"] > 0  # 60-step episodes
    assert int(np.asarray(result.state.buffer_size)[0]) == 300  # every host step reached each seed's replay buffer
    more = train(algo, TrainSettings(total_steps=400, out_dir=out, seeds=2, quiet=True, eval_tasks=0, resume=True))
    assert more.env_steps == 400 and int(np.asarray(more.state.update_step)[0]) == 40
    multipliers, tasks, _ = env.evaluation_tasks("gravity", 3)
    returns = algo.for_run(40).evaluate(seed_slice(more.state, 0), jax.random.PRNGKey(0), tasks=tasks, episodes=2)
    assert returns.shape == (3, 2) and np.isfinite(returns).all()
