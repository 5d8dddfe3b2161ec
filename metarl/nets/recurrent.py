"""Recurrent cores (GRU, LSTM, with optional LayerNorm) and the RL² actor-critic.

Layout. A core runs `num_cores` independent recurrent networks side by side (2 for RL²'s
separate policy and value networks, 1 when they share a core): its state is [num_cores, B, H]
(a GRU) or a pair (c, h) of those (an LSTM). Inputs are time-major, [T, B, F].

Speed. The `num_cores` networks share each matmul through a batched einsum. The GRU
(`gru_layer`) projects each step's tiny input (F ~ 8 features) inside the scan and accumulates
all parameter gradients in its backward scan's carry, because a precomputed [T, N, B, 3H] input
projection and its gradient cost more in memory traffic than the recurrence cost in arithmetic
(profiled on a 2-core CPU); the LSTM still projects the whole [T * B, F] sequence outside its scan.

Memory resets. The state is zeroed where `reset` is true, *before* the step that reads the input
(RL² resets at `timestep.first`, i.e. at trial boundaries only; an episode ending inside a trial
keeps the memory).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metarl.envs.trial import TimeStep
from metarl.nets.init import orthogonal

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
        w_h = self.param("w_h", _stacked(orthogonal(), N), (N, H, G * H))
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


def _sigmoid(x: jax.Array) -> jax.Array:
    # Exactly the logistic function; XLA's CPU tanh is vectorised and much faster than its logistic.
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


def _gru_gates(layer_norm: bool, a, xp_t, h, h_scale, h_bias):
    """From the recurrent pre-activation a = h W_h ([N, B, 3, H]) to the gates and next state."""
    if layer_norm:
        centred = a - jnp.mean(a, axis=-1, keepdims=True)
        inv_std = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + _LN_EPS)
        a_hat = centred * inv_std
        hp = a_hat * h_scale + h_bias
    else:
        a_hat = inv_std = None
        hp = a
    r = _sigmoid(xp_t[:, :, 0] + hp[:, :, 0])
    z = _sigmoid(xp_t[:, :, 1] + hp[:, :, 1])
    n = jnp.tanh(xp_t[:, :, 2] + r * hp[:, :, 2])
    h_next = n + z * (h - n)  # (1 - z) * n + z * h
    return h_next, (a_hat, inv_std, r, z, n, hp[:, :, 2])


def _gru_forward(layer_norm: bool, w_h, h_scale, h_bias, xp, h0, reset):
    """The GRU recurrence. xp: [T, N, B, 3, H] input projections (biased or normalised);
    h0: [N, B, H]; reset: [T, B]. Returns (h_T, hs [T, N, B, H]) and the recurrent
    pre-activations [T, N, B, 3, H] (all the backward pass needs besides the inputs)."""
    N, B, H = h0.shape

    def gru_step(h, inputs):
        xp_t, reset_t = inputs
        h = jnp.where(reset_t[None, :, None], 0.0, h)
        a = jnp.einsum("nbh,nhg->nbg", h, w_h)
        h_next, _ = _gru_gates(layer_norm, a.reshape(N, B, 3, H), xp_t, h, h_scale, h_bias)
        return h_next, (h_next, a)

    h_last, (hs, a) = jax.lax.scan(gru_step, h0, (xp, reset))
    return (h_last, hs), a.reshape(a.shape[:-1] + (3, H))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def gru_recurrence(layer_norm: bool, w_h, h_scale, h_bias, xp, h0, reset):
    """GRU recurrence with a hand-written backward pass (the same maths as autodiff): the weight
    gradient is one large matmul over all T * B steps after the backward scan instead of T small
    ones inside it, and the backward scan recomputes the gates from the stored pre-activations
    (elementwise work) instead of storing every intermediate.

    w_h [N, H, 3H]; h_scale, h_bias [N, 1, 3, H] (unused without layer_norm); xp [T, N, B, 3, H];
    h0 [N, B, H]; reset [T, B] bool. Returns (h_T [N, B, H], hs [T, N, B, H])."""
    return _gru_forward(layer_norm, w_h, h_scale, h_bias, xp, h0, reset)[0]


def _gru_fwd(layer_norm, w_h, h_scale, h_bias, xp, h0, reset):
    (h_last, hs), a = _gru_forward(layer_norm, w_h, h_scale, h_bias, xp, h0, reset)
    return (h_last, hs), (w_h, h_scale, h_bias, xp, h0, reset, hs, a)


def _gru_bwd(layer_norm, saved, cotangents):
    w_h, h_scale, h_bias, xp, h0, reset, hs, a = saved
    dh_last, dhs = cotangents
    T, N, B, H = hs.shape
    # The state each step read: the previous output, zeroed where the step reset the memory.
    h_prev = jnp.where(reset[:, None, :, None], 0.0, jnp.concatenate([h0[None], hs[:-1]], axis=0))

    def back_step(dh, inputs):
        dh_t, h, a_t, xp_t, reset_t = inputs
        _, (a_hat, inv_std, r, z, n, hp_n) = _gru_gates(layer_norm, a_t, xp_t, h, h_scale, h_bias)
        dh = dh + dh_t
        dn_pre = dh * (1.0 - z) * (1.0 - jnp.square(n))
        dz_pre = dh * (h - n) * z * (1.0 - z)
        dr_pre = dn_pre * hp_n * r * (1.0 - r)
        dxp = jnp.stack([dr_pre, dz_pre, dn_pre], axis=2)  # [N, B, 3, H]
        if layer_norm:
            da_hat = jnp.stack([dr_pre, dz_pre, dn_pre * r], axis=2) * h_scale
            da = inv_std * (
                da_hat
                - jnp.mean(da_hat, axis=-1, keepdims=True)
                - a_hat * jnp.mean(da_hat * a_hat, axis=-1, keepdims=True)
            )
        else:
            da = jnp.stack([dr_pre, dz_pre, dn_pre * r], axis=2)
        da = da.reshape(N, B, 3 * H)
        dh_prev = dh * z + jnp.einsum("nbg,nhg->nbh", da, w_h)
        dh_prev = jnp.where(reset_t[None, :, None], 0.0, dh_prev)
        return dh_prev, (dxp, da)

    dh0, (dxp, da) = jax.lax.scan(back_step, dh_last, (dhs, h_prev, a, xp, reset), reverse=True)
    dw_h = jnp.einsum("tnbh,tnbg->nhg", h_prev, da)
    if layer_norm:
        # Scale/bias gradients: big vectorised reductions after the scan (recomputing LN's output
        # and the reset gate there is cheaper than carrying them out of the loop).
        centred = a - jnp.mean(a, axis=-1, keepdims=True)
        a_hat = centred * jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + _LN_EPS)
        r = _sigmoid(xp[:, :, :, 0] + a_hat[:, :, :, 0] * h_scale[:, :, 0] + h_bias[:, :, 0])
        dhp = dxp.at[:, :, :, 2].multiply(r)
        dh_scale = jnp.sum(dhp * a_hat, axis=(0, 2))[:, None]
        dh_bias = jnp.sum(dhp, axis=(0, 2))[:, None]
    else:
        dh_scale = jnp.zeros_like(h_scale)
        dh_bias = jnp.zeros_like(h_bias)
    return dw_h, dh_scale, dh_bias, dxp, dh0, None


gru_recurrence.defvjp(_gru_fwd, _gru_bwd)


def _normalise(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """LayerNorm without scale and shift over the last axis: (a_hat, 1 / std)."""
    centred = a - jnp.mean(a, axis=-1, keepdims=True)
    inv_std = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + _LN_EPS)
    return centred * inv_std, inv_std


def _normalise_backward(d_hat: jax.Array, a_hat: jax.Array, inv_std: jax.Array) -> jax.Array:
    """Gradient through `_normalise` given the gradient `d_hat` of its output a_hat."""
    return inv_std * (d_hat - jnp.mean(d_hat, axis=-1, keepdims=True) - a_hat * jnp.mean(d_hat * a_hat, axis=-1, keepdims=True))


def _gru_input_step(layer_norm: bool, w_x, x_scale, x_bias, x_t):
    """One step's input projection: x_t [B, F] -> ([N, B, 3, H] normalised-or-biased, a_hat, inv_std)."""
    N, _, G = w_x.shape
    xr = jnp.einsum("bf,nfg->nbg", x_t, w_x).reshape(N, x_t.shape[0], 3, G // 3)
    if layer_norm:
        x_hat, inv_std = _normalise(xr)
        return x_hat * x_scale + x_bias, x_hat, inv_std
    return xr + x_bias, None, None


def _gru_layer_forward(layer_norm: bool, unroll: int, w_x, x_scale, x_bias, w_h, h_scale, h_bias, x, h0, reset):
    """`gru_layer`'s forward: also returns the recurrent pre-activations [T, N, B, 3H]."""

    def gru_step(h, inputs):
        x_t, reset_t = inputs
        xp_t = _gru_input_step(layer_norm, w_x, x_scale, x_bias, x_t)[0]
        h = jnp.where(reset_t[None, :, None], 0.0, h)
        a = jnp.einsum("nbh,nhg->nbg", h, w_h)
        h_next, _ = _gru_gates(layer_norm, a.reshape(xp_t.shape), xp_t, h, h_scale, h_bias)
        return h_next, (h_next, a)

    h_last, (hs, a) = jax.lax.scan(gru_step, h0, (x, reset), unroll=unroll)
    return (h_last, hs), a


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def gru_layer(layer_norm: bool, unroll: int, w_x, x_scale, x_bias, w_h, h_scale, h_bias, x, h0, reset):
    """A whole GRU layer (input projection + recurrence) with a hand-written backward pass (the
    same maths as autodiff, checked against it in the tests).

    Why not `gru_recurrence` on a precomputed input projection: that projection is a
    [T, N, B, 3H] array (37 MB for a 60-trial minibatch) that, with its LayerNorm and gradient,
    was written and read many times per minibatch; memory traffic, not arithmetic, was the
    bottleneck. Here each step projects its own [B, F] input (F is tiny, so recomputing it in the
    backward pass is free) and the backward scan accumulates every parameter gradient in its
    carry, so nothing of size [T, N, B, 3H] exists besides the stored recurrent pre-activations.

    w_x [N, F, 3H]; x_scale, x_bias [N, 1, 3, H] (without layer_norm x_scale is unused and x_bias is
    the gates' bias); w_h [N, H, 3H]; h_scale, h_bias [N, 1, 3, H] (unused without layer_norm);
    x [T, B, F]; h0 [N, B, H]; reset [T, B] bool. Returns (h_T [N, B, H], hs [T, N, B, H]).
    `unroll`: scan steps per loop iteration."""
    return _gru_layer_forward(layer_norm, unroll, w_x, x_scale, x_bias, w_h, h_scale, h_bias, x, h0, reset)[0]


def _gru_layer_fwd(layer_norm, unroll, w_x, x_scale, x_bias, w_h, h_scale, h_bias, x, h0, reset):
    (h_last, hs), a = _gru_layer_forward(layer_norm, unroll, w_x, x_scale, x_bias, w_h, h_scale, h_bias, x, h0, reset)
    return (h_last, hs), (w_x, x_scale, x_bias, w_h, h_scale, h_bias, x, h0, reset, hs, a)


def _gru_layer_bwd(layer_norm, unroll, saved, cotangents):
    w_x, x_scale, x_bias, w_h, h_scale, h_bias, x, h0, reset, hs, a = saved
    dh_last, dhs = cotangents
    N, B, H = h0.shape
    sum_batch = lambda v: jnp.sum(v, axis=1, keepdims=True)  # noqa: E731  [N, B, 3, H] -> [N, 1, 3, H]
    h_before = jnp.concatenate([h0[None], hs[:-1]], axis=0)  # the state before each step's reset

    def back_step(carry, inputs):
        dh, grads = carry
        dh_t, h_t, a_t, x_t, reset_t = inputs
        h = jnp.where(reset_t[None, :, None], 0.0, h_t)
        xp_t, x_hat, x_inv_std = _gru_input_step(layer_norm, w_x, x_scale, x_bias, x_t)
        _, (a_hat, inv_std, r, z, n, hp_n) = _gru_gates(layer_norm, a_t.reshape(N, B, 3, H), xp_t, h, h_scale, h_bias)
        dh = dh + dh_t
        dn_pre = dh * (1.0 - z) * (1.0 - jnp.square(n))
        dz_pre = dh * (h - n) * z * (1.0 - z)
        dr_pre = dn_pre * hp_n * r * (1.0 - r)
        dxp = jnp.stack([dr_pre, dz_pre, dn_pre], axis=2)  # [N, B, 3, H]
        dhp = jnp.stack([dr_pre, dz_pre, dn_pre * r], axis=2)
        g = dict(grads)
        g["x_bias"] = g["x_bias"] + sum_batch(dxp)
        if layer_norm:
            g["x_scale"] = g["x_scale"] + sum_batch(dxp * x_hat)
            dxr = _normalise_backward(dxp * x_scale, x_hat, x_inv_std)
            g["h_scale"] = g["h_scale"] + sum_batch(dhp * a_hat)
            g["h_bias"] = g["h_bias"] + sum_batch(dhp)
            da = _normalise_backward(dhp * h_scale, a_hat, inv_std)
        else:
            dxr, da = dxp, dhp
        da = da.reshape(N, B, 3 * H)
        g["w_x"] = g["w_x"] + jnp.einsum("bf,nbg->nfg", x_t, dxr.reshape(N, B, 3 * H))
        g["w_h"] = g["w_h"] + jnp.einsum("nbh,nbg->nhg", h, da)
        dh_prev = dh * z + jnp.einsum("nbg,nhg->nbh", da, w_h)
        dh_prev = jnp.where(reset_t[None, :, None], 0.0, dh_prev)
        return (dh_prev, g), None

    zeros = {"w_x": w_x, "x_scale": x_scale, "x_bias": x_bias, "w_h": w_h, "h_scale": h_scale, "h_bias": h_bias}
    zeros = jax.tree.map(jnp.zeros_like, zeros)
    (dh0, g), _ = jax.lax.scan(back_step, (dh_last, zeros), (dhs, h_before, a, x, reset), reverse=True, unroll=unroll)
    return g["w_x"], g["x_scale"], g["x_bias"], g["w_h"], g["h_scale"], g["h_bias"], jnp.zeros_like(x), dh0, None


gru_layer.defvjp(_gru_layer_fwd, _gru_layer_bwd)


class GRUCore(_GatedCore):
    """GRU (Cho et al. 2014, PyTorch's gate convention: h' = (1 - z) n + z h) with optional
    per-gate LayerNorm. The update gate z starts biased to +1 (remember), like the reference's
    forget bias.

    __call__(h0 [N, B, H], x [T, B, F], reset [T, B] bool) -> (h_T [N, B, H], h [T, N, B, H])."""

    gates: int = 3
    unroll: int = 2  #: recurrence steps per scan-loop iteration (speed only)

    def _gate_bias_init(self, key, shape, dtype=jnp.float32):
        return jnp.zeros(shape, dtype).at[..., 1, :].set(1.0)

    @nn.compact
    def __call__(self, h0: jax.Array, x: jax.Array, reset: jax.Array):
        w_x, w_h, norm = self._projection_params(x.shape[-1])
        if self.layer_norm:
            x_scale, x_bias, h_scale, h_bias = norm["x_scale"], norm["x_bias"], norm["h_scale"], norm["h_bias"]
        else:
            x_bias = norm["bias"]
            x_scale = h_scale = h_bias = jnp.zeros((self.num_cores, 1, 3, self.hidden), x.dtype)
        return gru_layer(self.layer_norm, self.unroll, w_x, x_scale, x_bias, w_h, h_scale, h_bias, x, h0, reset)


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
    batch shape S (prev_reward's shape) -> [*S, F] float32. At a trial's first step there is no
    previous action (`timestep.first`) and its one-hot is all zeros."""
    batch_shape = timestep.prev_reward.shape
    present = (~timestep.first).astype(jnp.float32)[..., None]
    parts = [
        timestep.obs.reshape(batch_shape + (-1,)).astype(jnp.float32),
        jax.nn.one_hot(timestep.prev_action, num_actions, dtype=jnp.float32) * present,
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
        logits = nn.Dense(self.num_actions, kernel_init=orthogonal(0.01), name="policy_head")(h[:, 0])
        values = nn.Dense(1, kernel_init=orthogonal(1.0), name="value_head")(h[:, -1])[..., 0]
        return carry, logits, values


def sequence(module: RL2ActorCritic, params: Any, carry: Any, timesteps: TimeStep):
    """Run over a [T, B] sequence of timesteps: (carry, logits [T, B, A], values [T, B])."""
    return module.apply(params, carry, timesteps)


def step(module: RL2ActorCritic, params: Any, carry: Any, timestep: TimeStep):
    """One step for a batch of [B] timesteps: (carry, logits [B, A], values [B]). Exactly
    `sequence` on a length-1 sequence, so acting and training compute the same function."""
    carry, logits, values = module.apply(params, carry, jax.tree.map(lambda x: x[None], timestep))
    return carry, logits[0], values[0]
