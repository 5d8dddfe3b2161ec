"""Task families (dynamics worked out by hand), the registry's errors, and the trial's boundaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl import envs
from metarl.baselines import make as make_baseline
from metarl.envs.bandit import BanditTask
from metarl.envs.fixed_arm_bandit import FixedArmBanditTask
from metarl.envs.tabular_mdp import TabularMDPTask
from metarl.errors import ConfigError
from metarl.eval import evaluate

KEY = jax.random.PRNGKey(0)


# ---------------------------------------------------------------------------------------------
# every registered family: reset/step under jit and vmap, shapes and spaces agree
@pytest.mark.parametrize("name", envs.jitted_names())  # lunarlander: tests/test_lunarlander.py
def test_every_family_resets_and_steps_under_jit_and_vmap(name):
    env = metarl.make(name)
    tasks = env.sample_tasks(KEY, 3)
    keys = jax.random.split(KEY, 3)
    obs, state = jax.jit(jax.vmap(env.reset))(keys, tasks)
    assert obs.shape == (3, *env.obs_shape)
    if env.discrete:
        actions = jnp.arange(3) % env.num_actions
        assert env.action_space().n == env.num_actions
    else:
        actions = jnp.zeros((3, *env.action_shape), jnp.float32)
    obs2, state2, reward, terminated, truncated, _ = jax.jit(jax.vmap(env.step))(keys, state, actions, tasks)
    assert obs2.shape == obs.shape and reward.shape == (3,) and terminated.shape == truncated.shape == (3,)
    assert env.observation_space().shape == env.obs_shape


# ---------------------------------------------------------------------------------------------
# bandit
def test_bandit_pays_bernoulli_of_the_pulled_arm():
    env = metarl.make("bandit", arms=3)
    task = BanditTask(jnp.array([0.0, 1.0, 0.25]))
    obs, state = env.reset(KEY, task)
    for arm, expected in [(0, 0.0), (1, 1.0)]:
        _, _, reward, done, _, _ = env.step(KEY, state, arm, task)
        assert float(reward) == expected and bool(done)  # each pull is a one-step episode
    rewards = jax.vmap(lambda k: env.step(k, state, 2, task)[2])(jax.random.split(KEY, 20000))
    assert abs(float(rewards.mean()) - 0.25) < 0.01  # 4 sigma = 0.012


def test_bandit_prior():
    means = metarl.make("bandit", arms=50).sample_tasks(KEY, 400).means
    assert means.shape == (400, 50) and float(means.min()) >= 0 and float(means.max()) <= 1
    assert abs(float(means.mean()) - 0.5) < 0.01 and abs(float(means.var()) - 1 / 12) < 0.003
    skewed = metarl.make("bandit", arms=50, prior_a=2.0, prior_b=6.0).sample_tasks(KEY, 400).means
    assert abs(float(skewed.mean()) - 0.25) < 0.01


# ---------------------------------------------------------------------------------------------
# tabular MDP
def _chain_mdp():
    """2 states, 2 actions: action 0 stays, action 1 switches state; mu = [[1, 2], [3, 4]]."""
    P = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    return TabularMDPTask(jnp.array([[1.0, 2.0], [3.0, 4.0]]), P)


def test_tabular_mdp_hand_worked_transitions():
    env = metarl.make("tabular-mdp", states=2, actions=2, horizon=3, reward_noise_std=0.0)
    task = _chain_mdp()
    obs, state = env.reset(KEY, task)
    np.testing.assert_array_equal(obs, [1.0, 0.0])  # fixed start state 0, one-hot
    # s0 -a1-> s1 pays mu[0,1]=2; s1 -a0-> s1 pays mu[1,0]=3; s1 -a1-> s0 pays mu[1,1]=4, episode over
    expected = [(1, 2.0, [0.0, 1.0], False), (0, 3.0, [0.0, 1.0], False), (1, 4.0, [1.0, 0.0], True)]
    for action, r, o, d in expected:
        obs, state, reward, _, done, _ = env.step(KEY, state, action, task)
        assert float(reward) == r and bool(done) == d
        np.testing.assert_array_equal(obs, o)
    assert int(state.t) == 3


def test_tabular_mdp_noise_and_transition_sampling():
    env = metarl.make("tabular-mdp", states=3, actions=1, horizon=5)
    P = jnp.array([[[0.2, 0.3, 0.5]], [[1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]]])
    task = TabularMDPTask(jnp.array([[1.5], [0.0], [0.0]]), P)
    _, state = env.reset(KEY, task)
    obs, _, reward, _, _, _ = jax.vmap(lambda k: env.step(k, state, 0, task))(jax.random.split(KEY, 20000))
    assert abs(float(reward.mean()) - 1.5) < 0.03 and abs(float(reward.std()) - 1.0) < 0.02
    np.testing.assert_allclose(obs.mean(0), [0.2, 0.3, 0.5], atol=0.015)


def test_tabular_mdp_prior():
    tasks = metarl.make("tabular-mdp").sample_tasks(KEY, 200)
    assert tasks.reward_mean.shape == (200, 10, 5) and tasks.transitions.shape == (200, 10, 5, 10)
    assert abs(float(tasks.reward_mean.mean()) - 1.0) < 0.03 and abs(float(tasks.reward_mean.std()) - 1.0) < 0.03
    np.testing.assert_allclose(tasks.transitions.sum(-1), 1.0, atol=1e-5)
    assert abs(float(tasks.transitions.mean()) - 0.1) < 1e-4  # Dirichlet(1) on 10 states: mean 1/10
    assert abs(float(tasks.transitions.var()) - 9 / 1100) < 5e-4  # Var = (1/10)(9/10)/11


# ---------------------------------------------------------------------------------------------
# fixed-arm bandit (First-Explore)
def test_fixed_arm_bandit():
    env = metarl.make("fixed-arm-bandit")
    tasks = env.sample_tasks(KEY, 2000)
    assert bool(jnp.all(tasks.means[:, 0] == 0.5))
    others = tasks.means[:, 1:]
    assert abs(float(others.mean())) < 0.02 and abs(float(others.std()) - 1.0) < 0.02
    task = FixedArmBanditTask(jnp.array([0.5, -1.0] + [0.0] * 8))
    _, state = env.reset(KEY, task)
    keys = jax.random.split(KEY, 20000)
    r0 = jax.vmap(lambda k: env.step(k, state, 0, task)[2])(keys)
    assert bool(jnp.all(r0 == 0.5))  # the fixed arm is noiseless
    r1 = jax.vmap(lambda k: env.step(k, state, 1, task)[2])(keys)
    assert abs(float(r1.mean()) + 1.0) < 0.015 and abs(float(r1.std()) - 0.5) < 0.01
    control = metarl.make("fixed-arm-bandit", fixed_mean=0.0).sample_task(KEY)
    assert float(control.means[0]) == 0.0


# ---------------------------------------------------------------------------------------------
# registry errors
@pytest.mark.parametrize(
    "name, options, message",
    [
        ("bandt", {}, "unknown task family 'bandt'; valid names: " + ", ".join(envs.names())),
        ("bandit", {"arms": 0}, "bandit: arms must be >= 1, got 0"),
        ("bandit", {"arms": "5"}, "bandit: arms must be an integer"),
        ("bandit", {"arms": 2.5}, "bandit: arms must be an integer"),
        ("bandit", {"prior_a": 0.0}, "bandit: prior_a must be > 0.0"),
        ("bandit", {"states": 3}, "task family 'bandit' has no option 'states'; its options are: arms, prior_a, prior_b"),
        ("tabular-mdp", {"states": -1}, "tabular-mdp: states must be >= 1, got -1"),
        ("tabular-mdp", {"horizon": 0}, "tabular-mdp: horizon must be >= 1"),
        ("tabular-mdp", {"reward_noise_std": float("nan")}, "reward_noise_std must be a finite number"),
        ("fixed-arm-bandit", {"arms": 1}, "fixed-arm-bandit: arms must be >= 2"),
    ],
)
def test_bad_options_give_clear_errors(name, options, message):
    with pytest.raises(ConfigError) as err:
        metarl.make(name, **options)
    assert message in str(err.value)


def test_trial_rejects_bad_episode_counts():
    with pytest.raises(ConfigError, match="episodes must be >= 1"):
        metarl.Trial(metarl.make("bandit"), 0)


# ---------------------------------------------------------------------------------------------
# the trial
def test_trial_boundaries_task_kept_and_indices():
    env = metarl.make("tabular-mdp", states=2, actions=2, horizon=3, reward_noise_std=0.0)
    trial = metarl.Trial(env, episodes=2)
    task = _chain_mdp()
    ts, state = jax.jit(trial.reset)(KEY, task)
    assert bool(ts.first) and not bool(ts.has_prev_action) and int(ts.prev_action) == 0 and float(ts.prev_reward) == 0.0
    step = jax.jit(trial.step)
    actions = [1, 1, 1, 0, 1, 0, 1]
    seen = []
    for t, a in enumerate(actions):
        ts_next, state, reward, info = step(jax.random.fold_in(KEY, t), state, a)
        seen.append((int(info["episode_index"]), bool(info["valid"]), float(reward), int(ts_next.episode_index),
                     int(ts_next.step_index), bool(ts_next.done), bool(info["trial_done"])))
        assert int(ts_next.prev_action) == a and float(ts_next.prev_reward) == float(reward)
        assert not bool(ts_next.first)
        np.testing.assert_array_equal(state.task.reward_mean, task.reward_mean)  # task kept
        ts = ts_next
    # episode 0: s0 -a1-> s1 (2), s1 -a1-> s0 (4), s0 -a1-> s1 (2), done; reset to s0
    # episode 1: s0 -a0-> s0 (1), s0 -a1-> s1 (2), s1 -a0-> s1 (3), done: trial over; then invalid
    assert seen == [
        (0, True, 2.0, 0, 1, False, False),
        (0, True, 4.0, 0, 2, False, False),
        (0, True, 2.0, 1, 0, True, False),
        (1, True, 1.0, 1, 1, False, False),
        (1, True, 2.0, 1, 2, False, False),
        (1, True, 3.0, 2, 0, True, True),
        (2, False, 2.0, 2, 1, False, False),  # after the trial: reset to s0, a1 pays 2, not counted
    ]


def test_trial_outcome_obs_at_episode_boundary():
    env = metarl.make("tabular-mdp", states=2, actions=2, horizon=1, reward_noise_std=0.0)
    trial = metarl.Trial(env, episodes=3)
    ts, state = trial.reset(KEY, _chain_mdp())
    ts, state, _, _ = trial.step(KEY, state, 1)  # s0 -> s1, episode over, reset to s0
    np.testing.assert_array_equal(ts.obs, [1.0, 0.0])
    np.testing.assert_array_equal(ts.outcome_obs, [0.0, 1.0])
    assert bool(ts.done)


def test_a_new_trial_keeps_the_outcome_of_the_last_action():
    """A stream's trial ends with its episode; the next trial's first timestep shows the reset
    observation as `obs` but the state the action led to as `outcome_obs` (a learner bootstraps
    a truncation from it), on a pool and without."""
    env = metarl.make("tabular-mdp", states=2, actions=2, horizon=1, reward_noise_std=0.0)
    task = _chain_mdp()
    pool = jax.tree.map(lambda x: jnp.stack([x, x]), task)
    for trial, kwargs in ((metarl.Trial(env, episodes=1, resample=True), {"pool": pool}),):
        ts, state = trial.reset(KEY, **kwargs)
        ts, state, _, info = trial.step(KEY, state, 1, **kwargs)  # s0 -> s1, the trial is over
        assert bool(info["trial_done"]) and bool(ts.first)
        np.testing.assert_array_equal(ts.obs, [1.0, 0.0])
        np.testing.assert_array_equal(ts.outcome_obs, [0.0, 1.0])


def test_trial_resamples_task_only_across_trials():
    env = metarl.make("bandit", arms=4)
    trial = metarl.Trial(env, episodes=3, resample=True)
    ts, state = trial.reset(KEY)

    def body(carry, key):
        ts, state = carry
        ts, state, _, info = trial.step(key, state, 0)
        return (ts, state), (state.task.means, state.trial_index, ts.first, ts.episode_index, info["trial_done"])

    _, (means, trial_index, first, episode_index, trial_done) = jax.lax.scan(body, (ts, state), jax.random.split(KEY, 9))
    np.testing.assert_array_equal(trial_index, [0, 0, 1, 1, 1, 2, 2, 2, 3])
    np.testing.assert_array_equal(first, [False, False, True, False, False, True, False, False, True])
    np.testing.assert_array_equal(episode_index, [1, 2, 0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(trial_done, [False, False, True] * 3)
    assert bool(jnp.all(means[0] == state.task.means)) and bool(jnp.all(means[0] == means[1]))
    assert not bool(jnp.all(means[1] == means[2])) and bool(jnp.all(means[2] == means[4]))
    assert not bool(jnp.all(means[4] == means[5]))


# ---------------------------------------------------------------------------------------------
# the evaluator on the simplest agent
def test_evaluate_random_agent_and_batching():
    env = metarl.make("bandit", arms=2)
    tasks = BanditTask(jnp.tile(jnp.array([[0.2, 0.6]]), (500, 1)))
    agent = make_baseline("random", env, 10)
    returns = evaluate(agent, None, env, tasks, 10, KEY)
    assert returns.shape == (500, 10)
    # each pull pays 0.2 or 0.6 with prob 1/2: mean 0.4 per pull, std sqrt(0.24)
    assert abs(returns.mean() - 0.4) < 4 * np.sqrt(0.24 / 5000)
    np.testing.assert_array_equal(returns, evaluate(agent, None, env, tasks, 10, KEY, batch_size=128))


def test_evaluate_rejects_mismatched_inputs():
    env = metarl.make("bandit", arms=2)
    agent = make_baseline("random", metarl.make("bandit", arms=3), 10)
    with pytest.raises(ConfigError, match="agent was built for bandit"):
        evaluate(agent, None, env, env.sample_tasks(KEY, 4), 10, KEY)
    mdp = metarl.make("tabular-mdp", states=3, actions=2)
    bad = TabularMDPTask(jnp.zeros((4, 3, 2)), jnp.full((3, 3, 2, 3), 1 / 3))
    with pytest.raises(ConfigError, match="same leading"):
        evaluate(make_baseline("random", mdp, 10), None, mdp, bad, 10, KEY)
    bad = BanditTask(jnp.zeros((4, 2)))
    bad = bad.replace(means=(jnp.zeros((4, 2)), jnp.zeros((3, 2))))
    with pytest.raises(ConfigError, match="not a batch of bandit"):
        evaluate(make_baseline("random", env, 10), None, env, bad, 10, KEY)


def test_evaluate_checks_tasks_episodes_and_key():
    five = metarl.make("bandit", arms=5)
    agent = make_baseline("ucb1", five, 10)
    seven_arm_tasks = metarl.make("bandit", arms=7).sample_tasks(KEY, 4)
    with pytest.raises(ConfigError, match=r"shape \(4, 7\).*\(num_tasks, 5,\)"):
        evaluate(agent, None, five, seven_arm_tasks, 10, KEY)
    with pytest.raises(ConfigError, match="not a batch of bandit"):
        evaluate(agent, None, five, five.sample_tasks(KEY, 4).means, 10, KEY)  # an array, not BanditTask
    with pytest.raises(ConfigError, match="built for trials of 10 episodes but the evaluation has 20"):
        evaluate(agent, None, five, five.sample_tasks(KEY, 4), 20, KEY)
    with pytest.raises(ConfigError, match="key must be a JAX PRNG key"):
        evaluate(agent, None, five, five.sample_tasks(KEY, 4), 10, 0)
    with pytest.raises(ConfigError, match="num must be >= 1"):
        five.sample_tasks(KEY, -1)
    with pytest.raises(ConfigError, match="num must be an integer"):
        five.sample_tasks(KEY, 2.5)


@pytest.mark.parametrize("name, agent_name", [("bandit", "random"), pytest.param("tabular-mdp", "psrl", marks=pytest.mark.slow), ("tabular-mdp", "oracle")])
def test_lockstep_evaluation_equals_per_trial_scan(name, agent_name):
    """The evaluator's fast path (time loop outside the vmap) returns exactly what one scan per
    trial returns, for a stateless, a re-planning and a privileged agent."""
    from metarl.eval.evaluate import run_trial, run_trials_lockstep

    env = metarl.make(name, **({"states": 3, "actions": 2, "horizon": 4} if name == "tabular-mdp" else {}))
    agent = make_baseline(agent_name, env, 3)
    tasks = env.sample_tasks(KEY, 8)
    keys = jax.random.split(jax.random.PRNGKey(3), 8)
    trial = metarl.Trial(env, 3)
    lockstep = jax.jit(lambda t, k: run_trials_lockstep(agent, None, trial, t, k))(tasks, keys)
    per_trial = jax.jit(jax.vmap(lambda t, k: run_trial(agent, t if agent.privileged else None, trial, t, k)))(tasks, keys)
    np.testing.assert_allclose(lockstep, per_trial, rtol=1e-6, atol=1e-5)
