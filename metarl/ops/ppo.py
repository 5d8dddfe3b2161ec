"""PPO losses (Schulman et al. 2017) on one sequence; callers vmap over batches.

Every loss takes an optional `mask_t` ([T], 1 for real steps, 0 for padding) and returns the
mean over the masked steps, so a batch of sequences of equal length can be vmapped and averaged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x_t: jax.Array, mask_t: jax.Array | None) -> jax.Array:
    """Mean of `x_t` over the entries where `mask_t` is 1 (over all of them without a mask)."""
    if mask_t is None:
        return jnp.mean(x_t)
    mask_t = jnp.asarray(mask_t, jnp.float32)
    return jnp.sum(x_t * mask_t) / jnp.maximum(jnp.sum(mask_t), 1.0)


def standardise(adv: jax.Array, mask: jax.Array, total_sum=jnp.sum) -> jax.Array:
    """Advantages shifted and scaled to mean 0 and standard deviation 1 over the entries where
    `mask` is 1 (`total_sum`: how a sum is taken, e.g. a psum over devices)."""
    mask = jnp.asarray(mask, jnp.float32)
    n = jnp.maximum(total_sum(mask), 1.0)
    mean = total_sum(adv * mask) / n
    std = jnp.sqrt(total_sum(jnp.square(adv - mean) * mask) / n)
    return (adv - mean) / (std + 1e-8)


def ppo_clipped_policy_loss(
    logp_t: jax.Array,
    logp_old_t: jax.Array,
    adv_t: jax.Array,
    epsilon: float,
    mask_t: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped surrogate policy loss (to minimise).

    Args:
      logp_t: [T] log-probabilities of the taken actions under the current policy.
      logp_old_t: [T] the same under the policy that collected the data (no gradient flows).
      adv_t: [T] advantages (treated as constants).
      epsilon: clip range, ratios outside [1 - eps, 1 + eps] give no gradient.
      mask_t: optional [T] validity mask.

    Returns:
      (loss, aux) where loss = -mean(min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)) and aux holds
      `approx_kl` (mean of (ratio - 1) - log ratio, Schulman's low-variance estimator of
      KL(old || new)) and `clip_fraction` (share of steps whose ratio was clipped).
    """
    adv_t = jax.lax.stop_gradient(adv_t)
    log_ratio_t = logp_t - jax.lax.stop_gradient(logp_old_t)
    ratio_t = jnp.exp(log_ratio_t)
    surrogate_t = jnp.minimum(ratio_t * adv_t, jnp.clip(ratio_t, 1.0 - epsilon, 1.0 + epsilon) * adv_t)
    loss = -masked_mean(surrogate_t, mask_t)
    log_ratio_sg = jax.lax.stop_gradient(log_ratio_t)
    approx_kl = masked_mean(jnp.expm1(log_ratio_sg) - log_ratio_sg, mask_t)
    clipped = (jnp.abs(jnp.exp(log_ratio_sg) - 1.0) > epsilon).astype(jnp.float32)
    return loss, {"approx_kl": approx_kl, "clip_fraction": masked_mean(clipped, mask_t)}


def clipped_value_loss(
    v_t: jax.Array,
    target_t: jax.Array,
    v_old_t: jax.Array | None = None,
    epsilon: float | None = None,
    mask_t: jax.Array | None = None,
) -> jax.Array:
    """Value loss 0.5 * mean((v - target)^2); with `epsilon` (and `v_old_t`), PPO's clipped form
    0.5 * mean(max((v - target)^2, (v_old + clip(v - v_old, -eps, eps) - target)^2)).

    Args: v_t, target_t, v_old_t, mask_t: [T]. `target_t` and `v_old_t` get no gradient."""
    target_t = jax.lax.stop_gradient(target_t)
    loss_t = jnp.square(v_t - target_t)
    if epsilon is not None:
        if v_old_t is None:
            raise ValueError("clipped_value_loss: epsilon needs v_old_t")
        v_old_t = jax.lax.stop_gradient(v_old_t)
        v_clipped_t = v_old_t + jnp.clip(v_t - v_old_t, -epsilon, epsilon)
        loss_t = jnp.maximum(loss_t, jnp.square(v_clipped_t - target_t))
    return 0.5 * masked_mean(loss_t, mask_t)


def entropy_from_logits(logits_t: jax.Array, mask_t: jax.Array | None = None) -> jax.Array:
    """Mean entropy of categorical policies. logits_t: [T, A]; returns a scalar."""
    logp = jax.nn.log_softmax(logits_t, axis=-1)
    entropy_t = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return masked_mean(entropy_t, mask_t)
