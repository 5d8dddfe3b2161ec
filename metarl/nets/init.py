"""Initializers that avoid LAPACK custom calls.

`orthogonal(scale)` gives what `jax.nn.initializers.orthogonal(scale)` gives (the same Gaussian
draw, the same Q of its QR decomposition with a positive R diagonal, equal to float32 rounding)
but computes Q by Gram-Schmidt with re-orthogonalisation (CGS2: every column projected out twice)
in a `lax.scan` of matrix-vector products, with no QR custom call. Why: jaxlib's batched CPU QR
(what `jnp.linalg.qr` becomes under `vmap`, e.g. initialising several seeds at once) fans its batch
out over XLA's own thread pool from inside a pool thread and waits; with XLA's concurrency-optimised
CPU scheduler (on by default) every pool thread can be waiting, and the program never finishes (seen
with PPO's init vmapped over 3-5 seeds on jax 0.10.2). Turning the scheduler off instead costs RL²'s
training about 14% of its speed (benchmarks/rl2_speed.py, measured side by side).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def orthonormal_columns(a: jax.Array) -> jax.Array:
    """The Q of the reduced QR decomposition of a tall matrix a [m, k] (m >= k) with R's diagonal
    positive: columns orthonormalised in order by classical Gram-Schmidt, twice."""
    m, k = a.shape

    def body(q, j):
        col = a[:, j]
        for _ in range(2):  # the second pass restores orthogonality lost to rounding
            col = col - q @ (q.T @ col)
        q = q.at[:, j].set(col / jnp.linalg.norm(col))
        return q, None

    q, _ = jax.lax.scan(body, jnp.zeros((m, k), a.dtype), jnp.arange(k))
    return q


def orthogonal(scale: float = 1.0, column_axis: int = -1, dtype=jnp.float32):
    """`jax.nn.initializers.orthogonal` without the QR custom call (see the module doc)."""

    def init(key, shape, dtype=dtype):
        if len(shape) < 2:
            raise ValueError("orthogonal initializer requires at least a 2D shape")
        n_rows, n_cols = math.prod(shape) // shape[column_axis], shape[column_axis]
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = orthonormal_columns(z)
        if n_rows < n_cols:
            q = q.T
        q = jnp.reshape(q, tuple(np.delete(shape, column_axis)) + (shape[column_axis],))
        return jnp.asarray(scale, dtype) * jnp.moveaxis(q, -1, column_axis)

    return init
