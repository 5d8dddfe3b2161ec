"""DREAM's grid worlds (Liu et al. 2021): city, distraction, map and cooking, with two-phase trials.

A trial on one problem (a task id, which no policy reads at test time) is an **exploration
episode** (episode 0: no instruction in the observation) then `Trial(env, 1 + k)`'s k
**exploitation episodes** (episodes >= 1), each with an instruction (a corner to reach, or two
ingredients to cook) drawn afresh at its reset and shown in the observation. The exploration
episode also has an instruction, hidden: it ends early if the explorer happens to complete it (as
the reference runs exploration inside its instruction wrapper). Every step pays its reward in both
phases (the exploration episode's says what the walk cost); the exploitation return is the return
of the episodes >= 1 (`exploit_return`), which is what DREAM's results count. The phase of a step is
its `TimeStep.episode_index` (0: exploring), the instruction the last `instruction_size` entries of
the observation (zeros while exploring): every agent reads them the same way.

Rules (read from the reference code, ezliu/dream `envs/grid.py`, `city.py`, `cooking.py`):

- 9 actions: left (x-1), up (y+1), right (x+1), down (y-1), noop, ride_bus, end_episode, pickup,
  drop; positions clamped to the grid; 20 steps per episode (the last one ends it; a finite
  horizon, so `terminated`). Observation (x, y, status) with status 0 nothing, 1 bus stop, 2 bowl,
  3 drawer, as float32, then the family's extra entries, then the instruction (one-hot).
- Reward -0.1 per step; `end_episode` ends the episode and costs -0.1 - 0.1 x the steps remaining.
- **city**: 9x9, start (4,4); buses at (4,5), (5,4), (3,4), (4,3) lead to (0,1), (0,7), (8,1), (8,7)
  in the id's permutation (`itertools.permutations` order), each destination with a bus back; the
  instruction is a corner (0,0), (8,8), (0,8) or (8,0), +1 on reaching it (ends the episode). 24 ids,
  train = test.
- **distraction**: city plus 4 useless buses at (5,5), (3,3), (3,5), (5,3) to (0,4), (4,0), (8,4),
  (4,8) (two-way); id = helpful permutation + 24 x useless permutation: 576 ids; train = 0, 11, 22,
  ..., 572 (53), test = the other 523.
- **map**: city plus an observation entry that shows id + 1 while the agent stands on (7,3), else 0.
- **cooking**: 3x3, the agent starts on the bowl at (1,1); drawers at (2,0), (2,1), (2,2) hold the
  base-4 digits of the id (64 ids; test id 10, drawers [2, 2, 0]; train the other 63); observation
  (x, y, status, inventory, bowl x3), 4 = empty. pickup at a drawer takes its ingredient (replacing
  what is held), at the bowl empties the hand; drop always empties the hand, into the bowl's first
  free slot when standing on it. The instruction: 2 ingredients drawn with replacement from the
  drawers' contents (uniform over drawers). Sub-goals in order: hold the first, have it first in
  the bowl, hold the second, have both in order: +0.25 each in place of -0.1 (the fourth ends the
  episode); a pickup that misses the awaited ingredient -0.35; losing the held ingredient while one
  is awaited in the bowl -0.35 and back one sub-goal.

Optimal returns are computed by the package (`metarl.envs.dream_optimal`), not assumed.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metarl.envs.base import Environment
from metarl.envs.registry import register
from metarl.errors import ConfigError, check_int

LEFT, UP, RIGHT, DOWN, NOOP, RIDE_BUS, END_EPISODE, PICKUP, DROP = range(9)
ACTION_NAMES = ("left", "up", "right", "down", "noop", "ride_bus", "end_episode", "pickup", "drop")
NOTHING, BUS, BOWL, DRAWER = range(4)
SPLITS = ("train", "test", "all")

PERMUTATIONS = np.array(list(itertools.permutations(range(4))), np.int32)  # [24, 4], the reference's order
BUS_SOURCES = np.array([(4, 5), (5, 4), (3, 4), (4, 3)], np.int32)
BUS_DESTINATIONS = np.array([(0, 1), (0, 7), (8, 1), (8, 7)], np.int32)
USELESS_SOURCES = np.array([(5, 5), (3, 3), (3, 5), (5, 3)], np.int32)
USELESS_DESTINATIONS = np.array([(0, 4), (4, 0), (8, 4), (4, 8)], np.int32)
CORNERS = np.array([(0, 0), (8, 8), (0, 8), (8, 0)], np.int32)
MAP_CELL = (7, 3)
BOWL_CELL = (1, 1)
DRAWER_CELLS = np.array([(2, 0), (2, 1), (2, 2)], np.int32)
INGREDIENTS = 4  #: cooking's ingredients; 4 also marks an empty hand or bowl slot
EMPTY = INGREDIENTS
DELTAS = np.array([(-1, 0), (0, 1), (1, 0), (0, -1), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0)], np.int32)


@struct.dataclass
class GridTask:
    task_id: jax.Array  #: int32, the problem id (which no policy reads at test time)


@struct.dataclass
class GridState:
    pos: jax.Array  #: int32 [2], (x, y)
    t: jax.Array  #: int32, steps taken in this episode
    exploring: jax.Array  #: bool, the exploration episode (the instruction is hidden)
    instruction: jax.Array  #: int32 [2]: a corner's (x, y), or cooking's two ingredients
    inventory: jax.Array  #: int32, the held ingredient (EMPTY: none; cooking)
    bowl: jax.Array  #: int32 [3], the bowl's slots (EMPTY: free; cooking)
    subgoal: jax.Array  #: int32, cooking's sub-goals done (0..3)


def _teleports(num_ids: int, useless: bool) -> np.ndarray:
    """[num_ids, 9, 9, 2]: where ride_bus takes the agent from each cell (the cell itself where there is no bus)."""
    grid = np.stack(np.meshgrid(np.arange(9), np.arange(9), indexing="ij"), -1).astype(np.int32)
    out = np.broadcast_to(grid, (num_ids, 9, 9, 2)).copy()
    for i in range(num_ids):
        pairs = [(BUS_SOURCES, BUS_DESTINATIONS[PERMUTATIONS[i % 24]])]
        if useless:
            pairs.append((USELESS_SOURCES, USELESS_DESTINATIONS[PERMUTATIONS[i // 24]]))
        for sources, destinations in pairs:
            for s, d in zip(sources, destinations):
                out[i, s[0], s[1]] = d
                out[i, d[0], d[1]] = s
    return out


def _status(size: int, cells: dict[int, np.ndarray]) -> np.ndarray:
    status = np.zeros((size, size), np.int32)
    for value, where in cells.items():
        for x, y in np.asarray(where).reshape(-1, 2):
            status[x, y] = value
    return status


@dataclasses.dataclass(frozen=True)
class GridFamily(Environment):
    """The DREAM grid worlds' shared rules; `split` picks the ids `sample_task` draws from."""

    split: str = "train"  #: "train", "test" or "all": the ids sample_task draws
    max_steps: int = 20  #: steps per episode

    fixed_horizon: ClassVar[bool] = False  # the goal or end_episode can end an episode early
    two_phase: ClassVar[bool] = True  #: episode 0 explores (no instruction), episodes >= 1 exploit
    size: ClassVar[int] = 9
    num_ids: ClassVar[int] = 24
    base_obs: ClassVar[int] = 3  #: observation entries before the instruction
    instruction_size: ClassVar[int] = 4  #: the instruction's one-hot entries, last in the observation

    @property
    def obs_levels(self) -> tuple[int, ...]:
        """How many values each entry before the instruction takes (0 .. levels - 1): a learner
        can one-hot them (the reference embeds each entry with its own table)."""
        return (self.size, self.size, 4) + self.extra_levels

    @property
    def extra_levels(self) -> tuple[int, ...]:
        return ()

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ConfigError(f"{self.name}: split must be one of {', '.join(SPLITS)}, got {self.split!r}", "split")
        check_int(self.name, "max_steps", self.max_steps, low=1, high=10_000)

    # --- ids -----------------------------------------------------------------------------------
    @classmethod
    def train_ids(cls) -> np.ndarray:
        return np.arange(cls.num_ids, dtype=np.int32)

    @classmethod
    def test_ids(cls) -> np.ndarray:
        return np.arange(cls.num_ids, dtype=np.int32)

    @classmethod
    def id_factors(cls) -> tuple[np.ndarray, tuple[int, ...]]:
        """What an id is made of: ([num_ids, K] each id's K components, (the values each component
        takes)). City and map: the id itself (its bus permutation)."""
        return np.arange(cls.num_ids, dtype=np.int32)[:, None], (cls.num_ids,)

    def split_ids(self, split: str | None = None) -> np.ndarray:
        split = self.split if split is None else split
        if split not in SPLITS:
            raise ConfigError(f"{self.name}: split must be one of {', '.join(SPLITS)}, got {split!r}")
        return {"train": self.train_ids, "test": self.test_ids, "all": lambda: np.arange(self.num_ids, dtype=np.int32)}[split]()

    def tasks(self, ids) -> GridTask:
        """The tasks of these ids, stacked."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= self.num_ids:
            raise ConfigError(f"{self.name}: task ids must lie in [0, {self.num_ids}), got {ids.tolist()[:8]}")
        return GridTask(jnp.asarray(ids, jnp.int32))

    # --- shapes --------------------------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        return 9

    @property
    def max_steps_in_episode(self) -> int:
        return self.max_steps

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (self.base_obs + self.instruction_size,)

    def sample_task(self, key):
        ids = jnp.asarray(self.split_ids())
        return GridTask(ids[jax.random.randint(key, (), 0, ids.shape[0])])

    def context(self, params) -> jax.Array:
        """The task id as a float32 [1]: DREAM's f(id) and IMPORT's embedding read it in training."""
        return jnp.asarray(params.task_id, jnp.float32)[None]

    # --- the rules -------------------------------------------------------------------------------
    def start_pos(self) -> np.ndarray:
        return np.array((4, 4), np.int32)

    def draw_instruction(self, key, params) -> jax.Array:
        return jnp.asarray(CORNERS)[jax.random.randint(key, (), 0, 4)]

    def reset(self, key, params):
        return self.reset_episode(key, params, jnp.int32(0))

    def reset_episode(self, key, params, episode_index):
        """The start of episode `episode_index` of a trial: episode 0 explores (its instruction hidden)."""
        state = GridState(
            pos=jnp.asarray(self.start_pos()),
            t=jnp.int32(0),
            exploring=jnp.asarray(episode_index) == 0,
            instruction=self.draw_instruction(key, params).astype(jnp.int32),
            inventory=jnp.int32(EMPTY),
            bowl=jnp.full((3,), EMPTY, jnp.int32),
            subgoal=jnp.int32(0),
        )
        return self.observe(state, params), state

    def status_grid(self) -> np.ndarray:
        return _status(9, {BUS: np.concatenate([BUS_SOURCES, BUS_DESTINATIONS])})

    def teleports(self) -> np.ndarray:
        return _teleports(self.num_ids, False)

    def extra_obs(self, state, params) -> list:
        return []

    def instruction_features(self, state) -> jax.Array:
        corner = jnp.argmax(jnp.all(jnp.asarray(CORNERS) == state.instruction, axis=-1))
        return jax.nn.one_hot(corner, 4, dtype=jnp.float32)

    def observe(self, state, params) -> jax.Array:
        status = jnp.asarray(self.status_grid())[state.pos[0], state.pos[1]]
        base = [state.pos[0], state.pos[1], status] + self.extra_obs(state, params)
        instruction = jnp.where(state.exploring, 0.0, self.instruction_features(state))
        return jnp.concatenate([jnp.stack(base).astype(jnp.float32), instruction])

    def move(self, state, action, params) -> GridState:
        """The state after `action`'s movement, bus ride, pickup or drop (not the reward)."""
        pos = state.pos + jnp.asarray(DELTAS)[action]
        ride = jnp.asarray(self.teleports())[params.task_id, state.pos[0], state.pos[1]]
        pos = jnp.where(action == RIDE_BUS, ride, pos)
        return state.replace(pos=jnp.clip(pos, 0, self.size - 1))

    def reward(self, before, after, action) -> tuple[jax.Array, jax.Array, GridState]:
        """(reward, the instruction completed, the state) of a step, before the end_episode cost."""
        reached = jnp.all(after.pos == after.instruction)
        return jnp.where(reached, 1.0, -0.1), reached, after

    def step(self, key, state, action, params):
        action = jnp.asarray(action, jnp.int32)
        after = self.move(state, action, params)
        after = after.replace(t=state.t + 1)
        reward, complete, after = self.reward(state, after, action)
        ended = action == END_EPISODE
        reward = reward - jnp.where(ended, 0.1 * (self.max_steps - after.t), 0.0)
        terminated = complete | ended | (after.t >= self.max_steps)
        info = {"exploring": state.exploring, "completed": complete}
        return self.observe(after, params), after, reward.astype(jnp.float32), terminated, jnp.bool_(False), info

    # --- pictures ------------------------------------------------------------------------------
    def render(self, params, state, cell_pixels: int = 24) -> np.ndarray:
        """Top-down picture of one (unbatched) task and state: uint8 [H, W, 3], y upwards. Bus stops
        are coloured by pair (useless ones olive), the instruction's corner green (outlined while
        hidden, exploring), the map cell black, the bowl grey, drawers by ingredient; the agent red."""
        n, c = self.size, cell_pixels
        image = np.full((n * c, n * c, 3), 245, np.uint8)

        def fill(x, y, colour, inset=2, outline=False):
            top, left = (n - 1 - int(y)) * c, int(x) * c
            block = image[top + inset:top + c - inset, left + inset:left + c - inset]
            if outline:
                block[:2], block[-2:], block[:, :2], block[:, -2:] = colour, colour, colour, colour
            else:
                block[:] = colour

        for k in range(n + 1):  # grid lines
            image[min(k * c, n * c - 1), :] = 200
            image[:, min(k * c, n * c - 1)] = 200
        self.draw_cells(fill, params, state)
        pos, exploring = np.asarray(state.pos), bool(state.exploring)
        self.paint_instruction(fill, state, exploring)
        fill(pos[0], pos[1], (220, 30, 30), inset=c // 4)
        return image

    PAIR_COLOURS: ClassVar[tuple] = ((0, 0, 255), (255, 0, 255), (230, 200, 0), (0, 200, 200))

    def draw_cells(self, fill, params, state):
        task = int(params.task_id)
        perm = PERMUTATIONS[task % 24]
        for i, (s, colour) in enumerate(zip(BUS_SOURCES, self.PAIR_COLOURS)):
            fill(*s, colour, inset=5)
            fill(*BUS_DESTINATIONS[perm[i]], colour, inset=5)

    def paint_instruction(self, fill, state, exploring):
        goal = np.asarray(state.instruction)
        fill(goal[0], goal[1], (40, 170, 60), inset=1, outline=exploring)


@register
@dataclasses.dataclass(frozen=True)
class City(GridFamily):
    """DREAM's vanilla city: 4 buses whose destinations are the id's permutation; reach the corner."""

    name: ClassVar[str] = "city"


@register
@dataclasses.dataclass(frozen=True)
class Distraction(GridFamily):
    """City plus 4 useless buses (the distracting bus task): 576 ids, 53 for training."""

    name: ClassVar[str] = "distraction"
    num_ids: ClassVar[int] = 576

    @classmethod
    def train_ids(cls) -> np.ndarray:
        return np.arange(0, cls.num_ids, 11, dtype=np.int32)

    @classmethod
    def test_ids(cls) -> np.ndarray:
        return np.setdiff1d(np.arange(cls.num_ids, dtype=np.int32), cls.train_ids())

    @classmethod
    def id_factors(cls) -> tuple[np.ndarray, tuple[int, ...]]:
        """(helpful permutation, useless permutation) of each id."""
        ids = np.arange(cls.num_ids, dtype=np.int32)
        return np.stack([ids % 24, ids // 24], 1), (24, 24)

    def status_grid(self) -> np.ndarray:
        return _status(9, {BUS: np.concatenate([BUS_SOURCES, BUS_DESTINATIONS, USELESS_SOURCES, USELESS_DESTINATIONS])})

    def teleports(self) -> np.ndarray:
        return _teleports(self.num_ids, True)

    def draw_cells(self, fill, params, state):
        super().draw_cells(fill, params, state)
        for s in np.concatenate([USELESS_SOURCES, USELESS_DESTINATIONS]):
            fill(*s, (128, 128, 0), inset=7)


@register
@dataclasses.dataclass(frozen=True)
class Map(GridFamily):
    """City plus a map cell at (7, 3): standing on it shows id + 1 in an extra observation entry."""

    name: ClassVar[str] = "map"
    base_obs: ClassVar[int] = 4

    @property
    def extra_levels(self) -> tuple[int, ...]:
        return (self.num_ids + 1,)

    def extra_obs(self, state, params) -> list:
        on_map = (state.pos[0] == MAP_CELL[0]) & (state.pos[1] == MAP_CELL[1])
        return [jnp.where(on_map, params.task_id + 1, 0)]

    def draw_cells(self, fill, params, state):
        super().draw_cells(fill, params, state)
        fill(*MAP_CELL, (20, 20, 20), inset=6)


INGREDIENT_COLOURS = ((0, 0, 255), (128, 128, 0), (255, 0, 128), (128, 128, 255))


@register
@dataclasses.dataclass(frozen=True)
class Cooking(GridFamily):
    """DREAM's cooking task: find which drawer holds which ingredient, then cook the instructed two."""

    name: ClassVar[str] = "cooking"
    size: ClassVar[int] = 3
    num_ids: ClassVar[int] = 64
    base_obs: ClassVar[int] = 7
    instruction_size: ClassVar[int] = 2 * INGREDIENTS
    TEST_ID: ClassVar[int] = 10

    @classmethod
    def train_ids(cls) -> np.ndarray:
        return np.setdiff1d(np.arange(cls.num_ids, dtype=np.int32), [cls.TEST_ID])

    @classmethod
    def test_ids(cls) -> np.ndarray:
        return np.array([cls.TEST_ID], np.int32)

    @classmethod
    def id_factors(cls) -> tuple[np.ndarray, tuple[int, ...]]:
        """The ingredient in each of the three drawers (`drawer_contents`) of each id."""
        ids = np.arange(cls.num_ids, dtype=np.int32)  # (numpy, as `drawer_contents`' digits: this is read while tracing)
        return (ids[:, None] // np.array([1, 4, 16], np.int32)) % INGREDIENTS, (INGREDIENTS,) * 3

    @staticmethod
    def drawer_contents(task_id) -> jax.Array:
        """The ingredient in each drawer: the id's base-4 digits, least significant first. [3]"""
        return (jnp.asarray(task_id)[..., None] // jnp.array([1, 4, 16])) % INGREDIENTS

    def start_pos(self) -> np.ndarray:
        return np.array(BOWL_CELL, np.int32)

    def draw_instruction(self, key, params) -> jax.Array:
        return self.drawer_contents(params.task_id)[jax.random.randint(key, (2,), 0, 3)]

    def status_grid(self) -> np.ndarray:
        return _status(3, {BOWL: np.array([BOWL_CELL]), DRAWER: DRAWER_CELLS})

    @property
    def extra_levels(self) -> tuple[int, ...]:
        return (INGREDIENTS + 1,) * 4  # the held ingredient and the bowl's three slots (EMPTY = 4)

    def extra_obs(self, state, params) -> list:
        return [state.inventory, state.bowl[0], state.bowl[1], state.bowl[2]]

    def instruction_features(self, state) -> jax.Array:
        return jax.nn.one_hot(state.instruction, INGREDIENTS, dtype=jnp.float32).reshape(-1)

    def move(self, state, action, params) -> GridState:
        x, y = state.pos[0], state.pos[1]
        status = jnp.asarray(self.status_grid())[x, y]
        drawer = jnp.clip(y, 0, 2)  # the drawers stand in column x = 2 at y = 0, 1, 2
        content = self.drawer_contents(params.task_id)[drawer]
        inventory = jnp.where((action == PICKUP) & (status == DRAWER), content, state.inventory)
        inventory = jnp.where((action == PICKUP) & (status == BOWL), EMPTY, inventory)  # the bowl gives nothing
        free = jnp.argmax(state.bowl == EMPTY)
        put = (action == DROP) & (status == BOWL) & (state.inventory != EMPTY) & jnp.any(state.bowl == EMPTY)
        bowl = jnp.where(put, state.bowl.at[free].set(state.inventory), state.bowl)
        inventory = jnp.where(action == DROP, EMPTY, inventory)
        pos = jnp.clip(state.pos + jnp.asarray(DELTAS)[action], 0, self.size - 1)
        return state.replace(pos=pos, inventory=inventory, bowl=bowl)

    def reward(self, before, after, action):
        first, second = after.instruction[0], after.instruction[1]
        awaited = jnp.where(after.subgoal < 2, first, second)
        holds = after.inventory == awaited
        in_bowl = jnp.where(after.subgoal == 1, after.bowl[0] == first, (after.bowl[0] == first) & (after.bowl[1] == second))
        picking = (after.subgoal == 0) | (after.subgoal == 2)
        # awaiting a pickup: holding it is the sub-goal, a pickup of anything else a mistake
        pick_done, pick_wrong = holds, (action == PICKUP) & ~holds
        # awaiting it in the bowl: there it is the sub-goal; no longer holding it a mistake (and back one)
        bowl_done, bowl_lost = in_bowl, ~in_bowl & ~holds
        done = jnp.where(picking, pick_done, bowl_done)
        wrong = jnp.where(picking, pick_wrong, bowl_lost)
        reward = jnp.where(done, 0.25, jnp.where(wrong, -0.35, -0.1))
        subgoal = after.subgoal + jnp.where(done, 1, 0) - jnp.where(wrong & ~picking, 1, 0)
        complete = done & (after.subgoal == 3)
        return reward, complete, after.replace(subgoal=jnp.minimum(subgoal, 3))

    def draw_cells(self, fill, params, state):
        fill(*BOWL_CELL, (90, 90, 90), inset=3)
        for cell, ingredient in zip(DRAWER_CELLS, np.asarray(self.drawer_contents(params.task_id))):
            fill(*cell, INGREDIENT_COLOURS[int(ingredient)], inset=3)

    def paint_instruction(self, fill, state, exploring):
        return None  # the instruction is in the observation; the picture shows the drawers and the agent


def one_hot_observation(env, obs) -> jax.Array:
    """`obs` [..., obs_shape] as the learners read it: each entry before the instruction one-hot
    over its `env.obs_levels` (the reference embeds each with its own table: a Dense layer on raw
    grid coordinates makes lookups such as "this bus leads there" slow to learn), then the
    instruction's entries; unchanged for a family without `obs_levels`."""
    levels = getattr(env, "obs_levels", None)
    if levels is None:
        return obs
    parts = [jax.nn.one_hot(obs[..., i].astype(jnp.int32), n) for i, n in enumerate(levels)]
    return jnp.concatenate(parts + [obs[..., len(levels):]], axis=-1)


def exploit_return(returns) -> np.ndarray:
    """The exploitation return of two-phase trials: per-episode returns [..., episodes] summed
    over the episodes >= 1 (episode 0 explores)."""
    returns = np.asarray(returns)
    return returns[..., 1:].sum(-1)


def is_two_phase(env: Any) -> bool:
    return bool(getattr(env, "two_phase", False))
