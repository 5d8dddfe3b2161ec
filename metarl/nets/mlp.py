"""Feed-forward actor-critic: separate policy and value MLPs (CleanRL's PPO layout), a
categorical head for Discrete actions, a Gaussian one with a state-independent log-std for Box."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from metarl.nets.init import orthogonal

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


class MLPActorCritic(nn.Module):
    """obs [..., F] -> (policy output, value [...]): logits [..., A] (Discrete) or the Gaussian's
    mean [..., D] (Box; the log-std is the parameter `log_std`, read with `log_std(params)`)."""

    action_dim: int
    discrete: bool
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs):
        act = ACTIVATIONS[self.activation]
        x = obs.astype(jnp.float32)
        h = x
        for i, width in enumerate(self.hidden):
            h = act(nn.Dense(width, kernel_init=orthogonal(np.sqrt(2)), name=f"policy_{i}")(h))
        out = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), name="policy_head")(h)
        v = x
        for i, width in enumerate(self.hidden):
            v = act(nn.Dense(width, kernel_init=orthogonal(np.sqrt(2)), name=f"value_{i}")(v))
        value = nn.Dense(1, kernel_init=orthogonal(1.0), name="value_head")(v)[..., 0]
        if not self.discrete:
            self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return out, value


def log_std(params) -> jnp.ndarray:
    return params["params"]["log_std"]
