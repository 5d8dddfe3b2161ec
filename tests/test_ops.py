"""GAE and PPO losses against hand-computed values, with and without jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarl.ops import (
    clipped_value_loss,
    entropy_from_logits,
    generalized_advantage_estimation,
    ppo_clipped_policy_loss,
    trial_discounts,
)

JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def _maybe_jit(fn, jit, **static):
    fn = jax.tree_util.Partial(fn, **static) if static else fn
    return jax.jit(fn) if jit else fn


@JIT
def test_gae_hand_computed(jit):
    r_t = jnp.array([1.0, 0.0, 2.0])
    discount_t = jnp.array([0.9, 0.9, 0.0])
    v_tm1 = jnp.array([0.5, 1.0, 1.5])
    v_t = jnp.array([1.0, 1.5, 9.9])  # the last is ignored: discount 0
    # delta = [1 + .9 - .5, .9*1.5 - 1, 2 - 1.5] = [1.4, .35, .5]
    # A2 = .5; A1 = .35 + .9*.5*.5 = .575; A0 = 1.4 + .45*.575 = 1.65875
    gae = _maybe_jit(generalized_advantage_estimation, jit, lambda_=0.5)
    np.testing.assert_allclose(gae(r_t, discount_t, v_tm1, v_t), [1.65875, 0.575, 0.5], rtol=1e-6)


@JIT
def test_gae_limits(jit):
    key = jax.random.key(0)
    r_t, v_tm1 = jax.random.normal(key, (2, 6))
    discount_t = jnp.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.0])
    v_t = jnp.concatenate([v_tm1[1:], jnp.zeros(1)])
    delta = r_t + discount_t * v_t - v_tm1
    gae0 = _maybe_jit(generalized_advantage_estimation, jit, lambda_=0.0)
    np.testing.assert_allclose(gae0(r_t, discount_t, v_tm1, v_t), delta, rtol=1e-5, atol=1e-6)
    # lambda = 1: discounted Monte Carlo return minus the value.
    ret, returns = 0.0, []
    for r, d in zip(reversed(np.asarray(r_t)), reversed(np.asarray(discount_t))):
        ret = r + d * ret
        returns.append(ret)
    mc = np.array(returns[::-1])
    gae1 = _maybe_jit(generalized_advantage_estimation, jit, lambda_=1.0)
    np.testing.assert_allclose(gae1(r_t, discount_t, v_tm1, v_t), mc - np.asarray(v_tm1), rtol=1e-5, atol=1e-5)


def test_trial_discounts_ignore_episode_ends():
    # Only the trial's end (and padding after it) is terminal; episode ends are not inputs at all.
    trial_done = jnp.array([False, False, True, False])
    valid = jnp.array([True, True, True, False])
    np.testing.assert_allclose(trial_discounts(0.5, trial_done, valid), [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(trial_discounts(0.5, trial_done), [0.5, 0.5, 0.0, 0.5])


@JIT
def test_ppo_policy_loss_hand_computed(jit):
    logp = jnp.log(jnp.array([0.5, 0.2, 0.42]))
    logp_old = jnp.log(jnp.array([0.4, 0.4, 0.4]))  # ratios 1.25, 0.5, 1.05
    adv = jnp.array([1.0, -1.0, 2.0])
    loss_fn = _maybe_jit(ppo_clipped_policy_loss, jit, epsilon=0.1)
    loss, aux = loss_fn(logp, logp_old, adv)
    # min(1.25, 1.1) = 1.1; min(-0.5, -0.9) = -0.9; min(2.1, 2.2) = 2.1
    np.testing.assert_allclose(loss, -(1.1 - 0.9 + 2.1) / 3, rtol=1e-6)
    np.testing.assert_allclose(aux["clip_fraction"], 2 / 3, rtol=1e-6)
    kl = [(r - 1) - math.log(r) for r in (1.25, 0.5, 1.05)]
    np.testing.assert_allclose(aux["approx_kl"], np.mean(kl), rtol=1e-5)
    # Gradient flows only through the unclipped third step: d/dlogp (-r A / 3) = -1.05 * 2 / 3.
    grad = jax.grad(lambda lp: loss_fn(lp, logp_old, adv)[0])(logp)
    np.testing.assert_allclose(grad, [0.0, 0.0, -1.05 * 2 / 3], rtol=1e-5, atol=1e-7)


@JIT
def test_ppo_policy_loss_mask(jit):
    logp = jnp.log(jnp.array([0.5, 0.2, 0.42]))
    logp_old = jnp.log(jnp.array([0.4, 0.4, 0.4]))
    adv = jnp.array([1.0, -1.0, 2.0])
    loss_fn = _maybe_jit(ppo_clipped_policy_loss, jit, epsilon=0.1)
    loss, aux = loss_fn(logp, logp_old, adv, mask_t=jnp.array([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(loss, -(1.1 + 2.1) / 2, rtol=1e-6)
    np.testing.assert_allclose(aux["clip_fraction"], 0.5, rtol=1e-6)


@JIT
def test_value_loss_hand_computed(jit):
    v = jnp.array([1.0, 2.0])
    target = jnp.array([0.0, 0.0])
    v_old = jnp.array([0.5, 2.5])
    plain = _maybe_jit(clipped_value_loss, jit)
    np.testing.assert_allclose(plain(v, target), 0.5 * (1 + 4) / 2, rtol=1e-6)
    clipped = _maybe_jit(clipped_value_loss, jit, epsilon=0.2)
    # clipped predictions 0.7 and 2.3: max(1, .49) = 1, max(4, 5.29) = 5.29
    np.testing.assert_allclose(clipped(v, target, v_old), 0.5 * (1 + 5.29) / 2, rtol=1e-6)


@JIT
def test_entropy_hand_computed(jit):
    logits = jnp.log(jnp.array([[0.5, 0.5], [0.25, 0.75]]))
    ent = _maybe_jit(entropy_from_logits, jit)
    h2 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(ent(logits), (math.log(2) + h2) / 2, rtol=1e-6)
    np.testing.assert_allclose(ent(logits, jnp.array([0.0, 1.0])), h2, rtol=1e-6)


def test_gae_bootstraps_through_a_truncation_but_not_across_it():
    from metarl.ops.gae import generalized_advantage_estimation

    # steps 0, 1 of an episode cut by a time limit after step 1, then step 2 of the next episode.
    r = jnp.array([1.0, 2.0, 3.0])
    v_tm1 = jnp.array([0.5, 0.25, 1.0])
    v_t = jnp.array([0.25, 4.0, 2.0])  # v_t[1]: the value of the state the episode was cut in
    gamma, lam = 0.9, 0.5
    discount = jnp.array([gamma, gamma, gamma])  # no termination: every step bootstraps
    trace = jnp.array([gamma, 0.0, gamma])  # the trace stops at the cut
    adv = generalized_advantage_estimation(r, discount, v_tm1, v_t, lam, trace)
    d = [1.0 + 0.9 * 0.25 - 0.5, 2.0 + 0.9 * 4.0 - 0.25, 3.0 + 0.9 * 2.0 - 1.0]
    expected = [d[0] + 0.9 * 0.5 * d[1], d[1], d[2]]
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    # without trace_t it is the old single-discount GAE
    np.testing.assert_allclose(generalized_advantage_estimation(r, discount, v_tm1, v_t, lam),
                               [d[0] + 0.45 * (d[1] + 0.45 * d[2]), d[1] + 0.45 * d[2], d[2]], rtol=1e-6)


def test_standardise_uses_only_the_masked_entries():
    from metarl.ops.ppo import standardise

    # masked entries 1 and 3: mean 2, std 1; the padded 100 is shifted and scaled with them
    np.testing.assert_allclose(standardise(jnp.array([1.0, 3.0, 100.0]), jnp.array([True, True, False])), [-1.0, 1.0, 98.0], rtol=1e-6)
