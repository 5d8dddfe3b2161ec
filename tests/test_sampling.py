"""Vectorised samplers (metarl/ops/sampling.py): distributions against scipy, the stated
rejection bound against its integral, streams, shapes, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

from metarl.ops import sampling


def _acceptance(alpha):
    """P(one Marsaglia-Tsang proposal is accepted) at alpha >= 1, by quadrature."""
    d = alpha - 1 / 3
    c = 1 / np.sqrt(9 * d)

    def density(x):
        v = (1 + c * x) ** 3
        return scipy.stats.norm.pdf(x) * np.exp(min(0.0, 0.5 * x * x + d - d * v + d * np.log(v)))

    return scipy.integrate.quad(density, -1 / c + 1e-12, 60, limit=500, points=[0.0])[0]


def test_stated_rejection_bound_holds_and_is_tight():
    rejections = {alpha: 1 - _acceptance(alpha) for alpha in (1.0, 1.01, 1.5, 2.5, 50.0)}
    assert max(rejections.values()) <= sampling.MAX_REJECTION
    assert rejections[1.0] > sampling.MAX_REJECTION - 1e-3  # the worst case is alpha = 1
    assert sorted(rejections.values(), reverse=True) == list(rejections.values())  # falls with alpha
    assert sampling.fallback_probability(3) <= 1.3e-4


def test_uniforms_are_uniform_and_streams_uncorrelated():
    u = np.asarray(sampling.uniforms(jax.random.PRNGKey(0), 4, (50000,)), np.float64)
    assert u.shape == (4, 50000) and u.min() > 0 and u.max() < 1
    for stream in u:
        assert scipy.stats.kstest(stream, "uniform").pvalue > 1e-3
    # correlation of independent uniforms: sd 1 / sqrt(n) = 0.0045
    assert np.all(np.abs(np.corrcoef(u)[np.triu_indices(4, 1)]) < 0.02)
    # neighbouring elements (their seed words are threefry's) are uncorrelated too
    assert abs(np.corrcoef(u[0, :-1], u[0, 1:])[0, 1]) < 0.02
    # the largest possible value is below 1 in float32 (no infinite normals)
    top = sampling._unit(jnp.uint32(2**23 - 1), 23)
    assert float(top) < 1.0 and float(top) == 1 - 2.0**-24


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.5, 50.0])
@pytest.mark.parametrize("proposals", [2, 3])
def test_gamma_goodness_of_fit(alpha, proposals):
    x = np.asarray(sampling.gamma(jax.random.PRNGKey(1), alpha, (50000,), proposals, small_alpha=alpha < 1))
    assert scipy.stats.kstest(x, scipy.stats.gamma(alpha).cdf).pvalue > 1e-3


def test_gamma_moments():
    # moved from tests/test_baselines_mdp.py (sample_gamma), same tolerances
    alpha = jnp.array([0.5, 1.0, 3.0, 40.0])
    draw = jax.jit(lambda key: sampling.gamma(key, alpha, (40000, 4)))
    x = np.asarray(draw(jax.random.PRNGKey(3)))
    np.testing.assert_allclose(x.mean(0), np.asarray(alpha), rtol=0.03)
    np.testing.assert_allclose(x.var(0), np.asarray(alpha), rtol=0.08)


def test_log_gamma_of_tiny_alpha_does_not_underflow():
    # alpha = 0.01: most draws are below float32's smallest number; their logs are fine.
    # E log X = digamma(alpha) = -100.56, sd sqrt(trigamma(alpha)) = 100, so 4 se = 1.8
    alpha = 0.01
    log_x = np.asarray(sampling.log_gamma(jax.random.PRNGKey(2), alpha, (50000,)), np.float64)
    assert np.all(np.isfinite(log_x))
    assert abs(log_x.mean() - scipy.special.digamma(alpha)) < 4 * np.sqrt(scipy.special.polygamma(1, alpha) / 50000)
    # the boosted part, U^(1/alpha): P(log X < -200) = P(X < e^-200) ~ e^(-200 alpha) / Gamma(alpha + 1)
    expected = scipy.stats.gamma(alpha).cdf(np.exp(-200.0))
    assert abs(np.mean(log_x < -200) - expected) < 5 * np.sqrt(expected * (1 - expected) / 50000)


@pytest.mark.parametrize("a, b", [(1.0, 1.0), (3.0, 7.0), (0.4, 2.0), (40.0, 300.0), (2.5, 50.0)])
def test_beta_distribution(a, b):
    # moved from tests/test_baselines_bandit.py (beta_sample), same test, plus (2.5, 50)
    x = np.asarray(sampling.beta(jax.random.PRNGKey(0), jnp.float32(a), jnp.float32(b), (50000,), small_alpha=min(a, b) < 1))
    assert scipy.stats.kstest(x, scipy.stats.beta(a, b).cdf).pvalue > 1e-3


def test_beta_broadcasts_parameters_and_matches_under_jit():
    a = jnp.array([1.0, 2.0, 50.0])
    b = jnp.array([1.0, 5.0, 2.5])
    draw = lambda key: sampling.beta(key, a, b, (20000, 3), small_alpha=False)
    x = np.asarray(draw(jax.random.PRNGKey(4)))
    np.testing.assert_allclose(np.asarray(jax.jit(draw)(jax.random.PRNGKey(4))), x, rtol=1e-5, atol=1e-6)
    mean = np.asarray(a / (a + b))
    sd = np.sqrt(mean * (1 - mean) / (np.asarray(a + b) + 1))
    assert np.all(np.abs(x.mean(0) - mean) < 4 * sd / np.sqrt(20000))


def test_dirichlet_marginals_and_normalisation():
    alpha = jnp.array([1.0, 1.0, 3.0, 0.5])
    x = np.asarray(jax.jit(lambda k: sampling.dirichlet(k, alpha, (40000, 4)))(jax.random.PRNGKey(5)), np.float64)
    np.testing.assert_allclose(x.sum(-1), 1.0, atol=1e-5)
    assert x.min() >= 0
    total = float(alpha.sum())
    for i, a_i in enumerate(np.asarray(alpha)):  # marginal i is Beta(alpha_i, total - alpha_i)
        assert scipy.stats.kstest(x[:, i], scipy.stats.beta(a_i, total - a_i).cdf).pvalue > 1e-3
    # a tiny alpha still gives a valid point of the simplex (normalised in logs)
    tiny = np.asarray(sampling.dirichlet(jax.random.PRNGKey(6), jnp.full((1000, 3), 1e-3)))
    assert np.all(np.isfinite(tiny)) and np.allclose(tiny.sum(-1), 1.0, atol=1e-5)


def test_bad_proposals_raise():
    with pytest.raises(ValueError, match="proposals"):
        sampling.log_gamma(jax.random.PRNGKey(0), 1.0, (3,), proposals=0)
