"""The one rollout primitive: every collection, in training and in evaluation, is a scan of
act -> `Trial.step` -> record under a policy function.

    final, records = rollout(trial, policy, policy_state, timestep, trial_state, keys)

- `policy(policy_state, timestep, key, t) -> (action, policy_state, out)`: acts on what the trial
  shows (`timestep`, batched like the trial state), with its own key, at scan step `t` (int32);
  `out` is anything the caller wants recorded with the step (log-probabilities, values, logits).
- `keys`: one key per scan step, `[num_steps, 2]` (or `[num_steps, B, 2]`: one per step and
  trial). Each splits into `(key_act, key_env)`: the policy gets `key_act` as it is; the trial step
  gets `key_env`, split over the B trials when `batch=True` and it is a single key.
- `batch=True`: the trial state has a leading axis of B trials and `Trial.step` is vmapped over it
  (the policy is written for the whole batch, e.g. one network step on B inputs); `batch=False`:
  one trial.
- `record(step) -> pytree` chooses what is stacked over time (`step` is a `Step`); the default
  stacks the whole `Step`. `reduce(acc, step) -> acc` folds steps into a carried accumulator
  instead (e.g. per-episode returns, without a `[num_steps, ...]` array).
- `pool`: the tasks a resampling trial (`Trial(resample=True)`) starts its next trials on
  (`Trial.step`'s `pool`; batched with a leading B axis when `batch=True`).

Returns `((timestep, trial_state, policy_state, acc), records)`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from metarl.envs.trial import TimeStep, Trial, TrialState

__all__ = ["Step", "rollout", "step_keys"]


@struct.dataclass
class Step:
    """One scan step as `record`/`reduce` see it (batched like the trial)."""

    t: jax.Array  #: int32 scan step
    timestep: TimeStep  #: what the policy saw
    action: jax.Array
    reward: jax.Array  #: float32, the step's reward (not masked: see info["valid"])
    info: dict  #: Trial.step's info: valid, episode_index, terminated, truncated, trial_done
    out: Any  #: the policy's extra output
    next_timestep: TimeStep  #: what the trial shows after the step


def _whole(step: Step) -> Step:
    return step


def step_keys(key: jax.Array, num_steps: int) -> jax.Array:
    """[num_steps, 2]: the per-step keys `rollout` takes, `jax.random.split(key, num_steps)`."""
    return jax.random.split(key, num_steps)


def rollout(
    trial: Trial,
    policy: Callable[[Any, TimeStep, jax.Array, jax.Array], tuple[jax.Array, Any, Any]],
    policy_state: Any,
    timestep: TimeStep,
    trial_state: TrialState,
    keys: jax.Array,
    *,
    batch: bool = False,
    record: Callable[[Step], Any] | None = _whole,
    reduce: Callable[[Any, Step], Any] | None = None,
    acc: Any = None,
    pool: Any = None,
) -> tuple[tuple[TimeStep, TrialState, Any, Any], Any]:
    """Scan `len(keys)` steps of `policy` on `trial` (see the module docstring)."""
    if batch:
        num_trials = jax.tree.leaves(trial_state.finished)[0].shape[0]
        env_step = jax.vmap(trial.step, in_axes=(0, 0, 0, 0 if pool is not None else None))
    else:
        env_step = trial.step

    single = 0 if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else 1  # ndim of one key
    per_trial = keys.ndim - 1 > single

    def body(carry, xs):
        timestep, state, pstate, acc = carry
        t, key_t = xs
        if per_trial:  # one key per trial
            key_act, key_env = jnp.moveaxis(jax.vmap(jax.random.split)(key_t), 1, 0)
        else:
            key_act, key_env = jax.random.split(key_t)
            if batch:
                key_env = jax.random.split(key_env, num_trials)
        action, pstate, out = policy(pstate, timestep, key_act, t)
        next_timestep, state, reward, info = env_step(key_env, state, action, pool)
        step = Step(t, timestep, action, reward, info, out, next_timestep)
        if reduce is not None:
            acc = reduce(acc, step)
        recorded = record(step) if record is not None else None
        return (next_timestep, state, pstate, acc), recorded

    ts = jnp.arange(keys.shape[0], dtype=jnp.int32)
    return jax.lax.scan(body, (timestep, trial_state, policy_state, acc), (ts, keys))
