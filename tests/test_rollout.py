"""The rollout primitive and the trial's pool, context and termination flags."""

import jax
import jax.numpy as jnp
import numpy as np

import metarl
from metarl.envs import Trial
from metarl.envs.bandit import BanditTask
from metarl.envs.trial import prev_action_features
from metarl.rollout import rollout

KEY = jax.random.PRNGKey(0)


def test_resampling_trial_takes_its_next_tasks_from_the_pool_in_order():
    env = metarl.make("bandit", arms=2)
    trial = Trial(env, episodes=2, resample=True)
    pool = BanditTask(jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))  # noiseless arms
    timestep, state = trial.reset(KEY, pool=pool)

    def policy(carry, ts, key, t):
        return jnp.int32(0), carry, None  # always arm 0: pays the pool task's means[0]

    record = lambda s: (s.reward, s.info["trial_done"], s.next_timestep.first)  # noqa: E731
    _, (reward, done, first) = rollout(trial, policy, None, timestep, state, jax.random.split(KEY, 8), record=record, pool=pool)
    # trials of 2 pulls on tasks 0, 1, 2, 0 (the pool wraps): arm 0 pays 1, 0, 1, 1
    np.testing.assert_array_equal(reward, [1, 1, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(done, [0, 1] * 4)
    np.testing.assert_array_equal(first, [0, 1] * 4)


def test_context_is_shown_only_when_exposed_and_termination_flags():
    env = metarl.make("tabular-mdp", states=2, actions=2, horizon=2)
    task = env.sample_task(KEY)
    hidden, _ = Trial(env, 1).reset(KEY, task)
    shown, state = Trial(env, 1, expose_context=True).reset(KEY, task)
    assert hidden.context.shape == (0,)
    np.testing.assert_array_equal(shown.context, jnp.concatenate([task.reward_mean.ravel(), task.transitions.ravel()]))
    trial = Trial(env, 1, expose_context=True)
    ts, state, _, info = trial.step(KEY, state, 1)
    assert not bool(info["truncated"]) and not bool(info["terminated"])
    np.testing.assert_array_equal(ts.context, shown.context)  # kept through the trial
    ts, state, _, info = trial.step(KEY, state, 1)
    assert bool(info["truncated"]) and not bool(info["terminated"]) and bool(info["trial_done"])  # the horizon is a time limit
    bandit = metarl.make("bandit", arms=3)
    _, bstate = Trial(bandit, 2).reset(KEY)
    _, _, _, info = Trial(bandit, 2).step(KEY, bstate, 2)
    assert bool(info["terminated"]) and not bool(info["truncated"])  # a pull ends its episode


def test_prev_action_features_are_zero_at_the_first_step():
    env = metarl.make("bandit", arms=3)
    trial = Trial(env, 3)
    ts, state = trial.reset(KEY)
    np.testing.assert_array_equal(prev_action_features(ts, env), [0, 0, 0])
    ts, _, _, _ = trial.step(KEY, state, 2)
    np.testing.assert_array_equal(prev_action_features(ts, env), [0, 0, 1])
    assert env.discrete and env.action_shape == () and env.action_size == 3
