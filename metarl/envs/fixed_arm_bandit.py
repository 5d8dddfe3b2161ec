"""First-Explore's bandit with one fixed arm (Norman & Clune).

Arm 0 is noiseless with a fixed mean (0.5: the deceptive variant, which punishes a learner that
never tries the other arms; 0: the control); the other arms' means ~ N(0, 1), their rewards
mean + noise_std * N(0, 1). Each pull is a one-step episode (100 pulls in the paper)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from metarl.envs.base import Environment
from metarl.envs.registry import register
from metarl.errors import check_float, check_int


@struct.dataclass
class FixedArmBanditTask:
    means: jax.Array  #: [arms] float32; means[0] == fixed_mean


@struct.dataclass
class FixedArmBanditState:
    t: jax.Array


@register
@dataclasses.dataclass(frozen=True)
class FixedArmBandit(Environment):
    name = "fixed-arm-bandit"
    arms: int = 10  #: number of arms, arm 0 being the fixed one
    fixed_mean: float = 0.5  #: mean of the noiseless arm 0 (0.5 deceptive, 0 control)
    noise_std: float = 0.5  #: std of the Gaussian reward noise of the other arms

    def __post_init__(self):
        check_int("fixed-arm-bandit", "arms", self.arms, low=2)
        check_float("fixed-arm-bandit", "fixed_mean", self.fixed_mean)
        check_float("fixed-arm-bandit", "noise_std", self.noise_std, low=0.0)

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
        others = jax.random.normal(key, (self.arms - 1,), jnp.float32)
        return FixedArmBanditTask(jnp.concatenate([jnp.full((1,), self.fixed_mean, jnp.float32), others]))

    def reset(self, key, params):
        return jnp.ones((1,), jnp.float32), FixedArmBanditState(jnp.int32(0))

    def step(self, key, state, action, params):
        noise = jnp.where(action == 0, 0.0, self.noise_std * jax.random.normal(key, (), jnp.float32))
        reward = params.means[action] + noise
        return jnp.ones((1,), jnp.float32), FixedArmBanditState(state.t + 1), reward, jnp.bool_(True), jnp.bool_(False), {}

    def expected_reward(self, params) -> jax.Array:
        return params.means
