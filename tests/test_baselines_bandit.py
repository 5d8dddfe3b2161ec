"""Classical bandit baselines (metarl/baselines/bandit.py): behaviour against hand-worked answers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from metarl import baselines
from metarl.baselines.bandit import TUNED, BetaCounts, GaussianCounts, nearest_tuned_setting
from metarl.envs.registry import make as make_env
from metarl.envs.trial import TimeStep, Trial
from metarl.errors import ConfigError
from metarl.eval.evaluate import evaluate

BANDIT_AGENTS = ["greedy", "eps-greedy", "ucb1", "thompson", "ots", "gittins", "oracle"]


def _timestep(prev_action=0, prev_reward=0.0, first=False):
    obs = jnp.ones((1,), jnp.float32)
    return TimeStep(obs, jnp.int32(prev_action), jnp.float32(prev_reward), jnp.bool_(True), jnp.int32(0),
                    jnp.int32(0), jnp.bool_(first), obs, jnp.zeros((0,), jnp.float32))


def _choice_frequencies(agent, carry, timestep, draws=20000, params=None):
    """[arms] frequency of each action over `draws` independent keys."""
    keys = jax.random.split(jax.random.PRNGKey(7), draws)
    actions = jax.jit(jax.vmap(lambda k: agent.act(params, carry, timestep, k)[0]))(keys)
    return np.bincount(np.asarray(actions), minlength=agent.env.num_actions) / draws


def _binomial_tolerance(p, draws=20000):
    return 5 * np.sqrt(p * (1 - p) / draws) + 1e-3


def test_registry_has_every_agent_per_family():
    assert set(BANDIT_AGENTS) <= set(baselines.names("bandit"))
    assert {"greedy", "eps-greedy", "ucb1", "thompson", "oracle"} <= set(baselines.names("fixed-arm-bandit"))
    assert not {"ots", "gittins"} & set(baselines.names("fixed-arm-bandit"))
    assert baselines.baseline_class("greedy", "bandit") is not baselines.baseline_class("greedy", "fixed-arm-bandit")


def test_tuned_defaults_come_from_the_nearest_setting():
    assert nearest_tuned_setting(100, 5) == (100, 5)
    assert nearest_tuned_setting(150, 7) == (100, 5)  # log-distance: 7 is nearer 5 than 10
    assert nearest_tuned_setting(1000, 100) == (500, 50)
    env = make_env("bandit", arms=7)
    tuned = baselines.tuned_defaults("ucb1", env, 150)
    assert tuned == TUNED[(100, 5)]["ucb1"]
    assert baselines.make("ucb1", env, 150, c=0.5).c == 0.5  # explicit values win


@pytest.mark.parametrize(
    "name, hparams, field",
    [("eps-greedy", {"eps": 1.5}, "eps"), ("eps-greedy", {"eps": -0.1}, "eps"), ("ucb1", {"c": -1.0}, "c"),
     ("gittins", {"discount": 0.0}, "discount"), ("gittins", {"discount": 1.0}, "discount"),
     ("gittins", {"discount": 1.2}, "discount"), ("ots", {"samples": 0}, "samples"),
     ("ots", {"samples": 2.5}, "samples"), ("ots", {"rule": "best"}, "rule"),
     ("ucb1", {"prior_counts": "yes"}, "prior_counts")],
)
def test_bad_hyperparameters_raise(name, hparams, field):
    with pytest.raises(ConfigError, match=field):
        baselines.make(name, make_env("bandit", arms=5), 100, **hparams)
    if name in ("eps-greedy", "ucb1") and field != "prior_counts":
        with pytest.raises(ConfigError, match=field):
            baselines.make(name, make_env("fixed-arm-bandit", arms=5), 100, **hparams)


def test_greedy_picks_the_posterior_argmax_of_a_hand_made_history():
    env = make_env("bandit", arms=3)
    agent = baselines.make("greedy", env, 10)
    # posterior means with Beta(1, 1): (1+1)/(1+2) = 2/3, 1/2, (2+1)/(5+2) = 3/7
    carry = BetaCounts(jnp.array([1.0, 0.0, 2.0]), jnp.array([0.0, 0.0, 3.0]))
    assert np.allclose(_choice_frequencies(agent, carry, _timestep(first=True), 2000), [1, 0, 0])
    # the previous pull (arm 1 paid 1) is counted first: arm 1 ties arm 0 at 2/3, ties are fair
    freq = _choice_frequencies(agent, carry, _timestep(prev_action=1, prev_reward=1.0))
    assert freq[2] == 0 and abs(freq[0] - 0.5) < _binomial_tolerance(0.5)
    # at the first step of a trial prev_* are ignored even if set
    action, new_carry = agent.act(None, carry, _timestep(prev_action=2, prev_reward=1.0, first=True), jax.random.PRNGKey(0))
    assert np.array_equal(new_carry.successes, carry.successes) and int(action) == 0


def test_eps_greedy_known_answer():
    env = make_env("bandit", arms=4)
    agent = baselines.make("eps-greedy", env, 10, eps=0.3)
    carry = BetaCounts(jnp.array([0.0, 1.0, 3.0, 0.0]), jnp.array([2.0, 1.0, 0.0, 0.0]))  # greedy arm: 2
    freq = _choice_frequencies(agent, carry, _timestep(first=True))
    expected = np.array([0.075, 0.075, 0.7 + 0.075, 0.075])  # 1 - eps + eps / k on the greedy arm
    assert np.all(np.abs(freq - expected) < _binomial_tolerance(expected))


def test_thompson_and_ots_known_answers():
    env = make_env("bandit", arms=2)
    # arm 0 ~ Beta(2, 1), arm 1 ~ Beta(1, 2)
    carry = BetaCounts(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))
    ts = _timestep(first=True)
    # Thompson: P(X > Y) = int 2x (1 - (1 - x)^2) dx = 5/6
    p_ts = 5 / 6
    for agent in (baselines.make("thompson", env, 10), baselines.make("ots", env, 10, samples=1)):
        assert abs(_choice_frequencies(agent, carry, ts)[0] - p_ts) < _binomial_tolerance(p_ts)
    # OTS "max-sample" with 3 samples: arm 0's index has CDF x^6, arm 1's (1 - (1 - y)^2)^3
    p_max = scipy.integrate.quad(lambda x: 6 * x**5 * (1 - (1 - x) ** 2) ** 3, 0, 1)[0]
    freq = _choice_frequencies(baselines.make("ots", env, 10, samples=3, rule="max-sample"), carry, ts)
    assert abs(freq[0] - p_max) < _binomial_tolerance(p_max)
    # OTS "mean-floor", 1 sample: indices max(X, 2/3) and max(Y, 1/3); arm 1 wins iff Y > max(X, 2/3)
    p_floor = 1 - scipy.integrate.quad(lambda y: 2 * (1 - y) * scipy.stats.beta(2, 1).cdf(y), 2 / 3, 1)[0]
    freq = _choice_frequencies(baselines.make("ots", env, 10, samples=1, rule="mean-floor"), carry, ts)
    assert abs(freq[0] - p_floor) < _binomial_tolerance(p_floor)
    # OTS "most-probable" keeps the draw of highest density 4x(1 - y): with many samples that is a
    # draw with x large and y small, so arm 0 is chosen more often than by Thompson sampling
    freq = _choice_frequencies(baselines.make("ots", env, 10, samples=20), carry, ts)
    assert freq[0] > p_ts + 0.1


def test_gittins_prefers_the_unknown_arm_greedy_does_not_distinguish():
    env = make_env("bandit", arms=3)
    # states (0, 0), (1, 1), (2, 2): posterior mean 1/2 each; Gittins(0.9) 0.7029 > 0.6346 > 0.6010
    carry = BetaCounts(jnp.array([1.0, 2.0, 0.0]), jnp.array([1.0, 2.0, 0.0]))
    freq = _choice_frequencies(baselines.make("gittins", env, 10, discount=0.9), carry, _timestep(first=True), 500)
    assert np.allclose(freq, [0, 0, 1])


def _actions(agent, env, task, episodes, key):
    """[episodes] int32 actions of one trial (and the rewards), with `agent` acting on `task`."""
    trial = Trial(env, episodes)

    @jax.jit
    def run(key):
        key_reset, key_init, key_loop = jax.random.split(key, 3)
        timestep, state = trial.reset(key_reset, task)

        def body(loop, k):
            timestep, state, carry = loop
            key_act, key_env = jax.random.split(k)
            action, carry = agent.act(task if agent.privileged else None, carry, timestep, key_act)
            timestep, state, reward, _ = trial.step(key_env, state, action)
            return (timestep, state, carry), (action, reward)

        _, out = jax.lax.scan(body, (timestep, state, agent.init(key_init)), jax.random.split(key_loop, trial.num_steps))
        return out

    return run(key)


def test_ucb1_first_k_pulls_try_every_arm_once():
    env = make_env("bandit", arms=6)
    agent = baselines.make("ucb1", env, 20, c=1.0, prior_counts=False)
    task = env.sample_task(jax.random.PRNGKey(3))
    for seed in range(3):
        actions, _ = _actions(agent, env, task, 20, jax.random.PRNGKey(seed))
        assert sorted(np.asarray(actions[:6]).tolist()) == list(range(6))


@functools.lru_cache(maxsize=None)
def _scores(family, arms, episodes, num_tasks=200):
    """name -> [tasks] total reward, every bandit agent at its tuned defaults, same tasks and key."""
    env = make_env(family, arms=arms)
    tasks = env.sample_tasks(jax.random.PRNGKey(11), num_tasks)
    names = ["random"] + [n for n in BANDIT_AGENTS if n in baselines.names(family)]
    out = {}
    for name in names:
        agent = baselines.make(name, env, episodes)
        out[name] = evaluate(agent, None, env, tasks, episodes, jax.random.PRNGKey(12)).sum(axis=1)
    return out, np.asarray(env.expected_reward(tasks))


def test_oracle_total_is_n_times_max_p():
    scores, means = _scores("bandit", 5, 100)
    best = means.max(axis=1)
    # per task the Oracle's total is Binomial(100, max p): its mean over tasks vs 100 * max p
    sd = np.sqrt(np.sum(100 * best * (1 - best))) / len(best)
    assert abs(scores["oracle"].mean() - 100 * best.mean()) < 4 * sd


@pytest.mark.parametrize("name", [n for n in BANDIT_AGENTS if n != "oracle"])
def test_every_agent_beats_random_by_a_real_margin(name):
    scores, _ = _scores("bandit", 5, 100)
    # Duan et al.: random 49.9, the weakest baseline (TS) 74.7 at n=100, k=5
    difference = scores[name] - scores["random"]
    assert difference.mean() - 4 * difference.std(ddof=1) / np.sqrt(len(difference)) > 15.0


def test_fixed_arm_bandit_agents():
    env = make_env("fixed-arm-bandit", arms=4, fixed_mean=0.5, noise_std=0.5)
    greedy = baselines.make("greedy", env, 10)
    # fresh: the unknown arms' prior mean 0 is below the known 0.5, so greedy pulls arm 0
    carry = greedy.init(jax.random.PRNGKey(0))
    assert int(greedy.act(None, carry, _timestep(first=True), jax.random.PRNGKey(0))[0]) == 0
    # arm 3 pulled twice with total 2.0: posterior mean 2 / (2 + 0.25) = 0.889 > 0.5
    carry = GaussianCounts(jnp.array([0.0, 0.0, 0.0, 1.0]), jnp.array([0.0, 0.0, 0.0, 1.0]))
    mean, var = greedy.posterior(greedy.update(carry, _timestep(prev_action=3, prev_reward=1.0)))
    assert np.allclose(mean, [0.5, 0.0, 0.0, 2 / 2.25]) and np.allclose(var, [0.0, 1.0, 1.0, 0.25 / 2.25])
    # Thompson: arm 0 (known 0.5) vs three N(0, 1) arms: P(arm 0) = P(all three < 0.5) = Phi(0.5)^3
    p0 = scipy.stats.norm.cdf(0.5) ** 3
    thompson = baselines.make("thompson", env, 10)
    freq = _choice_frequencies(thompson, thompson.init(jax.random.PRNGKey(0)), _timestep(first=True))
    assert abs(freq[0] - p0) < _binomial_tolerance(p0)
    # the Oracle reads the task and pulls its best arm
    oracle = baselines.make("oracle", env, 10)
    task = env.sample_task(jax.random.PRNGKey(5))
    freq = _choice_frequencies(oracle, (), _timestep(first=True), 100, params=task)
    assert freq[int(np.argmax(np.asarray(task.means)))] == 1.0

