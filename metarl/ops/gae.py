"""Generalised advantage estimation (Schulman et al. 2016) over one sequence.

In RL² the *trial* is the agent's episode: the recurrent state, and therefore the return being
optimised, spans all n episodes of a task. An episode ending inside a trial (`done`) is just
another input to the policy; it is NOT a boundary for the value bootstrap. Only the end of the
trial is terminal (discount 0). `trial_discounts` builds the discounts this way; pass the result
to `generalized_advantage_estimation`.

Names follow rlax: `r_t` is the reward of the transition that starts at step t, `discount_t` its
discount (0 where the transition ends the trial), `v_tm1` the value of the state the action was
taken in and `v_t` the value of the state it led to.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def trial_discounts(gamma: float, trial_done_t: jax.Array, valid_t: jax.Array | None = None) -> jax.Array:
    """[T] discounts: `gamma` inside a trial (episode ends included), 0 at the step that ends the
    trial and at invalid (padding) steps after it."""
    not_terminal = ~jnp.asarray(trial_done_t, jnp.bool_)
    if valid_t is not None:
        not_terminal = not_terminal & jnp.asarray(valid_t, jnp.bool_)
    return gamma * not_terminal.astype(jnp.float32)


def generalized_advantage_estimation(
    r_t: jax.Array, discount_t: jax.Array, v_tm1: jax.Array, v_t: jax.Array, lambda_: float, trace_t: jax.Array | None = None
) -> jax.Array:
    """GAE advantages for one sequence.

    Args:
      r_t: [T] rewards.
      discount_t: [T] discounts of the bootstrap (0 where the transition is terminal).
      v_tm1: [T] values of the states the actions were taken in.
      v_t: [T] values of the next states (ignored where discount_t is 0).
      lambda_: the GAE lambda in [0, 1].
      trace_t: [T] discounts that carry the advantage of step t+1 back to step t (default
        `discount_t`). They differ at a time-limit truncation: the bootstrap goes on
        (discount_t = gamma, v_t the value of the state the episode was cut in) but the next
        step belongs to another episode (trace_t = 0).

    Returns:
      [T] advantages A_t = delta_t + trace_t lambda A_{t+1}, with delta_t = r_t + discount_t v_t
      - v_tm1. Add `v_tm1` for the lambda-returns (value targets).
    """
    r_t, discount_t, v_tm1, v_t = (jnp.asarray(x, jnp.float32) for x in (r_t, discount_t, v_tm1, v_t))
    trace_t = discount_t if trace_t is None else jnp.asarray(trace_t, jnp.float32)
    delta_t = r_t + discount_t * v_t - v_tm1

    def backward(acc, xs):
        delta, trace = xs
        acc = delta + trace * lambda_ * acc
        return acc, acc

    _, advantages = jax.lax.scan(backward, jnp.float32(0.0), (delta_t, trace_t), reverse=True)
    return advantages
