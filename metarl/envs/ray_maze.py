"""First-Explore's ray-cast maze (Norman & Clune; "tiny world" in the reference code).

A `size` x `size` maze of unit cells in the square [0, size]^2, carved per task by Aldous-Broder
(a uniform random spanning tree of the cells). The agent has a continuous position and heading and
sees the world only through `rays` rays spread over `field_of_view`, with the screen-projection
spacing of the reference: offset_i = arctan(i / m * tan(fov / 2)), i = -m..m, m = rays // 2.
Observation: [2 * rays] float32 = per ray the distance to the first surface hit, then per ray the
hit type: 0 a face of constant y (a horizontal wall), 1 a face of constant x (a vertical wall),
2 a goal panel.

Walls are wall segments thickened by WALL_HALF_THICKNESS on every side (so walls meeting at a
corner close it), and the outer border is walled. Three actions: 0 forward `step_size` along the
heading, 1 rotate by -`rotation`, 2 rotate by +`rotation`. Moving forward the agent advances
min(step_size, d - CLEARANCE), d the distance to the wall surface straight ahead, and never
backwards.

Goal panels: `goals` of the 2 * (interior walls) one-sided panels (a rectangle PANEL_DEPTH deep on
one side of an interior wall, along its whole length), chosen uniformly without replacement; each
is good with probability `p_good`. The first time in an episode the agent's position is inside a
panel (borders included), it is paid `good_reward` for a good panel or `bad_reward` otherwise
(the mean if it is inside several at once); after that no panel pays until the next episode.
Start: the centre of cell (0, 0), heading 0 (+x). Episodes last `horizon` steps.

Rules and constants from the reference's `TinyWorld` (`maze3.py`, used by
`tiny_world/tiny_world_first_explore.py` with side_rays=7, p_reward=0.3, 3 actions, 20 steps).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metarl.envs.base import Environment
from metarl.envs.registry import register
from metarl.errors import check, check_float, check_int

WALL_HALF_THICKNESS = 0.05  #: reference `edge_thickness`
CLEARANCE = 0.1  #: how close moving forward brings the agent to the wall ahead
PANEL_DEPTH = 0.3  #: how far a goal panel reaches into its cell from the wall
START = (0.5, 0.5)  #: the agent's start position (centre of cell (0, 0)); start heading 0

WALL, GOAL = 0, 2  # hit types (1 = WALL + 1: a face of constant x)


@struct.dataclass
class RayMazeTask:
    #: [size + 1, size] bool, vertical_walls[i, j]: a wall on the line x = i for y in [j, j + 1]
    vertical_walls: jax.Array
    #: [size, size + 1] bool, horizontal_walls[i, j]: a wall on the line y = j for x in [i, i + 1]
    horizontal_walls: jax.Array
    goal_low: jax.Array  #: [goals, 2] float32, (x, y) lower corner of each goal panel
    goal_high: jax.Array  #: [goals, 2] float32, (x, y) upper corner of each goal panel
    goal_good: jax.Array  #: [goals] bool, the panel pays `good_reward` (else `bad_reward`)


@struct.dataclass
class RayMazeState:
    position: jax.Array  #: [2] float32, (x, y)
    heading: jax.Array  #: float32 angle in [0, 2 pi), 0 = +x, pi / 2 = +y
    goal_reached: jax.Array  #: bool, a goal panel already paid in this episode
    t: jax.Array  #: int32, steps taken in the episode


# ---------------------------------------------------------------------------------------------
# the maze
def aldous_broder(key: jax.Array, size: int, max_walk: int | None = None) -> tuple[jax.Array, jax.Array]:
    """A uniform random spanning tree of the size x size cells, as walls.

    Returns (vertical_walls [size + 1, size], horizontal_walls [size, size + 1]) bool, border
    included. A random walk from a random cell opens the wall into every cell it enters for the
    first time, until all cells are visited or `max_walk` steps (default 64 * size**2; on 3x3 the
    walk needs about 32 steps on average and more than 150 with probability ~2e-4). In the
    vanishing case the walk is cut off, each unvisited cell is joined to a visited neighbour, so
    the result is always a spanning tree. Jittable and vmappable."""
    n = size
    max_walk = 64 * n * n if max_walk is None else max_walk
    moves = jnp.array([[-1, 0], [1, 0], [0, -1], [0, 1]], jnp.int32)
    key_start, key_walk = jax.random.split(key)
    cell = jax.random.randint(key_start, (2,), 0, n, jnp.int32)
    visited = jnp.zeros((n, n), jnp.bool_).at[cell[0], cell[1]].set(True)
    vertical = jnp.ones((n + 1, n), jnp.bool_)
    horizontal = jnp.ones((n, n + 1), jnp.bool_)

    def walking(carry):
        i, _, visited, _, _ = carry
        return (i < max_walk) & ~jnp.all(visited)

    def walk(carry):
        i, cell, visited, vertical, horizontal = carry
        neighbours = cell + moves
        inside = jnp.all((neighbours >= 0) & (neighbours < n), axis=1)
        choice = jax.random.categorical(jax.random.fold_in(key_walk, i), jnp.where(inside, 0.0, -jnp.inf))
        step = moves[choice]
        nxt = cell + step
        new = ~visited[nxt[0], nxt[1]]
        # the wall between cell and nxt: vertical line x = max(x, x') or horizontal line y = max(y, y')
        corner = jnp.maximum(cell, nxt)
        vertical = vertical.at[corner[0], cell[1]].set(vertical[corner[0], cell[1]] & ~(new & (step[0] != 0)))
        horizontal = horizontal.at[cell[0], corner[1]].set(horizontal[cell[0], corner[1]] & ~(new & (step[1] != 0)))
        visited = visited.at[nxt[0], nxt[1]].set(True)
        return i + 1, nxt, visited, vertical, horizontal

    _, _, visited, vertical, horizontal = jax.lax.while_loop(
        walking, walk, (jnp.int32(0), cell, visited, vertical, horizontal)
    )
    # Join any unvisited cell to one visited neighbour (left, right, down, up first); cells joined in
    # the same pass each add one edge to the old tree, so no cycle appears.
    for _ in range(n * n - 1):
        pad_x = jnp.zeros((1, n), jnp.bool_)
        pad_y = jnp.zeros((n, 1), jnp.bool_)
        left_visited = jnp.concatenate([pad_x, visited[:-1]], axis=0)
        right_visited = jnp.concatenate([visited[1:], pad_x], axis=0)
        down_visited = jnp.concatenate([pad_y, visited[:, :-1]], axis=1)
        up_visited = jnp.concatenate([visited[:, 1:], pad_y], axis=1)
        join_left = ~visited & left_visited
        join_right = ~visited & ~join_left & right_visited
        join_down = ~visited & ~join_left & ~join_right & down_visited
        join_up = ~visited & ~join_left & ~join_right & ~join_down & up_visited
        vertical = vertical & ~jnp.concatenate([join_left, pad_x], 0) & ~jnp.concatenate([pad_x, join_right], 0)
        horizontal = horizontal & ~jnp.concatenate([join_down, pad_y], 1) & ~jnp.concatenate([pad_y, join_up], 1)
        visited = visited | join_left | join_right | join_down | join_up
    return vertical, horizontal


def wall_boxes(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Static boxes of every possible wall: (low, high), each [(size + 1) * size * 2, 2] float32;
    the first (size + 1) * size are the vertical walls (in `vertical_walls.ravel()` order), the rest
    the horizontal ones (in `horizontal_walls.ravel()` order)."""
    h = WALL_HALF_THICKNESS
    i, j = np.meshgrid(np.arange(size + 1), np.arange(size), indexing="ij")  # vertical: x = i
    v_low = np.stack([i - h, j - h], -1).reshape(-1, 2)
    v_high = np.stack([i + h, j + 1 + h], -1).reshape(-1, 2)
    i, j = np.meshgrid(np.arange(size), np.arange(size + 1), indexing="ij")  # horizontal: y = j
    h_low = np.stack([i - h, j - h], -1).reshape(-1, 2)
    h_high = np.stack([i + 1 + h, j + h], -1).reshape(-1, 2)
    return (np.concatenate([v_low, h_low]).astype(np.float32), np.concatenate([v_high, h_high]).astype(np.float32))


def panel_boxes(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Static boxes of every candidate goal panel: (low, high), each [4 * (size - 1) * size, 2].

    Order: for the interior vertical walls (x = 1..size-1, y-cell 0..size-1) the panel on the +x
    side then the -x side, then the same for the interior horizontal walls; panel p belongs to
    the interior wall p // 2 in `interior_walls` order."""
    d = PANEL_DEPTH
    lows, highs = [], []
    for x in range(1, size):
        for y in range(size):
            lows += [(x, y), (x - d, y)]
            highs += [(x + d, y + 1), (x, y + 1)]
    for y in range(1, size):
        for x in range(size):
            lows += [(x, y), (x, y - d)]
            highs += [(x + 1, y + d), (x + 1, y)]
    return np.array(lows, np.float32).reshape(-1, 2), np.array(highs, np.float32).reshape(-1, 2)


def interior_walls(vertical_walls: jax.Array, horizontal_walls: jax.Array) -> jax.Array:
    """[2 * (size - 1) * size] bool: interior vertical walls (x = 1..size-1, y-major inside), then
    interior horizontal walls (y = 1..size-1, x-major inside) -- the order of `panel_boxes`."""
    return jnp.concatenate([vertical_walls[1:-1, :].reshape(-1), horizontal_walls[:, 1:-1].T.reshape(-1)])


def cast_rays(origin, angles, wall_low, wall_high, wall_present):
    """Distance to, point of, and orientation of the first wall surface along each ray.

    origin [2]; angles [R]; wall boxes [W, 2] and presence [W]. Returns distance [R], hit point
    [R, 2] and `x_face` [R] bool (the face hit is one of constant x). The slab method, vectorised
    over rays and walls; the origin must lie outside every box."""
    direction = jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)  # [R, 2]
    direction = jnp.where(jnp.abs(direction) < 1e-12, 1e-12, direction)
    t1 = (wall_low[None] - origin) / direction[:, None]  # [R, W, 2]
    t2 = (wall_high[None] - origin) / direction[:, None]
    t_enter = jnp.minimum(t1, t2)  # per axis
    t_exit = jnp.maximum(t1, t2)
    t_near = jnp.max(t_enter, axis=-1)
    t_far = jnp.min(t_exit, axis=-1)
    hit = wall_present[None] & (t_near <= t_far) & (t_near >= 0.0)
    t = jnp.where(hit, t_near, jnp.inf)
    first = jnp.argmin(t, axis=1)  # [R]
    distance = jnp.take_along_axis(t, first[:, None], axis=1)[:, 0]
    x_face = jnp.take_along_axis(t_enter[..., 0] >= t_enter[..., 1], first[:, None], axis=1)[:, 0]
    point = origin + distance[:, None] * direction
    return distance, point, x_face


def inside_boxes(point, low, high):
    """[..., B] bool: `point` [..., 2] lies in box b (borders included)."""
    return jnp.all((point[..., None, :] >= low) & (point[..., None, :] <= high), axis=-1)


@register
@dataclasses.dataclass(frozen=True)
class RayMaze(Environment):
    """Observation: [2 * rays] float32, distances then hit types (see the module docstring)."""

    name = "ray-maze"
    size: int = 3  #: the maze is size x size unit cells
    rays: int = 15  #: number of rays (odd, so one looks straight ahead)
    field_of_view: float = 2 * math.pi / 3  #: angle spanned by the rays
    step_size: float = 0.5  #: distance of a forward move
    rotation: float = math.pi / 4  #: angle of a turn
    goals: int = 3  #: goal panels per task
    p_good: float = 0.3  #: probability that a goal panel is good
    good_reward: float = 1.0  #: what a good panel pays
    bad_reward: float = -1.0  #: what a bad panel pays (-1: hard, 0: easy)
    horizon: int = 20  #: steps per episode

    def __post_init__(self):
        check_int("ray-maze", "size", self.size, low=2, high=16)
        check_int("ray-maze", "rays", self.rays, low=1)
        check(self.rays % 2 == 1, f"ray-maze: rays must be odd, got {self.rays}")
        check_float("ray-maze", "field_of_view", self.field_of_view, low=0.0, high=math.pi, low_open=True, high_open=True)
        check_float("ray-maze", "step_size", self.step_size, low=0.0, low_open=True)
        check_float("ray-maze", "rotation", self.rotation)
        # a spanning tree leaves (size - 1)^2 interior walls, each with two panels
        max_goals = 2 * (self.size - 1) ** 2
        check_int("ray-maze", "goals", self.goals, low=1, high=max_goals)
        check_float("ray-maze", "p_good", self.p_good, low=0.0, high=1.0)
        check_float("ray-maze", "good_reward", self.good_reward)
        check_float("ray-maze", "bad_reward", self.bad_reward)
        check_int("ray-maze", "horizon", self.horizon, low=1)

    @property
    def num_actions(self) -> int:
        return 3

    @property
    def max_steps_in_episode(self) -> int:
        return self.horizon

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (2 * self.rays,)

    @property
    def ray_offsets(self) -> np.ndarray:
        """[rays] float32, each ray's angle relative to the heading (screen projection)."""
        m = self.rays // 2
        if m == 0:
            return np.zeros((1,), np.float32)
        return np.arctan(np.arange(-m, m + 1) / m * np.tan(self.field_of_view / 2)).astype(np.float32)

    def sample_task(self, key):
        key_maze, key_goal, key_good = jax.random.split(key, 3)
        vertical, horizontal = aldous_broder(key_maze, self.size)
        candidates = jnp.repeat(interior_walls(vertical, horizontal), 2)  # both sides of each wall
        low, high = panel_boxes(self.size)
        chosen = jax.random.choice(
            key_goal, low.shape[0], (self.goals,), replace=False, p=candidates / jnp.sum(candidates)
        )
        good = jax.random.bernoulli(key_good, self.p_good, (self.goals,))
        return RayMazeTask(vertical, horizontal, jnp.asarray(low)[chosen], jnp.asarray(high)[chosen], good)

    def _walls(self, params):
        low, high = wall_boxes(self.size)
        present = jnp.concatenate([params.vertical_walls.reshape(-1), params.horizontal_walls.reshape(-1)])
        return jnp.asarray(low), jnp.asarray(high), present

    def look(self, params, position, heading):
        """Ray-cast from `position` [2] with `heading`: (distance [rays], hit_type [rays] int32,
        hit point [rays, 2])."""
        angles = heading + jnp.asarray(self.ray_offsets)
        distance, point, x_face = cast_rays(position, angles, *self._walls(params))
        on_goal = jnp.any(inside_boxes(point, params.goal_low, params.goal_high), axis=-1)
        hit_type = jnp.where(on_goal, GOAL, WALL + x_face.astype(jnp.int32))
        return distance, hit_type, point

    def _obs(self, params, position, heading):
        distance, hit_type, _ = self.look(params, position, heading)
        return jnp.concatenate([distance, hit_type.astype(jnp.float32)])

    def reset(self, key, params):
        position = jnp.asarray(START, jnp.float32)
        heading = jnp.float32(0.0)
        state = RayMazeState(position, heading, jnp.bool_(False), jnp.int32(0))
        return self._obs(params, position, heading), state

    def step(self, key, state, action, params):
        ahead, _, _ = cast_rays(state.position, state.heading[None], *self._walls(params))
        advance = jnp.clip(ahead[0] - CLEARANCE, 0.0, self.step_size)
        direction = jnp.stack([jnp.cos(state.heading), jnp.sin(state.heading)])
        position = jnp.where(action == 0, state.position + advance * direction, state.position)
        turn = jnp.where(action == 1, -self.rotation, jnp.where(action == 2, self.rotation, 0.0))
        heading = jnp.mod(state.heading + turn, 2 * jnp.pi).astype(jnp.float32)

        on_goal = inside_boxes(position, params.goal_low, params.goal_high)  # [goals]
        value = jnp.where(params.goal_good, self.good_reward, self.bad_reward)
        paid = jnp.sum(jnp.where(on_goal, value, 0.0)) / jnp.maximum(jnp.sum(on_goal), 1)
        reward = jnp.where(state.goal_reached, 0.0, paid).astype(jnp.float32)
        t = state.t + 1
        next_state = RayMazeState(position, heading, state.goal_reached | jnp.any(on_goal), t)
        return self._obs(params, position, heading), next_state, reward, jnp.bool_(False), t >= self.horizon, {}

    # --- rendering ----------------------------------------------------------------------------
    def render(self, params, state, cell_pixels: int = 80) -> np.ndarray:
        """Top-down picture of one (unbatched) task and state: uint8 [H, W, 3], H = W = size *
        cell_pixels (+1). Walls black, goal panels green (good) or red (bad; pale once a goal has
        paid this episode), rays yellow to their hit points, the agent a blue disc. y grows upwards."""
        n, c = self.size, cell_pixels
        side = n * c + 1
        image = np.full((side, side, 3), 245, np.uint8)
        ys, xs = np.mgrid[0:side, 0:side]
        world_x = xs / c
        world_y = (side - 1 - ys) / c

        def fill(low, high, colour):
            mask = (world_x >= low[0]) & (world_x <= high[0]) & (world_y >= low[1]) & (world_y <= high[1])
            image[mask] = colour

        reached = bool(np.asarray(state.goal_reached))
        for low, high, good in zip(np.asarray(params.goal_low), np.asarray(params.goal_high), np.asarray(params.goal_good)):
            colour = (60, 180, 75) if good else (220, 60, 60)
            if reached:
                colour = tuple(int(0.4 * v + 0.6 * 245) for v in colour)
            fill(low, high, colour)
        low, high, present = (np.asarray(a) for a in self._walls(params))
        for lo, hi in zip(low[present], high[present]):
            fill(lo, hi, (20, 20, 20))

        position = np.asarray(state.position, np.float64)
        _, _, points = self.look(params, jnp.asarray(state.position), jnp.asarray(state.heading))
        for point in np.asarray(points, np.float64):
            for s in np.linspace(0.0, 1.0, 2 * c):
                p = position + s * (point - position)
                col, row = int(round(p[0] * c)), int(round(side - 1 - p[1] * c))
                if 0 <= row < side and 0 <= col < side:
                    image[row, col] = (230, 190, 0)
        disc = (world_x - position[0]) ** 2 + (world_y - position[1]) ** 2 <= (0.12) ** 2
        image[disc] = (40, 80, 220)
        return image
