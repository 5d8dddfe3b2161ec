"""First-Explore's Dark Treasure Room (Norman & Clune).

A `size` x `size` grid; the agent starts at the centre (size // 2, size // 2) and observes only
its own coordinates (x, y) -- never the treasures. Five actions: 0 no-op, 1 up (y + 1), 2 right
(x + 1), 3 down (y - 1), 4 left (x - 1); a move off the grid is blocked (the agent stays).

A task is `treasures` cells drawn uniformly and independently (they may coincide with each other
and with the start cell) with values ~ U(minval, maxval). After each action, every treasure on the
agent's new cell that was not yet collected in this episode pays its value and is marked
collected; staying on (or returning to) a collected treasure pays nothing more until the next
episode (`reset` clears the collected flags). The start cell's treasure is not paid at reset, only
by a step that ends on it (e.g. a no-op). Episodes last `horizon` steps.

Defaults are the paper's deceptive room (9x9, 8 treasures, U(-4, 2): mean value -1, episodes of
9 steps); `minval=0` is the control. Rules from the reference's `darkroom/darkroomofbandits.py`
(`BatchedDarkRoom` with `rand_start=False`, `reward_once=True`) and
`treasure-room_runs/treasure-room_first-explore.py` (k=8, minval=-4, episode length = room size).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metarl.envs.base import Environment
from metarl.envs.registry import register
from metarl.errors import ConfigError, check, check_float, check_int

#: (dx, dy) of each action: no-op, up, right, down, left.
ACTION_MOVES = np.array([[0, 0], [0, 1], [1, 0], [0, -1], [-1, 0]], np.int32)

#: Largest number of treasures `optimal_episode_return` handles (its table is 2**treasures wide).
MAX_ORACLE_TREASURES = 12


@struct.dataclass
class DarkTreasureRoomTask:
    treasure_xy: jax.Array  #: [treasures, 2] int32, (x, y) cell of each treasure
    treasure_value: jax.Array  #: [treasures] float32, what each treasure pays (once per episode)


@struct.dataclass
class DarkTreasureRoomState:
    xy: jax.Array  #: [2] int32, the agent's (x, y) cell
    collected: jax.Array  #: [treasures] bool, treasures already paid in this episode
    t: jax.Array  #: int32, steps taken in the episode


@register
@dataclasses.dataclass(frozen=True)
class DarkTreasureRoom(Environment):
    """Observation: [2] float32, the agent's (x, y) (integer-valued, as in the reference)."""

    name = "dark-treasure-room"
    size: int = 9  #: width and height of the room in cells
    treasures: int = 8  #: number of treasures k
    minval: float = -4.0  #: lower end of the treasure values' uniform prior (-4 deceptive, 0 control)
    maxval: float = 2.0  #: upper end of the treasure values' uniform prior
    horizon: int = 9  #: steps per episode

    def __post_init__(self):
        check_int("dark-treasure-room", "size", self.size, low=1)
        check_int("dark-treasure-room", "treasures", self.treasures, low=1)
        check_float("dark-treasure-room", "minval", self.minval)
        check_float("dark-treasure-room", "maxval", self.maxval)
        check(
            self.minval < self.maxval,
            f"dark-treasure-room: minval must be < maxval, got minval={self.minval}, maxval={self.maxval}",
        )
        check_int("dark-treasure-room", "horizon", self.horizon, low=1)

    @property
    def num_actions(self) -> int:
        return 5

    @property
    def max_steps_in_episode(self) -> int:
        return self.horizon

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def start_xy(self) -> jax.Array:
        return jnp.full((2,), self.size // 2, jnp.int32)

    def sample_task(self, key):
        """A task: [treasures, 2] cells and [treasures] values."""
        key_xy, key_value = jax.random.split(key)
        xy = jax.random.randint(key_xy, (self.treasures, 2), 0, self.size, jnp.int32)
        value = jax.random.uniform(key_value, (self.treasures,), jnp.float32, self.minval, self.maxval)
        return DarkTreasureRoomTask(xy, value)

    def _obs(self, xy):
        return xy.astype(jnp.float32)

    def reset(self, key, params):
        xy = self.start_xy
        state = DarkTreasureRoomState(xy, jnp.zeros((self.treasures,), jnp.bool_), jnp.int32(0))
        return self._obs(xy), state

    def step(self, key, state, action, params):
        xy = jnp.clip(state.xy + jnp.asarray(ACTION_MOVES)[action], 0, self.size - 1)
        found = jnp.all(params.treasure_xy == xy, axis=-1) & ~state.collected
        reward = jnp.sum(jnp.where(found, params.treasure_value, 0.0))
        t = state.t + 1
        next_state = DarkTreasureRoomState(xy, state.collected | found, t)
        return self._obs(xy), next_state, reward, jnp.bool_(False), t >= self.horizon, {}

    # --- the oracle ---------------------------------------------------------------------------
    def optimal_episode_return(self, params) -> jax.Array:
        """Best return of one episode for an agent that knows the task (float32 scalar).

        Exact dynamic programming over (cell, set of collected treasures) for `horizon` steps;
        the table is [size**2, 2**treasures], so only for treasures <= MAX_ORACLE_TREASURES.
        Jittable and vmappable over tasks."""
        if self.treasures > MAX_ORACLE_TREASURES:
            raise ConfigError(
                f"dark-treasure-room: optimal_episode_return needs treasures <= {MAX_ORACLE_TREASURES}, "
                f"got {self.treasures}"
            )
        n, k = self.size, self.treasures
        sets = np.arange(2**k)
        not_in_set = jnp.asarray(1 - ((sets[:, None] >> np.arange(k)[None, :]) & 1), jnp.float32)  # [2^k, k]
        # treasure_at[x, y, i]: treasure i lies on cell (x, y)
        treasure_at = jnp.all(
            jnp.stack(jnp.meshgrid(jnp.arange(n), jnp.arange(n), indexing="ij"), -1)[:, :, None, :]
            == params.treasure_xy[None, None, :, :],
            axis=-1,
        )  # [n, n, k]
        # gain[x, y, s]: what stepping onto (x, y) pays when the set s is already collected
        gain = jnp.einsum("xyi,si->xys", treasure_at * params.treasure_value, not_in_set)

        def add_cell_treasures(value):
            # value[x, y, s] -> value[x, y, s | bits(x, y)], one treasure bit at a time (no gather)
            for i in range(k):
                axis = 2 + (k - 1 - i)  # the set index is big-endian once reshaped to [2] * k
                bits = value.reshape(n, n, *([2] * k))
                with_i = jnp.broadcast_to(jax.lax.slice_in_dim(bits, 1, 2, axis=axis), bits.shape)
                value = jnp.where(treasure_at[:, :, i, None], with_i.reshape(n, n, -1), value)
            return value

        def neighbours(total):
            # total[x', y'] for the cell (x', y') each action leads to from (x, y); walls block
            right = jnp.concatenate([total[1:], total[-1:]], axis=0)
            left = jnp.concatenate([total[:1], total[:-1]], axis=0)
            up = jnp.concatenate([total[:, 1:], total[:, -1:]], axis=1)
            down = jnp.concatenate([total[:, :1], total[:, :-1]], axis=1)
            return jnp.stack([total, up, right, down, left])

        def backup(value_next, _):
            # value[c, s] = max_a gain[c', s] + value_next[c', s | bits(c')], c' = where a leads from c
            total = gain + add_cell_treasures(value_next)
            return jnp.max(neighbours(total), axis=0), None

        value, _ = jax.lax.scan(backup, jnp.zeros((n, n, 2**k), jnp.float32), None, length=self.horizon)
        return value[n // 2, n // 2, 0]

    # --- rendering ----------------------------------------------------------------------------
    def render(self, params, state, cell_pixels: int = 24) -> np.ndarray:
        """Top-down picture of one (unbatched) task and state: uint8 [H, W, 3], H = W = size *
        cell_pixels. Treasures green (positive) or red (negative), brighter for larger |value|,
        grey once collected; the agent a blue square. y grows upwards."""
        xy = np.asarray(state.xy)
        txy = np.asarray(params.treasure_xy)
        value = np.asarray(params.treasure_value)
        collected = np.asarray(state.collected)
        n, c = self.size, cell_pixels
        scale = max(abs(self.minval), abs(self.maxval), 1e-6)
        image = np.full((n * c, n * c, 3), 235, np.uint8)

        def cell_box(x, y, margin):
            row = (n - 1 - int(y)) * c  # image rows go down, y goes up
            return slice(row + margin, row + c - margin), slice(int(x) * c + margin, int(x) * c + c - margin)

        for i in range(n + 1):  # grid lines
            image[min(i * c, n * c - 1), :] = 200
            image[:, min(i * c, n * c - 1)] = 200
        for (x, y), v, done in zip(txy, value, collected):
            strength = min(abs(float(v)) / scale, 1.0)
            if done:
                colour = (150, 150, 150)
            elif v >= 0:
                colour = (int(235 * (1 - strength)), int(235 - 80 * strength), int(235 * (1 - strength)))
            else:
                colour = (int(235 - 35 * strength), int(235 * (1 - strength)), int(235 * (1 - strength)))
            image[cell_box(x, y, 2)] = colour
        image[cell_box(xy[0], xy[1], c // 4)] = (40, 80, 220)
        return image
