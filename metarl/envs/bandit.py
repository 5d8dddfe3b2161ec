"""Bernoulli k-armed bandit (RL²'s setting): arm means p_i ~ Beta(prior_a, prior_b), U[0,1] by
default; each pull is a one-step episode paying 1 with probability p_a, else 0."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from metarl.envs.base import Environment
from metarl.envs.registry import register
from metarl.errors import check_float, check_int


@struct.dataclass
class BanditTask:
    means: jax.Array  #: [arms] float32, success probability of each arm


@struct.dataclass
class BanditState:
    t: jax.Array  #: int32, steps taken in the episode (0 or 1)


@register
@dataclasses.dataclass(frozen=True)
class BernoulliBandit(Environment):
    """k-armed Bernoulli bandit. Observation: a constant 1-vector (all information is in rewards)."""

    name = "bandit"
    arms: int = 5  #: number of arms k
    prior_a: float = 1.0  #: Beta prior of the arm means, first parameter (1 with prior_b=1: U[0,1])
    prior_b: float = 1.0  #: Beta prior, second parameter

    def __post_init__(self):
        check_int("bandit", "arms", self.arms, low=1)
        check_float("bandit", "prior_a", self.prior_a, low=0.0, low_open=True)
        check_float("bandit", "prior_b", self.prior_b, low=0.0, low_open=True)

    @property
    def num_actions(self) -> int:
        return self.arms

    @property
    def max_steps_in_episode(self) -> int:
        return 1

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (1,)

    def sample_task(self, key):
        if self.prior_a == 1.0 and self.prior_b == 1.0:
            # Beta(1, 1) is U[0, 1]; jax.random.beta's rejection loop costs seconds of compile time
            return BanditTask(jax.random.uniform(key, (self.arms,), jnp.float32))
        return BanditTask(jax.random.beta(key, self.prior_a, self.prior_b, (self.arms,)).astype(jnp.float32))

    def reset(self, key, params):
        return jnp.ones((1,), jnp.float32), BanditState(jnp.int32(0))

    def step(self, key, state, action, params):
        reward = jax.random.bernoulli(key, params.means[action]).astype(jnp.float32)
        return jnp.ones((1,), jnp.float32), BanditState(state.t + 1), reward, jnp.bool_(True), jnp.bool_(False), {}

    def expected_reward(self, params) -> jax.Array:
        """[arms] expected reward of each arm (for oracles and regret)."""
        return params.means
