"""Environment streams for per-context learners (PPO, DQN): `num_envs` streams, each running one
episode per task (`Trial(env, 1, resample=True)`) on a pool of `POOL` tasks drawn afresh every
update (the slot of the episode in progress keeps its task), carried in the train state from update
to update so that a resumed run continues them exactly. `collect` runs `steps` steps of every
stream through the rollout primitive and tracks each stream's episode return.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from metarl.envs.trial import TimeStep, Trial, TrialState
from metarl.rollout import Step, rollout

POOL = 16  #: tasks per stream in each update's pool (a stream starting more episodes reuses them in turn)


@struct.dataclass
class Streams:
    """What each of the `num_envs` streams shows and runs on (leading axis: the stream)."""

    timestep: TimeStep  #: what each stream shows now
    trial_state: TrialState  #: each stream's trial (one episode per task)
    pool: Any  #: the tasks the streams run on [num_envs, POOL, ...] (episode k of a stream: task k % POOL)
    episode_return: jax.Array  #: [num_envs] the running return of each stream's episode
    last_return: jax.Array  #: [num_envs] the return of each stream's last finished episode


def trial(env, expose_context: bool = False) -> Trial:
    return Trial(env, 1, resample=True, expose_context=expose_context)


def draw_pool(env, num_envs: int, key: jax.Array) -> Any:
    flat = env.sample_tasks(key, num_envs * POOL)
    return jax.tree.map(lambda x: x.reshape((num_envs, POOL) + x.shape[1:]), flat)


def init_streams(trial_: Trial, num_envs: int, key: jax.Array) -> Streams:
    key_pool, key_reset = jax.random.split(key)
    pool = draw_pool(trial_.env, num_envs, key_pool)
    timestep, trial_state = jax.vmap(lambda k, p: trial_.reset(k, pool=p))(jax.random.split(key_reset, num_envs), pool)
    zeros = jnp.zeros((num_envs,), jnp.float32)
    return Streams(timestep, trial_state, pool, zeros, zeros)


def refresh_pool(streams: Streams, env, key: jax.Array) -> Streams:
    """A fresh pool, except the slot of each stream's episode in progress, which keeps its task."""
    num_envs = streams.episode_return.shape[0]
    slot = streams.trial_state.trial_index % POOL
    current = jax.tree.map(lambda x: jax.vmap(lambda row, i: row[i])(x, slot), streams.pool)
    pool = jax.tree.map(lambda new, cur: jax.vmap(lambda row, i, c: row.at[i].set(c))(new, slot, cur), draw_pool(env, num_envs, key), current)
    return streams.replace(pool=pool)


def collect(
    trial_: Trial,
    streams: Streams,
    policy: Callable,
    record: Callable[[Step], Any],
    keys: jax.Array,
    carry: Any = (),
) -> tuple[Streams, Any, Any, jax.Array]:
    """`len(keys)` steps of every stream under `policy(carry, timestep, key, t) -> (action, carry,
    out)` (batched over streams), recording `record(step)` at each: (streams, batch [T, num_envs,
    ...], carry, the number of episodes that ended). The streams' episode returns are tracked."""

    def with_episode_ends(s: Step):
        return {"recorded": record(s), "reward": s.reward, "ended": s.info["terminated"] | s.info["truncated"]}

    (timestep, trial_state, carry, _), batch = rollout(
        trial_, policy, carry, streams.timestep, streams.trial_state, keys, batch=True, record=with_episode_ends, pool=streams.pool
    )

    def track(acc, xs):
        running, last = acc
        reward, ended = xs
        running = running + reward
        return (jnp.where(ended, 0.0, running), jnp.where(ended, running, last)), None

    (running, last), _ = jax.lax.scan(track, (streams.episode_return, streams.last_return), (batch["reward"], batch["ended"]))
    new = streams.replace(timestep=timestep, trial_state=trial_state, episode_return=running, last_return=last)
    return new, batch["recorded"], carry, jnp.sum(batch["ended"]).astype(jnp.float32)
