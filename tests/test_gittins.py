"""Gittins index tables (metarl/baselines/gittins.py) against published values and first principles."""

import numpy as np
import pytest

from metarl.baselines.gittins import index_table
from metarl.errors import ConfigError

# Published Gittins indices of a Bernoulli arm with a uniform Beta(1, 1) prior, after `wins`
# successes and `losses` failures, to 4 decimals. Source: the tables of Gittins, Glazebrook &
# Weber, "Multi-armed Bandit Allocation Indices", 2nd ed. (Wiley 2011), as reproduced in
# B. Christian & T. Griffiths, "Algorithms to Live By" (2016), ch. 2 "Explore/Exploit", tables
# "Gittins index values as a function of wins and losses" for discounts 0.9 and 0.99; the
# values quoted in its text are 0-0: 0.7029, 1-1: 0.6346, 2-2: 0.6010, 9 wins 1 loss: 0.8695,
# 9 wins 6 losses (the "more-played machine" at 60%): 0.6300, and 0-0 at discount 0.99: 0.8699.
PUBLISHED = [
    (0.9, 0, 0, 0.7029),
    (0.9, 1, 1, 0.6346),
    (0.9, 2, 2, 0.6010),
    (0.9, 9, 1, 0.8695),
    (0.9, 9, 6, 0.6300),
    (0.99, 0, 0, 0.8699),
]


@pytest.mark.parametrize("discount, wins, losses, published", PUBLISHED)
def test_index_matches_published_table(discount, wins, losses, published):
    table = index_table(1.0, 1.0, discount, 16)
    # published values are rounded to 4 decimals: allow the rounding plus 5e-5
    assert abs(float(table[wins, losses]) - published) <= 1e-4


def _index_by_bisection(a, b, discount, depth=200, iters=40):
    """The index of Beta(a, b) from its definition, independently of the table code: bisect on the
    retirement reward lambda, solving the retire-or-pull problem for each lambda by recursion on
    the posterior states up to `depth` further pulls (then the mean is taken as known)."""

    def pull_advantage(lam):
        retire = lam / (1 - discount)
        # value[j] = value of the state with j more successes among the pulls so far
        value = None
        for m in range(depth, -1, -1):
            p = (a + np.arange(m + 1)) / (a + b + m)
            if value is None:
                value = np.maximum(lam, p) / (1 - discount)
                continue
            pull = p * (1 + discount * value[1:]) + (1 - p) * discount * value[:-1]
            if m == 0:
                return pull[0] - retire
            value = np.maximum(pull, retire)

    lo, hi = a / (a + b), 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if pull_advantage(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("prior_a, prior_b, discount, s, f", [(1.0, 1.0, 0.9, 0, 0), (1.0, 1.0, 0.9, 3, 1),
                                                              (0.5, 2.0, 0.8, 1, 4), (2.0, 1.0, 0.95, 0, 2)])
def test_index_matches_definition(prior_a, prior_b, discount, s, f):
    table = index_table(prior_a, prior_b, discount, 8)
    assert float(table[s, f]) == pytest.approx(_index_by_bisection(prior_a + s, prior_b + f, discount), abs=2e-5)


def test_index_properties():
    table = index_table(1.0, 1.0, 0.95, 30).astype(np.float64)
    s, f = np.indices(table.shape)
    valid = s + f < 30
    mean = (1 + s) / (2 + s + f)
    # an unknown arm is worth more than its mean (the value of information), and less than 1
    assert np.all(table[valid] > mean[valid]) and np.all(table[valid] < 1)
    # a success raises the index, a failure lowers it
    inner = (s + f < 29)[:-1, :-1]
    assert np.all(np.diff(table, axis=0)[:, :-1][inner] > 0)
    assert np.all(np.diff(table, axis=1)[:-1, :][inner] < 0)
    # a more patient player values exploration more
    assert np.all(index_table(1.0, 1.0, 0.99, 30)[valid] > table[valid])


def test_table_is_cached_and_read_only():
    first = index_table(1.0, 1.0, 0.9, 16)
    assert index_table(1.0, 1.0, 0.9, 16) is first
    assert not first.flags.writeable


@pytest.mark.parametrize("discount", [0.0, 1.0, 1.5, -0.1])
def test_bad_discount_raises(discount):
    with pytest.raises(ConfigError, match="discount"):
        index_table(1.0, 1.0, discount, 8)
