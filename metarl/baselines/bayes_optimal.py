"""The Bayes-optimal expected total reward of a Bernoulli bandit trial, by exact dynamic programming.

A trial is `pulls` pulls of `arms` Bernoulli arms whose success probabilities are drawn i.i.d. from
Beta(prior_a, prior_b) (the `bandit` family). The Bayes-optimal agent maximises the expected total
reward under that prior; its value is the ceiling for every agent's mean total return on the
family, RL²'s included, so the evaluator's 1000-task means can only exceed it by sampling noise.

Backward induction over belief states: a state is the multiset of (successes, failures) of the arms
pulled so far (arms are exchangeable, so their order does not matter, and every unpulled arm has
the same prior), pulling an arm in (s, f) pays 1 with probability (prior_a + s) / (prior_a + prior_b
+ s + f). The number of states grows quickly with `pulls` (1,951 for 5 arms and 10 pulls, far too
many for 100 pulls), so `max_states` refuses problems that would not finish.

`bernoulli_bayes_optimal(arms, pulls)` returns the value, the standard deviation of the optimal
agent's total reward over tasks (for the noise of a finite-task mean; among actions tied for the
best value it follows the first found), and the number of belief states solved."""

from __future__ import annotations

import dataclasses

from metarl.errors import ConfigError, check_float, check_int

__all__ = ["BayesOptimal", "bernoulli_bayes_optimal"]


@dataclasses.dataclass(frozen=True)
class BayesOptimal:
    value: float  #: expected total reward of the Bayes-optimal agent over the prior
    std: float  #: standard deviation of its total reward over tasks and outcomes
    states: int  #: belief states solved


def bernoulli_bayes_optimal(
    arms: int, pulls: int, prior_a: float = 1.0, prior_b: float = 1.0, max_states: int = 2_000_000
) -> BayesOptimal:
    """The Bayes-optimal agent's expected total reward (and its spread) on `pulls` pulls of `arms`
    Bernoulli arms with a Beta(prior_a, prior_b) prior. Raises `ConfigError` for bad arguments or
    when more than `max_states` belief states would be needed."""
    owner = "bernoulli_bayes_optimal"
    check_int(owner, "arms", arms, low=1)
    check_int(owner, "pulls", pulls, low=0)
    check_float(owner, "prior_a", prior_a, low=0.0, low_open=True)
    check_float(owner, "prior_b", prior_b, low=0.0, low_open=True)
    check_int(owner, "max_states", max_states, low=1)

    memo: dict[tuple, tuple[float, float]] = {}

    def solve(state: tuple, remaining: int) -> tuple[float, float]:
        """(E[G], E[G^2]) of the future total reward G from `state` with `remaining` pulls left."""
        if remaining == 0:
            return 0.0, 0.0
        key = state  # the pulls left are `pulls` minus the pulls the state counts
        hit = memo.get(key)
        if hit is not None:
            return hit
        if len(memo) >= max_states:
            raise ConfigError(
                f"{owner}: {arms} arms and {pulls} pulls need more than max_states={max_states:,} belief states; "
                "exact dynamic programming is only practical for short trials (e.g. 10 pulls)"
            )
        best = None
        candidates = sorted(set(state)) + ([None] if len(state) < arms else [])
        for arm in candidates:
            rest = list(state)
            if arm is None:
                s, f = 0, 0
            else:
                s, f = arm
                rest.remove(arm)
            p = (prior_a + s) / (prior_a + prior_b + s + f)
            v1, w1 = solve(tuple(sorted(rest + [(s + 1, f)])), remaining - 1)
            v0, w0 = solve(tuple(sorted(rest + [(s, f + 1)])), remaining - 1)
            value = p * (1.0 + v1) + (1.0 - p) * v0
            if best is None or value > best[0] + 1e-12:
                second = p * (1.0 + 2.0 * v1 + w1) + (1.0 - p) * w0  # E[(r + G')^2]
                best = (value, second)
        memo[key] = best
        return best

    value, second = solve((), pulls)
    return BayesOptimal(value=value, std=max(second - value * value, 0.0) ** 0.5, states=len(memo))
