"""Tabular-MDP baselines: value iteration, EVI, posterior counts, PSRL's re-sampling, the Oracle's
return, every baseline beating random, and hyperparameter validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarl.baselines import make
from metarl.baselines.mdp import (
    finite_horizon_q_values,
    optimistic_transition,
    posterior_mean_mdp,
)
from metarl.envs.registry import make as make_env
from metarl.envs.tabular_mdp import TabularMDPTask
from metarl.envs.trial import TimeStep
from metarl.errors import ConfigError
from metarl.eval.evaluate import evaluate

# Hand-worked 2-state 2-action MDP, horizon 3.
# r = [[1, 0], [0, 2]]; s0,a0 -> s0; s0,a1 -> s1 w.p. 0.5 else s0; s1,a0 -> s0; s1,a1 -> s1.
REWARD = jnp.array([[1.0, 0.0], [0.0, 2.0]])
TRANSITIONS = jnp.array([[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.0, 1.0]]])
# Q[2] = r                                              -> V[2] = [1, 2]
# Q[1] = [[1 + 1, 0 + .5*1 + .5*2], [0 + 1, 2 + 2]]     = [[2, 1.5], [1, 4]] -> V[1] = [2, 4]
# Q[0] = [[1 + 2, 0 + .5*2 + .5*4], [0 + 2, 2 + 4]]     = [[3, 3], [2, 6]]   -> V[0] = [3, 6]
EXPECTED_Q = np.array([[[3.0, 3.0], [2.0, 6.0]], [[2.0, 1.5], [1.0, 4.0]], [[1.0, 0.0], [0.0, 2.0]]])


def test_finite_horizon_value_iteration_hand_worked():
    q = finite_horizon_q_values(REWARD, TRANSITIONS, 3)
    np.testing.assert_allclose(np.asarray(q), EXPECTED_Q, atol=1e-6)
    q_jit = jax.jit(finite_horizon_q_values, static_argnums=2)(REWARD, TRANSITIONS, 3)
    np.testing.assert_allclose(np.asarray(q_jit), EXPECTED_Q, atol=1e-6)


def test_optimistic_transition_hand_worked():
    p_hat = jnp.array([0.5, 0.3, 0.2])
    v = jnp.array([0.0, 1.0, 2.0])
    # radius 0.4: +0.2 on the best state (2), -0.2 from the worst (0)
    np.testing.assert_allclose(np.asarray(optimistic_transition(p_hat, jnp.float32(0.4), v)), [0.3, 0.3, 0.4], atol=1e-6)
    # radius 1.4: +0.7 on state 2, take 0.5 from state 0 then 0.2 from state 1
    np.testing.assert_allclose(np.asarray(optimistic_transition(p_hat, jnp.float32(1.4), v)), [0.0, 0.1, 0.9], atol=1e-6)
    # radius 4: everything on the best state; order of v permuted to check the un-sorting
    out = optimistic_transition(p_hat, jnp.float32(4.0), jnp.array([2.0, 0.0, 1.0]))
    np.testing.assert_allclose(np.asarray(out), [1.0, 0.0, 0.0], atol=1e-6)


def _timestep(state, S, prev_action=0, prev_reward=0.0, outcome=None, step_index=0, episode_index=0, first=False, done=False):
    obs = jax.nn.one_hot(state, S)
    return TimeStep(
        obs=obs,
        prev_action=jnp.int32(prev_action),
        prev_reward=jnp.float32(prev_reward),
        done=jnp.bool_(done),
        episode_index=jnp.int32(episode_index),
        step_index=jnp.int32(step_index),
        first=jnp.bool_(first),
        outcome_obs=obs if outcome is None else jax.nn.one_hot(outcome, S),
        context=jnp.zeros((0,), jnp.float32),
    )


def test_posterior_counts_from_hand_made_transitions():
    env = make_env("tabular-mdp", states=3, actions=2, horizon=2)
    agent = make("greedy", env, 2)
    # Episode 0: s0 -a1, r=.5-> s2 -a0, r=1-> s1 (episode ends: obs is the reset state s0,
    # outcome_obs is s1). Episode 1: s0 -a1, r=-1-> s1.
    sequence = [
        _timestep(0, 3, first=True),
        _timestep(2, 3, prev_action=1, prev_reward=0.5, step_index=1),
        _timestep(0, 3, prev_action=0, prev_reward=1.0, outcome=1, step_index=0, episode_index=1, done=True),
        _timestep(1, 3, prev_action=1, prev_reward=-1.0, step_index=1, episode_index=1),
    ]
    carry = agent.init(jax.random.PRNGKey(0))
    act = jax.jit(agent.act)
    for i, ts in enumerate(sequence):
        _, carry = act(None, carry, ts, jax.random.PRNGKey(i))
    visits = np.zeros((3, 2))
    visits[0, 1], visits[2, 0] = 2, 1
    reward_sum = np.zeros((3, 2))
    reward_sum[0, 1], reward_sum[2, 0] = 0.5 - 1.0, 1.0
    transitions = np.zeros((3, 2, 3))
    transitions[0, 1, 2] = transitions[0, 1, 1] = transitions[2, 0, 1] = 1  # incl. the boundary one
    np.testing.assert_allclose(np.asarray(carry.counts.visits), visits)
    np.testing.assert_allclose(np.asarray(carry.counts.reward_sum), reward_sum)
    np.testing.assert_allclose(np.asarray(carry.counts.transition_counts), transitions)
    assert int(carry.s_prev) == 1
    # Normal-Normal posterior mean with prior N(1, 1) and noise 1: (1 + sum r) / (1 + n)
    mean, p = posterior_mean_mdp(env, carry.counts)
    assert float(mean[0, 1]) == pytest.approx((1 - 0.5) / 3)
    assert float(mean[2, 0]) == pytest.approx(2.0 / 2)
    assert float(mean[1, 1]) == pytest.approx(1.0)
    np.testing.assert_allclose(np.asarray(p[0, 1]), [1 / 5, 2 / 5, 2 / 5], atol=1e-6)  # Dirichlet(1) + counts


def test_psrl_resamples_only_at_episode_starts():
    env = make_env("tabular-mdp", states=3, actions=2, horizon=3)
    agent = make("psrl", env, 3)
    carry = agent.init(jax.random.PRNGKey(0))
    act = jax.jit(agent.act)
    plans = []
    for t in range(9):
        h = t % 3
        ts = _timestep(0, 3, prev_action=0, step_index=h, episode_index=t // 3, first=t == 0, done=t > 0 and h == 0)
        _, carry = act(None, carry, ts, jax.random.PRNGKey(100 + t))
        plans.append(np.asarray(carry.q_values))
    for t in range(1, 9):
        same = np.array_equal(plans[t], plans[t - 1])
        assert same == (t % 3 != 0), f"step {t}: plan {'kept' if same else 'changed'}"


def test_oracle_follows_the_optimal_policy_of_the_task():
    # As REWARD/TRANSITIONS but s0,a1 -> s1 surely: Q[0, s0] = [1 + 2, 0 + 4], so the optimal
    # path is a1, a1, a1 with return 0 + 2 + 2 = 4 (no reward noise: exact).
    env = make_env("tabular-mdp", states=2, actions=2, horizon=3, reward_noise_std=0.0)
    transitions = TRANSITIONS.at[0, 1].set(jnp.array([0.0, 1.0]))
    task = TabularMDPTask(REWARD[None], transitions[None])
    returns = evaluate(make("oracle", env, 2), None, env, task, 2, jax.random.PRNGKey(0))
    np.testing.assert_allclose(returns, [[4.0, 4.0]], atol=1e-6)


BASELINE_HPARAMS = {
    "random": {},
    "greedy": {},
    "eps-greedy": {"eps": 0.1},
    "psrl": {},
    "opsrl": {"samples": 3},
    "ucrl2": {"scaling": 0.1},
    "beb": {"beta": 1.0},
    "oracle": {},
}
N10_TASKS = 150


@pytest.fixture(scope="module")
def n10():
    """Every baseline on the same 150 default tasks (S=10, A=5, H=10), n=10: (tasks, returns)."""
    env = make_env("tabular-mdp")
    tasks = env.sample_tasks(jax.random.PRNGKey(11), N10_TASKS)
    key = jax.random.PRNGKey(12)
    returns = {name: evaluate(make(name, env, 10, **hp), None, env, tasks, 10, key) for name, hp in BASELINE_HPARAMS.items()}
    return env, tasks, returns


@pytest.mark.slow  # the n10 fixture plays every baseline on 150 tasks (60 s); -m slow runs it
def test_every_baseline_beats_random_on_n10(n10):
    _, _, returns = n10
    random_total = returns["random"].sum(1)
    assert abs(random_total.mean() - 100.0) < 8  # RL²'s table: 100.1
    for name in BASELINE_HPARAMS:
        if name == "random":
            continue
        diff = returns[name].sum(1) - random_total
        # RL²'s table has every MDP baseline >= 132 at n=10
        assert diff.mean() > 20 and diff.mean() > 5 * diff.std() / np.sqrt(len(diff)), (name, diff.mean())


@pytest.mark.slow
def test_oracle_return_matches_value_iteration(n10):
    env, tasks, returns = n10
    v0 = np.asarray(jax.vmap(lambda t: finite_horizon_q_values(t.reward_mean, t.transitions, env.horizon)[0, 0].max())(tasks))
    gap = returns["oracle"].mean(1) - v0  # per task, mean over 10 episodes; expectation 0
    assert abs(gap.mean()) < 4 * gap.std() / np.sqrt(len(gap)), (gap.mean(), gap.std())
    oracle_total = returns["oracle"].sum(1).mean()
    assert all(oracle_total > returns[name].sum(1).mean() for name in BASELINE_HPARAMS if name != "oracle")


@pytest.mark.parametrize(
    "name, hp",
    [
        ("eps-greedy", {"eps": -0.1}),
        ("eps-greedy", {"eps": 1.5}),
        ("ucrl2", {"delta": 0.0}),
        ("ucrl2", {"delta": 1.0}),
        ("ucrl2", {"scaling": 0.0}),
        ("beb", {"beta": -1.0}),
        ("opsrl", {"samples": 0}),
        ("opsrl", {"samples": 2.5}),
    ],
)
def test_bad_hyperparameters_raise(name, hp):
    env = make_env("tabular-mdp")
    field = next(iter(hp))
    with pytest.raises(ConfigError, match=field):
        make(name, env, 10, **hp)


def test_tuned_defaults_nearest_setting():
    from metarl.baselines import tuned_defaults
    from metarl.baselines.mdp import TUNED_MDP

    env = make_env("tabular-mdp")
    assert tuned_defaults("beb", env, 10) == TUNED_MDP[10]["beb"]
    assert tuned_defaults("beb", env, 12) == TUNED_MDP[10]["beb"]
    assert tuned_defaults("ucrl2", env, 1000) == TUNED_MDP[100]["ucrl2"]
    assert make("eps-greedy", env, 30).eps == TUNED_MDP[25]["eps-greedy"]["eps"]
