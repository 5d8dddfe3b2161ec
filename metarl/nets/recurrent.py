"""Recurrent cores (GRU, LSTM, with optional LayerNorm) and the RL² actor-critic.

Layout. A core runs `num_cores` independent recurrent networks side by side (2 for RL²'s
separate policy and value networks, 1 when they share a core): its state is [num_cores, B, H]
(a GRU) or a pair (c, h) of those (an LSTM). Inputs are time-major, [T, B, F].

Speed. The input projection W_x x_t of every step is one matmul over the whole [T * B, F]
sequence, outside the scan; only the recurrent projection W_h h_{t-1} runs inside it. The
`num_cores` networks share each matmul through a batched einsum.

Memory resets. The state is zeroed where `reset` is true, *before* the step that reads the input
(RL² resets at `timestep.first`, i.e. at trial boundaries only; an episode ending inside a trial
keeps the memory).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metarl.envs.trial import TimeStep

_LN_EPS = 1e-5


def _stacked(init, num: int):
    """An initializer for a [num, *shape] parameter: `num` independent draws of `init(shape)`."""

    def stacked_init(key, shape, dtype=jnp.float32):
        return jax.vmap(lambda k: init(k, shape[1:], dtype))(jax.random.split(key, num))

    return stacked_init


def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """Normalise over the last axis, then scale and shift."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
    return centred * jax.lax.rsqrt(var + _LN_EPS) * scale + bias


class _GatedCore(nn.Module):
    """Shared machinery: per-gate input and recurrent projections, optionally layer-normalised
    per gate (Ba et al. 2016), for `num_cores` networks of `hidden` units with `gates` gates."""

    hidden: int
    num_cores: int = 1
    layer_norm: bool = True
    gates: int = 3

    def _projection_params(self, features: int):
        N, H, G = self.num_cores, self.hidden, self.gates
        w_x = self.param("w_x", _stacked(nn.initializers.lecun_normal(), N), (N, features, G * H))
        w_h = self.param("w_h", _stacked(nn.initializers.orthogonal(), N), (N, H, G * H))
        if self.layer_norm:
            norm = {
                "x_scale": self.param("x_scale", nn.initializers.ones, (N, 1, G, H)),
                "x_bias": self.param("x_bias", self._gate_bias_init, (N, 1, G, H)),
                "h_scale": self.param("h_scale", nn.initializers.ones, (N, 1, G, H)),
                "h_bias": self.param("h_bias", nn.initializers.zeros, (N, 1, G, H)),
            }
        else:
            norm = {"bias": self.param("bias", self._gate_bias_init, (N, 1, G, H))}
        return w_x, w_h, norm

    def _gate_bias_init(self, key, shape, dtype=jnp.float32):
        return jnp.zeros(shape, dtype)

    def _input_projection(self, x, w_x, norm):
        """[T, B, F] -> [T, N, B, G, H] (layer-normalised or biased)."""
        T, B, _ = x.shape
        xp = jnp.einsum("tbf,nfg->tnbg", x, w_x).reshape(T, self.num_cores, B, self.gates, self.hidden)
        if self.layer_norm:
            return _layer_norm(xp, norm["x_scale"], norm["x_bias"])
        return xp + norm["bias"]

    def _recurrent_projection(self, h, w_h, norm):
        """[N, B, H] -> [N, B, G, H]."""
        N, B, _ = h.shape
        hp = jnp.einsum("nbh,nhg->nbg", h, w_h).reshape(N, B, self.gates, self.hidden)
        if self.layer_norm:
            return _layer_norm(hp, norm["h_scale"], norm["h_bias"])
        return hp


class GRUCore(_GatedCore):
    """GRU (Cho et al. 2014, PyTorch's gate convention) with optional per-gate LayerNorm.

    __call__(h0 [N, B, H], x [T, B, F], reset [T, B] bool) -> (h_T [N, B, H], h [T, N, B, H])."""

    gates: int = 3

    @nn.compact
    def __call__(self, h0: jax.Array, x: jax.Array, reset: jax.Array):
        w_x, w_h, norm = self._projection_params(x.shape[-1])
        xp = self._input_projection(x, w_x, norm)

        def gru_step(h, inputs):
            xp_t, reset_t = inputs
            h = jnp.where(reset_t[None, :, None], 0.0, h)
            hp = self._recurrent_projection(h, w_h, norm)
            r = jax.nn.sigmoid(xp_t[:, :, 0] + hp[:, :, 0])
            z = jax.nn.sigmoid(xp_t[:, :, 1] + hp[:, :, 1])
            n = jnp.tanh(xp_t[:, :, 2] + r * hp[:, :, 2])
            h = n + z * (h - n)  # (1 - z) * n + z * h
            return h, h

        return jax.lax.scan(gru_step, h0, (xp, reset))


class LSTMCore(_GatedCore):
    """LSTM (Hochreiter & Schmidhuber 1997) with optional LayerNorm on gates and cell.

    __call__((c0, h0), x [T, B, F], reset [T, B]) -> ((c_T, h_T), h [T, N, B, H])."""

    gates: int = 4

    def _gate_bias_init(self, key, shape, dtype=jnp.float32):
        # Forget-gate bias 1 (Jozefowicz et al. 2015): remember by default.
        return jnp.zeros(shape, dtype).at[..., 1, :].set(1.0)

    @nn.compact
    def __call__(self, carry, x: jax.Array, reset: jax.Array):
        w_x, w_h, norm = self._projection_params(x.shape[-1])
        if self.layer_norm:
            c_scale = self.param("c_scale", nn.initializers.ones, (self.num_cores, 1, self.hidden))
            c_bias = self.param("c_bias", nn.initializers.zeros, (self.num_cores, 1, self.hidden))
        xp = self._input_projection(x, w_x, norm)

        def lstm_step(carry, inputs):
            xp_t, reset_t = inputs
            c, h = (jnp.where(reset_t[None, :, None], 0.0, s) for s in carry)
            g = xp_t + self._recurrent_projection(h, w_h, norm)
            i, f, u, o = (g[:, :, k] for k in range(4))
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(u)
            c_out = _layer_norm(c, c_scale, c_bias) if self.layer_norm else c
            h = jax.nn.sigmoid(o) * jnp.tanh(c_out)
            return (c, h), h

        return jax.lax.scan(lstm_step, carry, (xp, reset))


def rl2_features(timestep: TimeStep, num_actions: int, episodes: int = 0) -> jax.Array:
    """RL²'s input: [observation, one-hot previous action, previous reward, done flag] and, when
    `episodes` > 0, the episode index divided by `episodes`. Shapes: timestep fields with any
    batch shape S (prev_action's shape) -> [*S, F] float32. The previous action is -1 at a
    trial's start, whose one-hot is all zeros."""
    batch_shape = timestep.prev_action.shape
    parts = [
        timestep.obs.reshape(batch_shape + (-1,)).astype(jnp.float32),
        jax.nn.one_hot(timestep.prev_action, num_actions, dtype=jnp.float32),
        timestep.prev_reward.astype(jnp.float32)[..., None],
        timestep.done.astype(jnp.float32)[..., None],
    ]
    if episodes > 0:
        parts.append((timestep.episode_index.astype(jnp.float32) / episodes)[..., None])
    return jnp.concatenate(parts, axis=-1)


def initial_carry(core: str, hidden: int, num_cores: int, batch_shape: tuple[int, ...] = ()) -> Any:
    """The zero recurrent state: [num_cores, *batch_shape, hidden] (a (c, h) pair for an LSTM)."""
    h = jnp.zeros((num_cores, *batch_shape, hidden), jnp.float32)
    return (h, h) if core == "lstm" else h


class RL2ActorCritic(nn.Module):
    """RL²'s recurrent policy and value function.

    __call__(carry, timesteps) with timesteps a `TimeStep` of shape [T, B] returns
    (carry, logits [T, B, A], values [T, B]). The memory is reset where `timesteps.first`.
    With `shared=False` (the reference) the policy and value function are two separate
    recurrent networks (carry [2, B, H]); with `shared=True` one core feeds both heads."""

    num_actions: int
    core: str = "gru"
    hidden: int = 256
    layer_norm: bool = True
    shared: bool = False
    episodes: int = 0  #: > 0: add the normalised episode index to the input

    @property
    def num_cores(self) -> int:
        return 1 if self.shared else 2

    def initial_carry(self, batch_shape: tuple[int, ...] = ()) -> Any:
        return initial_carry(self.core, self.hidden, self.num_cores, batch_shape)

    @nn.compact
    def __call__(self, carry, timesteps: TimeStep):
        x = rl2_features(timesteps, self.num_actions, self.episodes)
        core_cls = {"gru": GRUCore, "lstm": LSTMCore}[self.core]
        core = core_cls(hidden=self.hidden, num_cores=self.num_cores, layer_norm=self.layer_norm, name="core")
        carry, h = core(carry, x, timesteps.first)  # h: [T, N, B, H]
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01), name="policy_head")(h[:, 0])
        values = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="value_head")(h[:, -1])[..., 0]
        return carry, logits, values


def sequence(module: RL2ActorCritic, params: Any, carry: Any, timesteps: TimeStep):
    """Run over a [T, B] sequence of timesteps: (carry, logits [T, B, A], values [T, B])."""
    return module.apply(params, carry, timesteps)


def step(module: RL2ActorCritic, params: Any, carry: Any, timestep: TimeStep):
    """One step for a batch of [B] timesteps: (carry, logits [B, A], values [B]). Exactly
    `sequence` on a length-1 sequence, so acting and training compute the same function."""
    carry, logits, values = module.apply(params, carry, jax.tree.map(lambda x: x[None], timestep))
    return carry, logits[0], values[0]
