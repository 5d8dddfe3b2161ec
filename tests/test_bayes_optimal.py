"""The Bayes-optimal value of Bernoulli bandit trials against hand-worked cases."""

import math

import pytest

from metarl.baselines.bayes_optimal import bernoulli_bayes_optimal
from metarl.errors import ConfigError


def test_one_arm_is_a_beta_binomial():
    # One arm: every policy pulls it; the total is Beta-binomial(n, a, b).
    n, a, b = 3, 2.0, 1.0
    r = bernoulli_bayes_optimal(1, n, a, b)
    assert r.value == pytest.approx(n * a / (a + b))
    var = n * a * b * (a + b + n) / ((a + b) ** 2 * (a + b + 1))
    assert r.std == pytest.approx(math.sqrt(var))


def test_two_arms_two_pulls_by_hand():
    # Pull arm 1 (pays 1/2). After a success (prob 1/2) pull it again (posterior mean 2/3); after a
    # failure switch to the fresh arm (1/2 > 1/3). Value 1/2 + 1/2 * 2/3 + 1/2 * 1/2 = 13/12.
    # Totals: 2 w.p. 1/2 * 2/3, 1 w.p. 1/2 * 1/3 + 1/2 * 1/2, so E[G^2] = 4/3 + 5/12 = 7/4.
    r = bernoulli_bayes_optimal(2, 2)
    assert r.value == pytest.approx(13 / 12)
    assert r.std == pytest.approx(math.sqrt(7 / 4 - (13 / 12) ** 2))
    assert bernoulli_bayes_optimal(3, 0).value == 0.0


def test_rl2_settings_lie_between_gittins_and_the_oracle():
    # More arms help; nothing beats knowing the best arm (E[max of k uniforms] = k / (k + 1) a pull),
    # and the optimum is at least the Gittins-index agent's value measured by the evaluator
    # (benchmarks/results/rl2.json: 6.62 on 1000 tasks, standard error ~0.06).
    v5, v10 = bernoulli_bayes_optimal(5, 10), bernoulli_bayes_optimal(10, 10)
    assert 6.55 < v5.value < v10.value < 10 * 10 / 11
    assert v5.value < 10 * 5 / 6
    assert 0 < v5.states < 5000
    assert 1.5 < v5.std < 3.0


def test_bad_arguments_and_too_large_problems_are_refused():
    with pytest.raises(ConfigError, match="arms"):
        bernoulli_bayes_optimal(0, 10)
    with pytest.raises(ConfigError, match="prior_a"):
        bernoulli_bayes_optimal(5, 10, prior_a=0.0)
    with pytest.raises(ConfigError, match="max_states"):
        bernoulli_bayes_optimal(5, 100, max_states=1000)
