"""Stateless RL maths on one unbatched sequence (rlax style); callers vmap over batches."""

from metarl.ops.gae import generalized_advantage_estimation, trial_discounts
from metarl.ops.ppo import clipped_value_loss, entropy_from_logits, ppo_clipped_policy_loss

__all__ = [
    "clipped_value_loss",
    "entropy_from_logits",
    "generalized_advantage_estimation",
    "ppo_clipped_policy_loss",
    "trial_discounts",
]
