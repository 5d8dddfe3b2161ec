"""Baselines that apply to every family."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from metarl.agents import Agent
from metarl.baselines.registry import register
from metarl.envs import jitted_names


@register(*jitted_names())  # every family the jitted evaluator runs (not host-stepped lunarlander)
@dataclasses.dataclass(frozen=True)
class RandomAgent(Agent):
    """Uniformly random actions: over the actions (Discrete) or over the box (Box). Applies to
    every registered family."""

    name = "random"

    def init(self, key):
        return ()

    def act(self, params, carry, timestep, key):
        if self.env.discrete:
            return jax.random.randint(key, (), 0, self.env.num_actions, jnp.int32), carry
        space = self.env.action_space()
        return jax.random.uniform(key, self.env.action_shape, jnp.float32, space.low, space.high), carry
