"""Random tabular MDPs (RL²'s setting, Duan et al. 2016).

S states, A actions, episodes of H steps from a fixed start state (state 0). A task is
mu(s, a) ~ N(reward_mean, reward_mean_std^2) and P(.|s, a) ~ Dirichlet(dirichlet_alpha); a step
pays mu(s, a) + reward_noise_std * N(0, 1) and moves to s' ~ P(.|s, a). Observation: one-hot(s)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from metarl.envs.base import Environment
from metarl.envs.registry import register
from metarl.errors import check_float, check_int


@struct.dataclass
class TabularMDPTask:
    reward_mean: jax.Array  #: [S, A] float32, mu(s, a)
    transitions: jax.Array  #: [S, A, S] float32, P(s' | s, a)


@struct.dataclass
class TabularMDPState:
    s: jax.Array  #: int32 current state
    t: jax.Array  #: int32 steps taken in the episode


@register
@dataclasses.dataclass(frozen=True)
class TabularMDP(Environment):
    name = "tabular-mdp"
    states: int = 10  #: number of states S
    actions: int = 5  #: number of actions A
    horizon: int = 10  #: steps per episode H
    reward_mean: float = 1.0  #: mean of the prior over mu(s, a)
    reward_mean_std: float = 1.0  #: std of the prior over mu(s, a)
    reward_noise_std: float = 1.0  #: std of the Gaussian reward noise around mu(s, a)
    dirichlet_alpha: float = 1.0  #: concentration of the Dirichlet prior over P(.|s, a)

    def __post_init__(self):
        check_int("tabular-mdp", "states", self.states, low=1)
        check_int("tabular-mdp", "actions", self.actions, low=1)
        check_int("tabular-mdp", "horizon", self.horizon, low=1)
        check_float("tabular-mdp", "reward_mean", self.reward_mean)
        check_float("tabular-mdp", "reward_mean_std", self.reward_mean_std, low=0.0)
        check_float("tabular-mdp", "reward_noise_std", self.reward_noise_std, low=0.0)
        check_float("tabular-mdp", "dirichlet_alpha", self.dirichlet_alpha, low=0.0, low_open=True)

    @property
    def num_actions(self) -> int:
        return self.actions

    @property
    def max_steps_in_episode(self) -> int:
        return self.horizon

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (self.states,)

    def sample_task(self, key):
        key_r, key_p = jax.random.split(key)
        S, A = self.states, self.actions
        mu = self.reward_mean + self.reward_mean_std * jax.random.normal(key_r, (S, A), jnp.float32)
        alpha = jnp.full((S,), self.dirichlet_alpha, jnp.float32)
        P = jax.random.dirichlet(key_p, alpha, (S, A)).astype(jnp.float32)
        return TabularMDPTask(mu, P)

    def _obs(self, s):
        return jax.nn.one_hot(s, self.states, dtype=jnp.float32)

    def reset(self, key, params):
        s = jnp.int32(0)
        return self._obs(s), TabularMDPState(s, jnp.int32(0))

    def step(self, key, state, action, params):
        key_r, key_s = jax.random.split(key)
        reward = params.reward_mean[state.s, action] + self.reward_noise_std * jax.random.normal(key_r, (), jnp.float32)
        s_next = jax.random.categorical(key_s, jnp.log(params.transitions[state.s, action])).astype(jnp.int32)
        t = state.t + 1
        return self._obs(s_next), TabularMDPState(s_next, t), reward, jnp.bool_(False), t >= self.horizon, {}
