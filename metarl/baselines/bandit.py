"""Classical bandit agents: Duan et al. 2016's (RL²) baselines and an Oracle.

Family `bandit` (Bernoulli arms, prior Beta(env.prior_a, env.prior_b)): greedy, eps-greedy,
ucb1, thompson, ots, gittins, oracle. Family `fixed-arm-bandit` (Gaussian arms, means ~ N(0, 1),
noise std env.noise_std, arm 0 known and noiseless): greedy, eps-greedy, ucb1, thompson, oracle.

Every agent is written for one trial (the evaluator vmaps it). Its carry holds the sufficient
statistics of the arms; `act` first adds the previous pull (`timestep.prev_action`,
`timestep.prev_reward`, skipped when `timestep.first`) and then chooses. Ties are broken
uniformly at random with the step's key.

Definitions follow the code that produced Duan et al.'s bandit table (rllab
`sandbox/rocky/neural_learner`, read for the facts, not copied):
- the Beta(1, 1) prior is counted in every estimate: greedy and eps-greedy use the posterior
  mean (s + a) / (n + a + b), so an untried arm's 0.5 beats an arm that just failed;
- UCB1 there also uses these pseudo-counts (`prior_counts=True` here); the textbook UCB1 (Auer
  et al. 2002: each arm once, then empirical mean + c sqrt(2 ln t / n_i)) is `prior_counts=False`;
- OTS there draws `samples` joint posterior samples and acts greedily on the most probable one
  (highest posterior density), `rule="most-probable"`. Two other readings of "optimistic TS"
  are available: `"max-sample"` (each arm's index is the largest of its samples) and
  `"mean-floor"` (each arm's index is max(posterior mean, largest sample); with samples=1 the
  OTS of Chapelle & Li 2011 / May et al. 2012);
- the grids tuned over: c in {0, 0.1, ..., 1}, eps in {0, 0.1, ..., 1}, OTS samples in
  {1, ..., 20}, Gittins discount in {0.9, 0.99, 0.999, 0.9999}.

Tuned defaults (`TUNED`) come from `benchmarks/tune_bandit_baselines.py` (results in
`benchmarks/results/tune_bandit.md`), one per RL² setting (n pulls, k arms); a setting not in
the table takes the values of the nearest tuned one in (log n, log k).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax.scipy.special import xlog1py, xlogy

from metarl.agents import Agent
from metarl.baselines.gittins import index_table
from metarl.baselines.registry import register
from metarl.envs.base import Environment
from metarl.envs.trial import TimeStep
from metarl.errors import ConfigError, check_float, check_int
from metarl.ops import sampling

__all__ = ["TUNED", "random_argmax", "tuned_hparams"]

# ---------------------------------------------------------------------------------------------
# Tuned defaults: (episodes n, arms k) -> baseline name -> hyperparameters. Written from
# benchmarks/results/tune_bandit.json (1000 tuning tasks per grid value, keys PRNGKey(1000 + i)).
TUNED: dict[tuple[int, int], dict[str, dict[str, Any]]] = {
    (10, 5): {"eps-greedy": {"eps": 0.01}, "ucb1": {"c": 0.1, "prior_counts": True}, "ots": {"samples": 10}, "gittins": {"discount": 0.9}},
    (10, 10): {"eps-greedy": {"eps": 0.0}, "ucb1": {"c": 0.0, "prior_counts": True}, "ots": {"samples": 10}, "gittins": {"discount": 0.9}},
    # ots: samples=20 from a follow-up beyond the scripted grid (see tune_bandit.md), which chose 1
    (10, 50): {"eps-greedy": {"eps": 0.0}, "ucb1": {"c": 0.1, "prior_counts": True}, "ots": {"samples": 20}, "gittins": {"discount": 0.9}},
    (100, 5): {"eps-greedy": {"eps": 0.01}, "ucb1": {"c": 0.2, "prior_counts": True}, "ots": {"samples": 10}, "gittins": {"discount": 0.99}},
    (100, 10): {"eps-greedy": {"eps": 0.01}, "ucb1": {"c": 0.2, "prior_counts": True}, "ots": {"samples": 10}, "gittins": {"discount": 0.99}},
    (100, 50): {"eps-greedy": {"eps": 0.01}, "ucb1": {"c": 0.2, "prior_counts": True}, "ots": {"samples": 5}, "gittins": {"discount": 0.99}},
    (500, 5): {"eps-greedy": {"eps": 0.05}, "ucb1": {"c": 0.2, "prior_counts": True}, "ots": {"samples": 5}, "gittins": {"discount": 0.999}},
    (500, 10): {"eps-greedy": {"eps": 0.05}, "ucb1": {"c": 0.2, "prior_counts": True}, "ots": {"samples": 10}, "gittins": {"discount": 0.99}},
    (500, 50): {"eps-greedy": {"eps": 0.05}, "ucb1": {"c": 0.2, "prior_counts": True}, "ots": {"samples": 5}, "gittins": {"discount": 0.999}},
}


def nearest_tuned_setting(episodes: int, arms: int) -> tuple[int, int]:
    """The tuned (n, k) closest to (episodes, arms) in (log n, log k); ties go to the smaller."""
    def distance(setting):
        n, k = setting
        return (math.log(n) - math.log(episodes)) ** 2 + (math.log(k) - math.log(arms)) ** 2, setting

    return min(TUNED, key=distance)


def tuned_hparams(name: str, env: Environment, episodes: int) -> dict[str, Any]:
    """Tuned hyperparameters of `name` for trials of `episodes` pulls of `env.arms` arms."""
    return dict(TUNED[nearest_tuned_setting(episodes, env.num_actions)].get(name, {}))


def _tuned(name: str):
    return lambda env, episodes: tuned_hparams(name, env, episodes)


# ---------------------------------------------------------------------------------------------
# Shared pieces


#: Marsaglia-Tsang proposals per Gamma of a posterior draw: a Beta(a, b) posterior here has a, b
#: >= min(prior_a, prior_b), and for every parameter >= 1 (and < 1, boosted) all three proposals
#: are rejected with probability <= sampling.fallback_probability(3) = 1.1e-4 (at exactly 1, an
#: untried arm under the uniform prior; 2.7e-6 at 2.5), when the draw is not exactly Beta.
POSTERIOR_PROPOSALS = 3


def random_argmax(key: jax.Array, values: jax.Array) -> jax.Array:
    """int32 index of a maximum of `values` [k], uniformly at random among ties."""
    ties = values >= jnp.max(values)
    return jnp.argmax(jnp.where(ties, jax.random.uniform(key, values.shape), -1.0)).astype(jnp.int32)


def _pulled(timestep: TimeStep, arms: int) -> jax.Array:
    """[arms] float32 one-hot of the previous pull (zeros at the first step of a trial)."""
    return jax.nn.one_hot(timestep.prev_action, arms, dtype=jnp.float32) * (~timestep.first).astype(jnp.float32)


@struct.dataclass
class BetaCounts:
    """Posterior statistics of Bernoulli arms: the posterior is Beta(prior_a + s, prior_b + f)."""

    successes: jax.Array  #: [arms] float32, s
    failures: jax.Array  #: [arms] float32, f


@struct.dataclass
class GaussianCounts:
    """Statistics of Gaussian arms."""

    counts: jax.Array  #: [arms] float32, pulls of each arm
    sums: jax.Array  #: [arms] float32, total reward of each arm


def _check_prob(owner, field, value):
    check_float(owner, field, value, low=0.0, high=1.0)


@dataclasses.dataclass(frozen=True)
class _BernoulliAgent(Agent):
    """Base of the Beta-Bernoulli agents: carry = `BetaCounts`; subclasses define `choose`."""

    def __post_init__(self):
        if self.env.name != "bandit":
            raise ConfigError(f"{self.name}: this class is for the 'bandit' family, got {self.env.name!r}")

    def init(self, key):
        zeros = jnp.zeros((self.env.num_actions,), jnp.float32)
        return BetaCounts(zeros, zeros)

    def update(self, carry: BetaCounts, timestep: TimeStep) -> BetaCounts:
        pulled = _pulled(timestep, self.env.num_actions)
        reward = jnp.asarray(timestep.prev_reward, jnp.float32)
        return BetaCounts(carry.successes + pulled * reward, carry.failures + pulled * (1.0 - reward))

    def posterior(self, carry: BetaCounts) -> tuple[jax.Array, jax.Array]:
        """([arms], [arms]) the Beta posterior's parameters."""
        return self.env.prior_a + carry.successes, self.env.prior_b + carry.failures

    def posterior_mean(self, carry: BetaCounts) -> jax.Array:
        a, b = self.posterior(carry)
        return a / (a + b)

    def sample_posterior(self, key: jax.Array, carry: BetaCounts, shape: tuple[int, ...]) -> jax.Array:
        """`shape` (ending in arms) float32 draws of the arms' means from the posterior."""
        a, b = self.posterior(carry)
        small = min(self.env.prior_a, self.env.prior_b) < 1.0  # static: counts only grow
        return sampling.beta(key, a, b, shape, proposals=POSTERIOR_PROPOSALS, small_alpha=small)

    def choose(self, key: jax.Array, carry: BetaCounts) -> jax.Array:
        raise NotImplementedError

    def act(self, params, carry, timestep, key):
        carry = self.update(carry, timestep)
        return self.choose(key, carry), carry


@dataclasses.dataclass(frozen=True)
class _GaussianAgent(Agent):
    """Base of the fixed-arm-bandit agents: carry = `GaussianCounts`.

    Bayesian posterior of arm i > 0 (prior N(0, 1), noise variance sigma^2): mean
    sum_i / (n_i + sigma^2), variance sigma^2 / (n_i + sigma^2). Arm 0 is known: mean
    env.fixed_mean, variance 0."""

    def __post_init__(self):
        if self.env.name != "fixed-arm-bandit":
            raise ConfigError(f"{self.name}: this class is for the 'fixed-arm-bandit' family, got {self.env.name!r}")

    def init(self, key):
        zeros = jnp.zeros((self.env.num_actions,), jnp.float32)
        return GaussianCounts(zeros, zeros)

    def update(self, carry: GaussianCounts, timestep: TimeStep) -> GaussianCounts:
        pulled = _pulled(timestep, self.env.num_actions)
        return GaussianCounts(carry.counts + pulled, carry.sums + pulled * timestep.prev_reward)

    def posterior(self, carry: GaussianCounts) -> tuple[jax.Array, jax.Array]:
        """([arms], [arms]) posterior mean and variance of each arm's mean."""
        noise_var = jnp.float32(self.env.noise_std**2)
        denom = carry.counts + noise_var
        seen = denom > 0  # false only for an unpulled arm when noise_std == 0
        mean = jnp.where(seen, carry.sums / jnp.where(seen, denom, 1.0), 0.0)
        var = jnp.where(seen, noise_var / jnp.where(seen, denom, 1.0), 1.0)
        known = jnp.arange(self.env.num_actions) == 0
        return jnp.where(known, self.env.fixed_mean, mean), jnp.where(known, 0.0, var)

    def choose(self, key: jax.Array, carry: GaussianCounts) -> jax.Array:
        raise NotImplementedError

    def act(self, params, carry, timestep, key):
        carry = self.update(carry, timestep)
        return self.choose(key, carry), carry


def _eps_greedy(key, eps, arms, greedy_values):
    key_explore, key_arm, key_tie = jax.random.split(key, 3)
    explore = jax.random.uniform(key_explore) < eps
    random_arm = jax.random.randint(key_arm, (), 0, arms, jnp.int32)
    return jnp.where(explore, random_arm, random_argmax(key_tie, greedy_values))


def _ucb1(key, c, means, counts, total):
    """UCB1 index mean + c sqrt(2 ln t / n_i) (arms with n_i = 0 first); arrays [arms]."""
    untried = counts <= 0
    bonus = c * jnp.sqrt(2.0 * jnp.log(jnp.maximum(total, 1.0)) / jnp.where(untried, 1.0, counts))
    return random_argmax(key, jnp.where(untried, jnp.inf, means + bonus))


# ---------------------------------------------------------------------------------------------
# Bernoulli bandit


@register("bandit")
@dataclasses.dataclass(frozen=True)
class Greedy(_BernoulliAgent):
    """Pulls the arm with the highest posterior mean (s + a) / (n + a + b)."""

    name = "greedy"

    def choose(self, key, carry):
        return random_argmax(key, self.posterior_mean(carry))


@register("bandit", tuned=_tuned("eps-greedy"))
@dataclasses.dataclass(frozen=True)
class EpsGreedy(_BernoulliAgent):
    """With probability eps a uniformly random arm, else the greedy arm."""

    name = "eps-greedy"
    eps: float = 0.1  #: probability of a uniformly random pull, in [0, 1]

    def __post_init__(self):
        super().__post_init__()
        _check_prob(self.name, "eps", self.eps)

    def choose(self, key, carry):
        return _eps_greedy(key, self.eps, self.env.num_actions, self.posterior_mean(carry))


@register("bandit", tuned=_tuned("ucb1"))
@dataclasses.dataclass(frozen=True)
class UCB1(_BernoulliAgent):
    """UCB1: mean_i + c sqrt(2 ln t / n_i), t the pulls so far.

    `prior_counts=False` (textbook, Auer et al. 2002): empirical means, every arm once first.
    `prior_counts=True` (Duan et al.'s code): the prior's pseudo-counts are added, mean
    (s + a) / (n + a + b) and n_i + a + b in the bonus, so no arm is ever 'untried'."""

    name = "ucb1"
    c: float = 1.0  #: exploration constant, >= 0 (0 is greedy)
    prior_counts: bool = False  #: count the Beta prior as pseudo-observations

    def __post_init__(self):
        super().__post_init__()
        check_float(self.name, "c", self.c, low=0.0)
        if not isinstance(self.prior_counts, bool):
            raise ConfigError(f"{self.name}: prior_counts must be true or false, got {self.prior_counts!r}")

    def choose(self, key, carry):
        pulls = carry.successes + carry.failures
        total = jnp.sum(pulls)
        if self.prior_counts:
            a, b = self.posterior(carry)
            return _ucb1(key, self.c, a / (a + b), a + b, total)
        means = carry.successes / jnp.maximum(pulls, 1.0)
        return _ucb1(key, self.c, means, pulls, total)


@register("bandit")
@dataclasses.dataclass(frozen=True)
class Thompson(_BernoulliAgent):
    """Thompson sampling: one draw from each arm's Beta posterior, pull the largest."""

    name = "thompson"

    def choose(self, key, carry):
        key_sample, key_tie = jax.random.split(key)
        return random_argmax(key_tie, self.sample_posterior(key_sample, carry, (self.env.num_actions,)))


OTS_RULES = ("most-probable", "max-sample", "mean-floor")


@register("bandit", tuned=_tuned("ots"))
@dataclasses.dataclass(frozen=True)
class OptimisticThompson(_BernoulliAgent):
    """Optimistic Thompson sampling with `samples` posterior draws per arm (see module doc).

    `rule="most-probable"` (Duan et al.'s definition): of `samples` joint draws theta [arms],
    keep the one with the highest posterior density and pull its largest arm."""

    name = "ots"
    samples: int = 5  #: posterior draws per step, >= 1
    rule: str = "most-probable"  #: one of OTS_RULES

    def __post_init__(self):
        super().__post_init__()
        check_int(self.name, "samples", self.samples, low=1)
        if self.rule not in OTS_RULES:
            raise ConfigError(f"{self.name}: rule must be one of {', '.join(OTS_RULES)}, got {self.rule!r}")

    def choose(self, key, carry):
        key_sample, key_tie = jax.random.split(key)
        a, b = self.posterior(carry)
        theta = self.sample_posterior(key_sample, carry, (self.samples, self.env.num_actions))  # [S, arms]
        if self.rule == "most-probable":
            # log density up to the constant -log B(a, b), which is the same for every draw
            log_density = jnp.sum(xlogy(a - 1.0, theta) + xlog1py(b - 1.0, -theta), axis=1)  # [S]
            index = theta[jnp.argmax(log_density)]
        elif self.rule == "max-sample":
            index = jnp.max(theta, axis=0)
        else:
            index = jnp.maximum(jnp.max(theta, axis=0), a / (a + b))
        return random_argmax(key_tie, index)


@register("bandit", tuned=_tuned("gittins"))
@dataclasses.dataclass(frozen=True)
class Gittins(_BernoulliAgent):
    """Gittins index policy for Bernoulli arms with the Beta prior and discount `discount`:
    pulls the arm with the largest index[s_i, f_i] (table from `metarl.baselines.gittins`,
    computed on the host once per (prior, discount, episodes) and cached)."""

    name = "gittins"
    discount: float = 0.99  #: discount of the index, in (0, 1)

    def __post_init__(self):
        super().__post_init__()
        check_float(self.name, "discount", self.discount, low=0.0, high=1.0, low_open=True, high_open=True)

    def table(self) -> jax.Array:
        """[episodes, episodes] float32 index table (numpy, embedded as a constant under jit)."""
        return index_table(float(self.env.prior_a), float(self.env.prior_b), float(self.discount), self.episodes)

    def choose(self, key, carry):
        table = jnp.asarray(self.table())
        last = self.episodes - 1
        s = jnp.clip(carry.successes.astype(jnp.int32), 0, last)
        f = jnp.clip(carry.failures.astype(jnp.int32), 0, last)
        return random_argmax(key, table[s, f])


@register("bandit", "fixed-arm-bandit")
@dataclasses.dataclass(frozen=True)
class Oracle(Agent):
    """Knows the task (privileged: the evaluator passes it as `params`) and always pulls the arm
    with the highest expected reward."""

    name = "oracle"
    privileged = True

    def init(self, key):
        return ()

    def act(self, params, carry, timestep, key):
        return random_argmax(key, self.env.expected_reward(params)), carry


# ---------------------------------------------------------------------------------------------
# Fixed-arm bandit (Gaussian arms)


@register("fixed-arm-bandit")
@dataclasses.dataclass(frozen=True)
class GaussianGreedy(_GaussianAgent):
    """Pulls the arm with the highest posterior mean (arm 0: its known mean)."""

    name = "greedy"

    def choose(self, key, carry):
        return random_argmax(key, self.posterior(carry)[0])


@register("fixed-arm-bandit")
@dataclasses.dataclass(frozen=True)
class GaussianEpsGreedy(_GaussianAgent):
    """With probability eps a uniformly random arm, else the greedy arm."""

    name = "eps-greedy"
    eps: float = 0.1  #: probability of a uniformly random pull, in [0, 1]

    def __post_init__(self):
        super().__post_init__()
        _check_prob(self.name, "eps", self.eps)

    def choose(self, key, carry):
        return _eps_greedy(key, self.eps, self.env.num_actions, self.posterior(carry)[0])


@register("fixed-arm-bandit")
@dataclasses.dataclass(frozen=True)
class GaussianUCB1(_GaussianAgent):
    """Textbook UCB1 on empirical means: every arm once, then mean_i + c sqrt(2 ln t / n_i)."""

    name = "ucb1"
    c: float = 1.0  #: exploration constant, >= 0

    def __post_init__(self):
        super().__post_init__()
        check_float(self.name, "c", self.c, low=0.0)

    def choose(self, key, carry):
        means = carry.sums / jnp.maximum(carry.counts, 1.0)
        return _ucb1(key, self.c, means, carry.counts, jnp.sum(carry.counts))


@register("fixed-arm-bandit")
@dataclasses.dataclass(frozen=True)
class GaussianThompson(_GaussianAgent):
    """Thompson sampling from the Gaussian posteriors (arm 0's known mean is its own sample)."""

    name = "thompson"

    def choose(self, key, carry):
        key_sample, key_tie = jax.random.split(key)
        mean, var = self.posterior(carry)
        theta = mean + jnp.sqrt(var) * jax.random.normal(key_sample, mean.shape)
        return random_argmax(key_tie, theta)
