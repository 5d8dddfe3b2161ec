"""Vectorised Gamma, Beta and Dirichlet samplers for the CPU (stateless, key first).

jax.random.gamma / beta / dirichlet run a rejection while-loop per element, which under vmap on
the CPU is 50-100x slower than the rest of a posterior-sampling agent. Here every draw costs the
same fixed work, so it vectorises:

- random words: ONE threefry word per element (threefry dominated the cost); every further
  uniform of that element is a murmur3-finaliser hash of the word and a Weyl counter (`uniforms`);
- Gamma(alpha, 1): Marsaglia & Tsang (2000) with a fixed number P of proposals (`log_gamma`),
  computed in logs so that draws far below the float32 range (alpha << 1) stay usable.

Exactness: a draw is an exact Marsaglia-Tsang draw unless all P proposals are rejected. One
proposal is rejected with probability r(alpha) <= MAX_REJECTION = 0.0484 for every alpha >= 1
(r = 0.0483 at alpha = 1, 0.0139 at 2.5, 0.0006 at 50; alpha < 1 is sampled through alpha + 1 >= 1),
so that happens with probability <= MAX_REJECTION ** P (1.1e-4 for P = 3, 2.3e-3 for P = 2); the
last proposal is then returned unchecked (a draw from the proposal, not from the Gamma), or the
proposal's centre d = alpha - 1/3 if that proposal is not even positive. Uniforms have 23 bits
and the hashed streams are statistically good, not cryptographic: fine for Monte Carlo, not for
anything adversarial.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["MAX_REJECTION", "beta", "dirichlet", "fallback_probability", "gamma", "log_gamma", "uniforms"]

#: largest probability, over alpha >= 1, that one Marsaglia-Tsang proposal is rejected (at alpha = 1;
#: it falls with alpha). tests/test_sampling.py checks it against the integral.
MAX_REJECTION = 0.0484

#: default proposals per draw: all rejected with probability <= MAX_REJECTION ** 3 = 1.1e-4
PROPOSALS = 3

_WEYL = 0x9E3779B9  # 2^32 / golden ratio: consecutive counters differ in many bits


def fallback_probability(proposals: int) -> float:
    """Upper bound, over alpha >= 1 (and every alpha with small_alpha), of the probability that
    a draw is not an exact Gamma draw: all `proposals` proposals rejected."""
    return MAX_REJECTION**proposals


def _seed_words(key: jax.Array, size: int) -> jax.Array:
    """[size] uint32 threefry words.

    The samplers work on flat [size] arrays and reshape at the end: XLA's CPU loops vectorise
    over the last axis only, and a short one (a Dirichlet over 10 states) made the same draws
    ~6x slower; under vmap the flat axis stays last."""
    return jax.random.bits(key, (size,), jnp.uint32)


def _hash(seed: jax.Array, index: int) -> jax.Array:
    """uint32 word of stream `index` (static, >= 0) of each element of `seed`."""
    x = seed ^ jnp.uint32((_WEYL * (index + 1)) % 2**32)
    x = x ^ (x >> 16)  # murmur3's 32-bit finaliser: a bijection with full avalanche
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _unit(bits: jax.Array, width: int) -> jax.Array:
    """(k + 0.5) / 2^width for k the low `width` (<= 23) bits: exact in float32, in (0, 1)."""
    k = bits & jnp.uint32(2**width - 1)
    return (k.astype(jnp.float32) + 0.5) * jnp.float32(2.0**-width)


def _stream(seed: jax.Array, index: int) -> jax.Array:
    """Uniforms in (0, 1) of seed's shape: stream `index` of each element. 23 bits, so that the
    largest value 1 - 2^-24 is exact (24 bits would round the top one up to 1.0)."""
    return _unit(_hash(seed, index) >> 9, 23)


def _normal_pair(seed: jax.Array, index: int) -> tuple[jax.Array, jax.Array]:
    """Two independent N(0, 1) of seed's shape from streams index, index + 1 (Box-Muller).

    Half the cost of an inverse-CDF normal (erf_inv was half the cost of a Gamma draw): the
    angle is a uniform quarter turn (top 2 bits) plus phi uniform in (-pi/4, pi/4) (21 bits),
    whose sine and cosine are Taylor polynomials (error < 2e-9 there); XLA's own sin/cos are
    slow on the CPU (range reduction)."""
    radius = jnp.sqrt(-2.0 * jnp.log(_stream(seed, index)))
    bits = _hash(seed, index + 1)
    phi = (_unit(bits, 21) - 0.5) * jnp.float32(math.pi / 2.0)
    phi2 = phi * phi
    sin = phi * (1.0 + phi2 * (-1.0 / 6 + phi2 * (1.0 / 120 + phi2 * (-1.0 / 5040 + phi2 / 362880))))
    cos = 1.0 + phi2 * (-0.5 + phi2 * (1.0 / 24 + phi2 * (-1.0 / 720 + phi2 * (1.0 / 40320 - phi2 / 3628800))))
    quarter = bits >> 30  # rotate (cos, sin) by quarter * pi / 2
    odd = (quarter & 1) == 1
    sign = jnp.where(quarter >= 2, -radius, radius)
    return sign * jnp.where(odd, -sin, cos), sign * jnp.where(odd, cos, sin)


def uniforms(key: jax.Array, count: int, shape: tuple[int, ...]) -> jax.Array:
    """[count, *shape] float32 uniforms in (0, 1), from one threefry word per element of `shape`.

    Stream i of an element is murmur3's finaliser of (word XOR (i + 1) * 0x9E3779B9), taking 23
    bits: values (k + 0.5) / 2^23, so strictly inside (0, 1) and symmetric about 1/2. Streams of
    one element are not independent in the strict sense, but no correlation is measurable at
    Monte-Carlo sizes (tests/test_sampling.py)."""
    shape = tuple(shape)
    seed = _seed_words(key, math.prod(shape))
    return jnp.stack([_stream(seed, i) for i in range(count)]).reshape((count, *shape))


def _log_gammas(seed: jax.Array, alphas: list[jax.Array], proposals: int, small_alpha: bool) -> list[jax.Array]:
    """log Gamma(alpha, 1) of seed's shape for each alpha in `alphas` (independent draws).

    Streams of `seed`: first the normal pairs of all proposals, then the acceptance uniforms,
    then (small_alpha) the boost uniforms."""
    normals = []
    for pair in range((len(alphas) * proposals + 1) // 2):
        normals.extend(_normal_pair(seed, 2 * pair))
    stream = 2 * ((len(alphas) * proposals + 1) // 2)
    out = []
    for j, alpha in enumerate(alphas):
        boosted = alpha < 1.0
        a = jnp.where(boosted, alpha + 1.0, alpha) if small_alpha else alpha
        d = a - 1.0 / 3.0
        c = 1.0 / jnp.sqrt(9.0 * d)
        log_v_chosen = accepted = None
        # Proposal i: x ~ N(0, 1), v = (1 + c x)^3, accepted iff v > 0 and
        # log u < x^2 / 2 + d - d v + d log v. The first accepted wins, else the last (unchecked).
        for i in range(proposals):
            x = normals[j * proposals + i]
            u = _stream(seed, stream + j * proposals + i)
            cube_root = 1.0 + c * x
            positive = cube_root > 0.0
            log_v = 3.0 * jnp.log(jnp.where(positive, cube_root, 1.0))  # 0 (the centre d) if v <= 0
            ok = positive & (jnp.log(u) < 0.5 * x * x + d - d * cube_root**3 + d * log_v)
            if i == 0:
                log_v_chosen, accepted = log_v, ok
            else:
                log_v_chosen = jnp.where(accepted, log_v_chosen, log_v)
                accepted = accepted | ok
        log_gamma = jnp.log(d) + log_v_chosen
        if small_alpha:
            # Gamma(alpha) = Gamma(alpha + 1) U^(1 / alpha), in logs: tiny draws do not underflow
            u_boost = _stream(seed, stream + len(alphas) * proposals + j)
            log_gamma = jnp.where(boosted, log_gamma + jnp.log(u_boost) / jnp.where(boosted, alpha, 1.0), log_gamma)
        out.append(log_gamma)
    return out


def _check(proposals: int) -> None:
    if not isinstance(proposals, int) or proposals < 1:
        raise ValueError(f"proposals must be an int >= 1, got {proposals!r}")


def log_gamma(
    key: jax.Array, alpha: jax.Array, shape: tuple[int, ...], proposals: int = PROPOSALS, small_alpha: bool = True
) -> jax.Array:
    """`shape` float32 draws of log X, X ~ Gamma(alpha, 1) (alpha broadcast to `shape`, > 0).

    Marsaglia-Tsang with `proposals` (static) proposals: not exact with probability
    <= fallback_probability(proposals) (see the module doc). `small_alpha` (static): some alpha
    may be < 1; False skips the boost Gamma(alpha + 1) U^(1/alpha) and is then wrong for alpha < 1."""
    _check(proposals)
    shape = tuple(shape)
    alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), shape).reshape(-1)
    return _log_gammas(_seed_words(key, alpha.size), [alpha], proposals, small_alpha)[0].reshape(shape)


def gamma(
    key: jax.Array, alpha: jax.Array, shape: tuple[int, ...], proposals: int = PROPOSALS, small_alpha: bool = True
) -> jax.Array:
    """`shape` float32 Gamma(alpha, 1) draws; `exp(log_gamma(...))`, so alpha << 1 can give 0."""
    return jnp.exp(log_gamma(key, alpha, shape, proposals, small_alpha))


def beta(
    key: jax.Array,
    a: jax.Array,
    b: jax.Array,
    shape: tuple[int, ...],
    proposals: int = PROPOSALS,
    small_alpha: bool = True,
) -> jax.Array:
    """`shape` float32 Beta(a, b) draws in [0, 1] (a, b broadcast to `shape`), as
    Ga / (Ga + Gb) = sigmoid(log Ga - log Gb) of two Gammas from one seed word per element.
    `proposals`, `small_alpha` (static; a or b may be < 1) as in `log_gamma`."""
    _check(proposals)
    shape = tuple(shape)
    a = jnp.broadcast_to(jnp.asarray(a, jnp.float32), shape).reshape(-1)
    b = jnp.broadcast_to(jnp.asarray(b, jnp.float32), shape).reshape(-1)
    log_ga, log_gb = _log_gammas(_seed_words(key, a.size), [a, b], proposals, small_alpha)
    return jax.nn.sigmoid(log_ga - log_gb).reshape(shape)


def dirichlet(
    key: jax.Array,
    alpha: jax.Array,
    shape: tuple[int, ...] | None = None,
    proposals: int = PROPOSALS,
    small_alpha: bool = True,
) -> jax.Array:
    """Dirichlet(alpha) draws over the LAST axis: `shape` (default alpha's shape; alpha broadcast
    to it) float32, non-negative, summing to 1 along the last axis. Normalised Gammas, normalised
    in logs (a softmax), so tiny alpha gives a valid draw rather than 0 / 0. `proposals`,
    `small_alpha` (static: some alpha may be < 1) as in `log_gamma`."""
    alpha = jnp.asarray(alpha, jnp.float32)
    shape = alpha.shape if shape is None else tuple(shape)
    if not shape:
        raise ValueError("dirichlet needs at least one axis (the categories)")
    return jax.nn.softmax(log_gamma(key, alpha, shape, proposals, small_alpha), axis=-1)
