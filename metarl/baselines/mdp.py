"""Classical in-context agents for random tabular MDPs (RL²'s MDP table, Duan et al. 2016).

Every agent here is model based: it keeps counts of what it saw in the trial (visits n(s, a),
reward sums, transition counts n(s, a, s')), plans by finite-horizon value iteration over the H
steps of an episode, caches the plan as action values Q[h, s, a] and acts greedily with respect to
them (ties broken uniformly at random). The plan is recomputed only at the start of each episode
(`timestep.step_index == 0`), as in the papers.

Agents (registered for family "tabular-mdp"):

- `greedy`: plans on the posterior-mean MDP.
- `eps-greedy`: `greedy`, but acts uniformly at random with probability `eps`.
- `psrl` (Osband et al. 2013): samples one MDP from the posterior per episode, plans on it.
- `opsrl` (optimistic PSRL, Osband & Van Roy's TabulaRL `OptimisticPSRL`, the variant RL² compares
  to): samples `samples` MDPs per episode, solves each, and acts on the optimistic envelope
  Q[h, s, a] = max_k Q_k[h, s, a].
- `ucrl2` (Jaksch et al. 2010): extended value iteration, i.e. optimistic planning over the
  confidence set {r: |r - r_hat| <= conf_r} x {p: ||p - p_hat||_1 <= conf_p} of each (s, a).
- `beb` (Bayesian exploration bonus, Kolter & Ng 2009): posterior-mean MDP with the reward bonus
  beta / (1 + n(s, a)).
- `oracle`: privileged; value iteration on the true task.

The posterior uses the family's own prior, which every agent reads from `self.env`:
mu(s, a) ~ N(reward_mean, reward_mean_std^2) with known reward noise reward_noise_std (Normal-Normal),
P(.|s, a) ~ Dirichlet(dirichlet_alpha) (Dirichlet-categorical). UCRL2 uses the empirical MDP instead
(it is a frequentist method).

Counting: the transition of the previous step is (s_prev, prev_action, prev_reward, s_next) with
s_next = argmax(outcome_obs); at an episode boundary `obs` is already the reset state but
`outcome_obs` is where the last action led, so the last transition of every episode is counted.

Tuned defaults: `TUNED_MDP` below holds the hyperparameters chosen per trial length n by
`benchmarks/tune_mdp_baselines.py` (grid search on tuning tasks drawn with seeds 1000 + i, never the
evaluation seed 0); see `benchmarks/results/tune_mdp.md`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from metarl.agents import Agent
from metarl.baselines.registry import register
from metarl.envs.base import Environment
from metarl.errors import ConfigError, check_float, check_int
from metarl.ops import sampling

__all__ = [
    "MDPCounts",
    "MDPPlannerCarry",
    "finite_horizon_q_values",
    "extended_value_iteration",
    "update_counts",
    "posterior_mean_mdp",
    "sample_posterior_mdp",
    "TUNED_MDP",
    "tuned_mdp_hparams",
    "GreedyMDP",
    "EpsGreedyMDP",
    "PSRL",
    "OPSRL",
    "UCRL2",
    "BEB",
    "OracleMDP",
]


# ---------------------------------------------------------------------------------------------
# Tuned defaults (written from benchmarks/results/tune_mdp.json; see that file for the search)
# ---------------------------------------------------------------------------------------------

#: n (episodes per trial) -> baseline name -> hyperparameters chosen by the grid search in (500 tuning tasks)
#: `benchmarks/tune_mdp_baselines.py` for S=10, A=5, H=10. Settings not in the table take the
#: entry of the nearest n (ties go to the smaller n).
TUNED_MDP: dict[int, dict[str, dict[str, Any]]] = {
    10: {"eps-greedy": {"eps": 0.0}, "psrl": {"reward_prior_mean": 0.0}, "opsrl": {"samples": 10, "reward_prior_mean": 0.0}, "ucrl2": {"delta": 0.2, "scaling": 0.05}, "beb": {"beta": 0.5}},
    25: {"eps-greedy": {"eps": 0.0}, "psrl": {"reward_prior_mean": 0.0}, "opsrl": {"samples": 10, "reward_prior_mean": 0.0}, "ucrl2": {"delta": 0.2, "scaling": 0.05}, "beb": {"beta": 1.0}},
    50: {"eps-greedy": {"eps": 0.0}, "psrl": {"reward_prior_mean": None}, "opsrl": {"samples": 10, "reward_prior_mean": 0.0}, "ucrl2": {"delta": 0.2, "scaling": 0.5}, "beb": {"beta": 1.0}},
    75: {"eps-greedy": {"eps": 0.05}, "psrl": {"reward_prior_mean": None}, "opsrl": {"samples": 10, "reward_prior_mean": 0.0}, "ucrl2": {"delta": 0.2, "scaling": 0.5}, "beb": {"beta": 1.0}},
    100: {"eps-greedy": {"eps": 0.05}, "psrl": {"reward_prior_mean": None}, "opsrl": {"samples": 10, "reward_prior_mean": 0.0}, "ucrl2": {"delta": 0.2, "scaling": 0.5}, "beb": {"beta": 2.0}},
}


def _nearest_setting(episodes: int) -> int:
    return min(TUNED_MDP, key=lambda n: (abs(n - episodes), n))


def tuned_mdp_hparams(name: str):
    """The `tuned=` callback for baseline `name`: (env, episodes) -> its tuned hyperparameters."""

    def tuned(env: Environment, episodes: int) -> dict[str, Any]:
        return dict(TUNED_MDP[_nearest_setting(episodes)].get(name, {}))

    return tuned


# ---------------------------------------------------------------------------------------------
# Stateless maths (unbatched; callers vmap)
# ---------------------------------------------------------------------------------------------


def finite_horizon_q_values(reward: jax.Array, transitions: jax.Array, horizon: int) -> jax.Array:
    """Finite-horizon value iteration (backward induction, undiscounted).

    reward: [S, A] expected reward r(s, a); transitions: [S, A, S] P(s'|s, a); horizon: H (static).
    Returns Q [H, S, A] with Q[h] the value of taking a at step h (0-based) and acting optimally
    for the remaining H - h - 1 steps: Q[h] = r + P @ max_a Q[h + 1], Q[H] = 0."""

    def backup(v_next, _):
        q = reward + transitions @ v_next  # [S, A]
        return q.max(axis=-1), q

    _, q_reversed = jax.lax.scan(backup, jnp.zeros(reward.shape[0], reward.dtype), None, length=horizon)
    return q_reversed[::-1]


def optimistic_transition(p_hat: jax.Array, conf_p: jax.Array, v_next: jax.Array) -> jax.Array:
    """The maximiser of p @ v_next over {p in simplex : ||p - p_hat||_1 <= conf_p} (Jaksch et al.
    2010, Fig. 2): move up to conf_p / 2 of mass onto the best next state, taking it from the
    worst states first. p_hat: [..., S]; conf_p: [...]; v_next: [S]. Returns [..., S]."""
    order = jnp.argsort(v_next)  # ascending: worst first, best last
    p_sorted = p_hat[..., order]
    added = jnp.minimum(1.0 - p_sorted[..., -1], conf_p / 2.0)  # [...]
    # Remove `added` from the worst states in turn; the best state (last) is never reached because
    # `added` <= 1 - p_best = mass of the others.
    mass_before = jnp.cumsum(p_sorted, axis=-1) - p_sorted
    removed = jnp.clip(added[..., None] - mass_before, 0.0, p_sorted)
    removed = removed.at[..., -1].set(0.0)
    p_sorted = p_sorted - removed
    p_sorted = p_sorted.at[..., -1].add(added)
    p_opt = jnp.zeros_like(p_hat).at[..., order].set(p_sorted)
    return p_opt


def extended_value_iteration(
    reward_hat: jax.Array, conf_r: jax.Array, p_hat: jax.Array, conf_p: jax.Array, horizon: int
) -> jax.Array:
    """Optimistic finite-horizon value iteration over L1 confidence sets (UCRL2's EVI).

    reward_hat, conf_r, conf_p: [S, A]; p_hat: [S, A, S]; horizon: H (static). Returns Q [H, S, A]
    of the most optimistic MDP in the set, computed step by step backwards."""
    reward_opt = reward_hat + conf_r

    def backup(v_next, _):
        p_opt = optimistic_transition(p_hat, conf_p, v_next)  # [S, A, S]
        q = reward_opt + p_opt @ v_next
        return q.max(axis=-1), q

    _, q_reversed = jax.lax.scan(backup, jnp.zeros(reward_hat.shape[0], reward_hat.dtype), None, length=horizon)
    return q_reversed[::-1]


@struct.dataclass
class MDPCounts:
    """Sufficient statistics of one trial's experience."""

    visits: jax.Array  #: [S, A] float32, n(s, a)
    reward_sum: jax.Array  #: [S, A] float32, sum of rewards observed at (s, a)
    transition_counts: jax.Array  #: [S, A, S] float32, n(s, a, s')

    @classmethod
    def zeros(cls, states: int, actions: int) -> "MDPCounts":
        return cls(
            jnp.zeros((states, actions), jnp.float32),
            jnp.zeros((states, actions), jnp.float32),
            jnp.zeros((states, actions, states), jnp.float32),
        )


def update_counts(counts: MDPCounts, s_tm1: jax.Array, a_tm1: jax.Array, r_tm1: jax.Array, s_t: jax.Array, valid: jax.Array) -> MDPCounts:
    """Add the transition (s_tm1, a_tm1, r_tm1, s_t) when `valid` (scalars; no-op otherwise)."""
    states, actions = counts.visits.shape
    w = valid.astype(jnp.float32)
    sa = jax.nn.one_hot(s_tm1, states)[:, None] * jax.nn.one_hot(a_tm1, actions)[None, :] * w  # [S, A]
    return MDPCounts(
        visits=counts.visits + sa,
        reward_sum=counts.reward_sum + sa * r_tm1,
        transition_counts=counts.transition_counts + sa[..., None] * jax.nn.one_hot(s_t, states)[None, None, :],
    )


def reward_posterior(env: Environment, counts: MDPCounts, prior_mean: float | None = None) -> tuple[jax.Array, jax.Array]:
    """Normal-Normal posterior over mu(s, a): (mean [S, A], std [S, A]).

    Prior N(m0, s0^2) (m0 = `prior_mean`, the family's true `reward_mean` when None), noise std sigma: mean = (m0 sigma^2 + s0^2 sum_r) / (sigma^2 + n s0^2),
    var = s0^2 sigma^2 / (sigma^2 + n s0^2) (written this way so s0 = 0 or sigma = 0 work)."""
    m0 = env.reward_mean if prior_mean is None else prior_mean
    s0sq, sigsq = env.reward_mean_std**2, env.reward_noise_std**2
    denom = sigsq + counts.visits * s0sq
    safe = jnp.where(denom > 0, denom, 1.0)
    mean = jnp.where(denom > 0, (m0 * sigsq + s0sq * counts.reward_sum) / safe, m0)
    var = jnp.where(denom > 0, s0sq * sigsq / safe, 0.0)
    return mean, jnp.sqrt(var)


def posterior_mean_mdp(env: Environment, counts: MDPCounts) -> tuple[jax.Array, jax.Array]:
    """Posterior-mean MDP: (reward [S, A], transitions [S, A, S])."""
    mean, _ = reward_posterior(env, counts)
    alpha = env.dirichlet_alpha + counts.transition_counts
    return mean, alpha / alpha.sum(-1, keepdims=True)


#: Marsaglia-Tsang proposals per Gamma of a posterior Dirichlet: its parameters are
#: dirichlet_alpha + counts, mostly exactly dirichlet_alpha = 1 (unvisited transitions), where all
#: three are rejected with probability <= sampling.fallback_probability(3) = 1.1e-4 and the draw
#: is then not exactly Gamma (it was 2.3e-3 with two, the centre d standing in).
POSTERIOR_PROPOSALS = 3


def sample_posterior_mdp(
    key: jax.Array, env: Environment, counts: MDPCounts, prior_mean: float | None = None
) -> tuple[jax.Array, jax.Array]:
    """One MDP from the posterior: (reward [S, A], transitions [S, A, S]); `prior_mean` as in
    `reward_posterior`. Transitions: Dirichlet(dirichlet_alpha + n(s, a, .)) by `sampling.dirichlet`."""
    key_reward, key_transitions = jax.random.split(key)
    mean, std = reward_posterior(env, counts, prior_mean)
    reward = mean + std * jax.random.normal(key_reward, mean.shape, jnp.float32)
    alpha = env.dirichlet_alpha + counts.transition_counts
    small = env.dirichlet_alpha < 1.0  # static: counts only grow
    transitions = sampling.dirichlet(key_transitions, alpha, proposals=POSTERIOR_PROPOSALS, small_alpha=small)
    return reward, transitions


def greedy_action(key: jax.Array, q_values: jax.Array) -> jax.Array:
    """argmax of q_values [A], ties broken uniformly at random. Returns int32."""
    is_best = q_values >= q_values.max() - 1e-6
    return jax.random.categorical(key, jnp.where(is_best, 0.0, -jnp.inf)).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# Agents
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class MDPPlannerCarry:
    """What a model-based agent remembers within a trial."""

    counts: MDPCounts
    s_prev: jax.Array  #: int32, the state the previous action was taken in
    q_values: jax.Array  #: [H, S, A] float32, the plan of the current episode


@dataclasses.dataclass(frozen=True)
class _MDPPlanner(Agent):
    """Shared machinery: count, re-plan at each episode start, act greedily on the plan.

    Subclasses implement `plan(key, params, counts) -> Q [H, S, A]` and may override
    `explore_prob` (the probability of a uniformly random action instead of the greedy one)."""

    def __post_init__(self):
        check_int(self.name, "episodes", self.episodes, low=1)
        if getattr(self.env, "name", None) != "tabular-mdp":
            raise ConfigError(f"{self.name}: needs a tabular-mdp environment, got {getattr(self.env, 'name', self.env)!r}")

    @property
    def _shape(self) -> tuple[int, int, int]:
        return self.env.horizon, self.env.states, self.env.actions

    def plan(self, key: jax.Array, params: Any, counts: MDPCounts) -> jax.Array:
        raise NotImplementedError

    def init(self, key):
        H, S, A = self._shape
        return MDPPlannerCarry(MDPCounts.zeros(S, A), jnp.int32(0), jnp.zeros((H, S, A), jnp.float32))

    def act(self, params, carry, timestep, key):
        key_plan, key_tie, key_explore, key_random = jax.random.split(key, 4)
        H, S, A = self._shape
        s_t = jnp.argmax(timestep.obs).astype(jnp.int32)
        s_outcome = jnp.argmax(timestep.outcome_obs).astype(jnp.int32)
        counts = update_counts(
            carry.counts, carry.s_prev, timestep.prev_action, timestep.prev_reward, s_outcome, ~timestep.first
        )
        q_values = jax.lax.cond(
            timestep.step_index == 0,
            lambda: self.plan(key_plan, params, counts).astype(jnp.float32),
            lambda: carry.q_values,
        )
        h = jnp.clip(timestep.step_index, 0, H - 1)
        action = greedy_action(key_tie, q_values[h, s_t])
        if self.explore_prob() > 0.0:  # a static hyperparameter, not a traced value
            random_action = jax.random.randint(key_random, (), 0, A, jnp.int32)
            action = jnp.where(jax.random.uniform(key_explore) < self.explore_prob(), random_action, action)
        return action, MDPPlannerCarry(counts, s_t, q_values)

    def explore_prob(self) -> float:
        return 0.0


@register("tabular-mdp")
@dataclasses.dataclass(frozen=True)
class GreedyMDP(_MDPPlanner):
    """Plans on the posterior-mean MDP (no exploration beyond random tie-breaking)."""

    name = "greedy"

    def plan(self, key, params, counts):
        reward, transitions = posterior_mean_mdp(self.env, counts)
        return finite_horizon_q_values(reward, transitions, self.env.horizon)


@register("tabular-mdp", tuned=tuned_mdp_hparams("eps-greedy"))
@dataclasses.dataclass(frozen=True)
class EpsGreedyMDP(GreedyMDP):
    """`greedy` that takes a uniformly random action with probability `eps`."""

    name = "eps-greedy"
    eps: float = 0.1  #: probability of a uniformly random action, in [0, 1]

    def __post_init__(self):
        super().__post_init__()
        check_float(self.name, "eps", self.eps, low=0.0, high=1.0)

    def explore_prob(self) -> float:
        return float(self.eps)


#: `reward_prior_mean` of the posterior-sampling agents: None is the family's true prior mean;
#: TabulaRL (Osband's code, which the reference tables' PSRL/OPSRL most likely come from) assumes 0.
PRIOR_MEAN_DOC = "mean of the N(m, reward_mean_std^2) prior over mu(s, a) the agent assumes; None = the true one"


@register("tabular-mdp", tuned=tuned_mdp_hparams("psrl"))
@dataclasses.dataclass(frozen=True)
class PSRL(_MDPPlanner):
    """Posterior sampling (Osband et al. 2013): one posterior MDP per episode, acted on greedily."""

    name = "psrl"
    reward_prior_mean: float | None = None  #: see PRIOR_MEAN_DOC

    def __post_init__(self):
        super().__post_init__()
        if self.reward_prior_mean is not None:
            check_float(self.name, "reward_prior_mean", self.reward_prior_mean)

    def plan(self, key, params, counts):
        reward, transitions = sample_posterior_mdp(key, self.env, counts, self.reward_prior_mean)
        return finite_horizon_q_values(reward, transitions, self.env.horizon)


@register("tabular-mdp", tuned=tuned_mdp_hparams("opsrl"))
@dataclasses.dataclass(frozen=True)
class OPSRL(_MDPPlanner):
    """Optimistic PSRL: `samples` posterior MDPs per episode, act on max_k Q_k[h, s, a]."""

    name = "opsrl"
    samples: int = 10  #: posterior samples per episode, >= 1 (1 is PSRL)
    reward_prior_mean: float | None = None  #: see PRIOR_MEAN_DOC

    def __post_init__(self):
        super().__post_init__()
        check_int(self.name, "samples", self.samples, low=1)
        if self.reward_prior_mean is not None:
            check_float(self.name, "reward_prior_mean", self.reward_prior_mean)

    def plan(self, key, params, counts):
        def solve(key_k):
            reward, transitions = sample_posterior_mdp(key_k, self.env, counts, self.reward_prior_mean)
            return finite_horizon_q_values(reward, transitions, self.env.horizon)

        return jax.vmap(solve)(jax.random.split(key, self.samples)).max(axis=0)


@register("tabular-mdp", tuned=tuned_mdp_hparams("ucrl2"))
@dataclasses.dataclass(frozen=True)
class UCRL2(_MDPPlanner):
    """UCRL2 (Jaksch et al. 2010) for finite horizons: extended value iteration on the empirical MDP
    with confidence radii (t = steps so far, N = max(1, n(s, a)))

        conf_r(s, a) = scaling * sigma * sqrt(7 log(2 S A t / delta) / (2 N))
        conf_p(s, a) = scaling * sqrt(14 S log(2 A t / delta) / N)        (L1 radius)

    Jaksch's radii assume rewards in [0, 1]; here rewards are Gaussian, so the reward radius is
    scaled by the noise std sigma. `scaling` multiplies both radii (the theory's constants are
    very conservative; RL²-style baselines tune it, as TabulaRL's UCRL2 does). Unvisited (s, a)
    use p_hat uniform (irrelevant: their radius puts all mass on the best state) and r_hat = 0
    plus the radius."""

    name = "ucrl2"
    delta: float = 0.05  #: confidence parameter, in (0, 1)
    scaling: float = 1.0  #: multiplies the confidence radii, > 0

    def __post_init__(self):
        super().__post_init__()
        check_float(self.name, "delta", self.delta, low=0.0, high=1.0, low_open=True, high_open=True)
        check_float(self.name, "scaling", self.scaling, low=0.0, low_open=True)

    def plan(self, key, params, counts):
        S, A = self.env.states, self.env.actions
        n = jnp.maximum(counts.visits, 1.0)
        t = counts.visits.sum() + 1.0
        reward_hat = counts.reward_sum / n
        seen = counts.transition_counts.sum(-1, keepdims=True)
        p_hat = jnp.where(seen > 0, counts.transition_counts / jnp.maximum(seen, 1.0), 1.0 / S)
        conf_r = self.scaling * self.env.reward_noise_std * jnp.sqrt(7.0 * jnp.log(2.0 * S * A * t / self.delta) / (2.0 * n))
        conf_p = self.scaling * jnp.sqrt(14.0 * S * jnp.log(2.0 * A * t / self.delta) / n)
        return extended_value_iteration(reward_hat, conf_r, p_hat, conf_p, self.env.horizon)


@register("tabular-mdp", tuned=tuned_mdp_hparams("beb"))
@dataclasses.dataclass(frozen=True)
class BEB(_MDPPlanner):
    """Bayesian exploration bonus (Kolter & Ng 2009): plan on the posterior-mean MDP with reward
    r(s, a) + beta / (1 + n(s, a))."""

    name = "beb"
    beta: float = 1.0  #: bonus scale, >= 0 (0 is greedy)

    def __post_init__(self):
        super().__post_init__()
        check_float(self.name, "beta", self.beta, low=0.0)

    def plan(self, key, params, counts):
        reward, transitions = posterior_mean_mdp(self.env, counts)
        bonus = self.beta / (1.0 + counts.visits)
        return finite_horizon_q_values(reward + bonus, transitions, self.env.horizon)


@register("tabular-mdp")
@dataclasses.dataclass(frozen=True)
class OracleMDP(_MDPPlanner):
    """Knows the task (`params` is the true `TabularMDPTask`): optimal finite-horizon policy."""

    name = "oracle"
    privileged = True

    def plan(self, key, params, counts):
        return finite_horizon_q_values(params.reward_mean, params.transitions, self.env.horizon)

