"""Gittins indices of a Bernoulli arm with a Beta prior, by calibration (retirement reward).

For a retirement reward lambda (a safe arm paying lambda every step), the one-armed problem
"pull the unknown arm or retire for good" is solved by backward induction over the arm's
posterior states Beta(prior_a + s, prior_b + f). The Gittins index of a state is the lambda at
which pulling once more and retiring are equally good (Gittins, Glazebrook & Weber,
"Multi-armed Bandit Allocation Indices", 2nd ed., 2011, ch. 8). All states and a grid of
lambdas are solved at once, one posterior diagonal (s + f = n) at a time, in numpy on the host;
the crossing lambda is linearly interpolated between grid points (the continuation advantage
is strictly decreasing in lambda, so the crossing is unique). States at the truncation depth
take the value of a known arm, max(lambda, p) / (1 - discount) with p the posterior mean.

`index_table(prior_a, prior_b, discount, size)` returns a float32 [size, size] table,
`table[s, f]` the index after s successes and f failures (valid where s + f < size; other
entries are 1, never chosen, never reached within a trial of `size` pulls). Tables are cached.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from metarl.errors import check_float, check_int

__all__ = ["index_table", "truncation_depth"]


def truncation_depth(discount: float, size: int) -> int:
    """Posterior depth (s + f) at which the induction starts: `size` plus enough further steps
    that discount**extra < 1e-4, capped at 500 extra steps (the cap matters for discount > 0.98:
    there the known-arm value at the truncation is a lower bound that ignores the value of
    further information, as in Duan et al. 2016's table, which truncated at 1000 pulls)."""
    extra = math.ceil(math.log(1e-4) / math.log(discount))
    return size + int(min(max(extra, 20), 500))


@functools.lru_cache(maxsize=32)
def index_table(
    prior_a: float, prior_b: float, discount: float, size: int, grid: int = 501, depth: int | None = None
) -> np.ndarray:
    """[size, size] float32 Gittins indices, `table[s, f]` for s successes and f failures.

    `grid`: number of retirement rewards in [0, 1]. With the default the interpolated index is
    accurate to about 1e-5 for states with few pulls (checked against published tables in
    tests/test_gittins.py) and to about 1e-3 for extreme states (s or f near `size`), where the
    advantage is most curved in lambda; `depth`: truncation depth (default `truncation_depth`)."""
    check_float("gittins", "prior_a", prior_a, low=0.0, low_open=True)
    check_float("gittins", "prior_b", prior_b, low=0.0, low_open=True)
    check_float("gittins", "discount", discount, low=0.0, high=1.0, low_open=True, high_open=True)
    check_int("gittins", "size", size, low=1)
    check_int("gittins", "grid", grid, low=3)
    depth = truncation_depth(discount, size) if depth is None else depth
    check_int("gittins", "depth", depth, low=size)

    retirement = np.linspace(0.0, 1.0, grid)  # [G] lambda
    retire_value = retirement / (1.0 - discount)  # [G] value of retiring now
    table = np.ones((size, size), np.float64)

    # Values at the truncation depth: the arm's mean taken as known.
    successes = np.arange(depth + 1)
    mean = (prior_a + successes) / (prior_a + prior_b + depth)
    value = np.maximum(retirement[None, :], mean[:, None]) / (1.0 - discount)  # [depth + 1, G]
    for n in range(depth - 1, -1, -1):
        successes = np.arange(n + 1)
        mean = ((prior_a + successes) / (prior_a + prior_b + n))[:, None]  # [n + 1, 1]
        # value[s] is the state (s, n + 1 - s) of the next diagonal
        pull_value = mean * (1.0 + discount * value[1 : n + 2]) + (1.0 - mean) * discount * value[: n + 1]
        if n < size:
            advantage = pull_value - retire_value[None, :]  # [n + 1, G], strictly decreasing
            cross = np.argmax(advantage <= 0.0, axis=1)  # first grid point where retiring wins
            cross = np.maximum(cross, 1)
            rows = np.arange(n + 1)
            hi, lo = advantage[rows, cross], advantage[rows, cross - 1]
            step = retirement[1] - retirement[0]
            index = retirement[cross - 1] + step * lo / np.maximum(lo - hi, 1e-300)
            table[successes, n - successes] = index
        value = np.maximum(pull_value, retire_value[None, :])
    table = table.astype(np.float32)
    table.setflags(write=False)
    return table
