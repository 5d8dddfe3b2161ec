"""Ray maze (First-Explore): ray distances by hand, blocked moves, turns, goal panels, mazes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import metarl
from metarl.envs.ray_maze import RayMazeState, RayMazeTask, aldous_broder, interior_walls, panel_boxes
from metarl.envs.render import episode_frames, save_gif
from metarl.errors import ConfigError

KEY = jax.random.PRNGKey(0)
FORWARD, TURN_RIGHT, TURN_LEFT = 0, 1, 2  # rotate by -pi/4, +pi/4


def _maze(vertical=(), horizontal=(), goals=(), good=(True, False, False)):
    """A 3x3 maze with only the border and the listed interior walls: vertical (i, j) is the line
    x = i for y in [j, j + 1], horizontal (i, j) the line y = j for x in [i, i + 1]. Goals are
    (low, high) boxes; unused goal slots are parked outside the maze."""
    v = np.zeros((4, 3), bool)
    v[[0, 3], :] = True
    h = np.zeros((3, 4), bool)
    h[:, [0, 3]] = True
    for i, j in vertical:
        v[i, j] = True
    for i, j in horizontal:
        h[i, j] = True
    goals = list(goals) + [((10.0, 10.0), (10.5, 10.5))] * (3 - len(goals))
    low = jnp.array([g[0] for g in goals], jnp.float32)
    high = jnp.array([g[1] for g in goals], jnp.float32)
    return RayMazeTask(jnp.asarray(v), jnp.asarray(h), low, high, jnp.array(good))


def test_ray_offsets_screen_projection():
    env = metarl.make("ray-maze")
    offsets = env.ray_offsets
    assert offsets.shape == (15,) and env.obs_shape == (30,)
    assert offsets[7] == 0.0
    np.testing.assert_allclose(offsets[[0, 14]], [-math.pi / 3, math.pi / 3], rtol=1e-6)  # fov 2 pi / 3
    np.testing.assert_allclose(offsets[8], math.atan(math.tan(math.pi / 3) / 7), rtol=1e-6)


def test_rays_hit_walls_at_hand_worked_distances():
    env = metarl.make("ray-maze")
    # a wall on x = 2 beside cell (1, 0); its surface is at x = 1.95 (walls are 0.05 thick each side)
    task = _maze(vertical=[(2, 0)], horizontal=[(0, 1)])
    distance, hit_type, point = env.look(task, jnp.array([0.7, 0.5]), jnp.float32(0.0))
    assert float(distance[7]) == pytest.approx(1.25, abs=1e-5) and int(hit_type[7]) == 1  # x-face
    np.testing.assert_allclose(point[7], [1.95, 0.5], atol=1e-5)
    # the rightmost ray (-pi/3) meets the bottom border's surface y = 0.05: 0.45 / sin(pi/3)
    assert float(distance[0]) == pytest.approx(0.45 / math.sin(math.pi / 3), abs=1e-5) and int(hit_type[0]) == 0
    # the leftmost (+pi/3) meets the wall on y = 1 over cell (0, 0) at x = 0.96 (< 1.05, its end)
    assert float(distance[14]) == pytest.approx(0.45 / math.sin(math.pi / 3), abs=1e-5) and int(hit_type[14]) == 0
    # ray 12 (atan(5/7 tan(pi/3)) = 51.1 deg) reaches y = 0.95 at x = 1.064, just past that wall's
    # end; it passes above the x = 2 wall (y = 2.05 > 1.05 there) and stops at the top border y = 2.95
    angle = math.atan(5 / 7 * math.tan(math.pi / 3))
    assert 0.7 + 0.45 / math.tan(angle) > 1.05
    assert float(distance[12]) == pytest.approx(2.45 / math.sin(angle), abs=1e-5) and int(hit_type[12]) == 0
    # facing up from (0.5, 0.5): the wall on y = 1 over cell (0, 0), surface y = 0.95
    distance, hit_type, _ = env.look(task, jnp.array([0.5, 0.5]), jnp.float32(math.pi / 2))
    assert float(distance[7]) == pytest.approx(0.45, abs=1e-5) and int(hit_type[7]) == 0
    # facing down-left at 225 degrees from (0.5, 0.5): the corner region, 0.45 * sqrt(2) to either face
    distance, _, _ = env.look(task, jnp.array([0.5, 0.5]), jnp.float32(5 * math.pi / 4))
    assert float(distance[7]) == pytest.approx(0.45 * math.sqrt(2), abs=1e-5)


def test_goal_panel_is_seen_from_its_side_only():
    env = metarl.make("ray-maze")
    near_side = ((1.7, 0.0), (2.0, 1.0))  # on the -x side of the x = 2 wall
    far_side = ((2.0, 0.0), (2.3, 1.0))
    for goal, expected in [(near_side, 2), (far_side, 1)]:
        task = _maze(vertical=[(2, 0)], goals=[goal])
        obs, _ = env.reset(KEY, task)
        assert int(obs[15 + 7]) == expected  # hit types follow the 15 distances
        assert float(obs[7]) == pytest.approx(1.45, abs=1e-5)  # start (0.5, 0.5), facing +x


def test_forward_is_blocked_by_walls_and_turns_are_pi_over_4():
    env = metarl.make("ray-maze")
    task = _maze(vertical=[(2, 0)])
    _, state = env.reset(KEY, task)
    np.testing.assert_allclose(state.position, [0.5, 0.5])
    assert float(state.heading) == 0.0
    xs = []
    for _ in range(4):
        _, state, _, _, _, _ = env.step(KEY, state, FORWARD, task)
        xs.append(float(state.position[0]))
    # 0.5 a step until 0.1 short of the surface x = 1.95; then no move at all
    np.testing.assert_allclose(xs, [1.0, 1.5, 1.85, 1.85], atol=1e-5)
    assert float(state.position[1]) == pytest.approx(0.5)
    _, state, _, _, _, _ = env.step(KEY, state, TURN_LEFT, task)
    assert float(state.heading) == pytest.approx(math.pi / 4)
    np.testing.assert_allclose(state.position, [1.85, 0.5], atol=1e-6)  # turning does not move
    _, state, _, _, _, _ = env.step(KEY, state, TURN_RIGHT, task)
    _, state, _, _, _, _ = env.step(KEY, state, TURN_RIGHT, task)
    assert float(state.heading) == pytest.approx(2 * math.pi - math.pi / 4)  # kept in [0, 2 pi)
    # diagonal: from (0.5, 0.5) at 45 degrees, open room: 0.5 along (1, 1) / sqrt(2)
    state = RayMazeState(jnp.array([0.5, 0.5]), jnp.float32(math.pi / 4), jnp.bool_(False), jnp.int32(0))
    _, state, _, _, _, _ = env.step(KEY, state, FORWARD, _maze())
    np.testing.assert_allclose(state.position, [0.5 + 0.5 / math.sqrt(2)] * 2, atol=1e-6)


def test_goal_pays_once_per_episode_and_again_after_the_trials_reset():
    env = metarl.make("ray-maze", horizon=5)
    # good panel on the -x side of the x = 2 wall: reached when the agent stops at x = 1.85
    task = _maze(vertical=[(2, 0)], goals=[((1.7, 0.0), (2.0, 1.0)), ((1.7, 0.0), (2.0, 1.0))], good=(True, False, False))
    trial = metarl.Trial(env, episodes=2)
    _, state = trial.reset(KEY, task)
    step = jax.jit(trial.step)
    rewards = []
    for t in range(10):
        _, state, reward, info = step(jax.random.fold_in(KEY, t), state, FORWARD)
        rewards.append(float(reward))
    # third step enters two overlapping panels (+1 and -1): their mean, 0, once; the same next episode
    assert rewards == [0.0] * 10
    # one good panel only: +1 at step 3, never again in the episode (the agent stays on it)
    task = _maze(vertical=[(2, 0)], goals=[((1.7, 0.0), (2.0, 1.0))], good=(True, False, False))
    _, state = trial.reset(KEY, task)
    rewards = []
    for t in range(10):
        _, state, reward, info = step(jax.random.fold_in(KEY, t), state, FORWARD)
        rewards.append(float(reward))
    assert rewards == [0.0, 0.0, 1.0, 0.0, 0.0] * 2
    assert bool(info["trial_done"])


def test_after_one_goal_no_other_goal_pays_in_the_episode():
    env = metarl.make("ray-maze", horizon=20)
    # a good panel reached at x = 1.0 (first step), a bad one at x = 1.85 (third step)
    task = _maze(
        vertical=[(2, 0)],
        goals=[((1.0, 0.0), (1.3, 1.0)), ((1.7, 0.0), (2.0, 1.0))],
        good=(True, False, False),
    )
    _, state = env.reset(KEY, task)
    rewards = []
    for _ in range(3):
        _, state, reward, _, _, _ = env.step(KEY, state, FORWARD, task)
        rewards.append(float(reward))
    # x = 1.0 is inside the first panel (borders included): +1; x = 1.5: none; x = 1.85: the bad
    # panel, but a goal was already reached this episode, so nothing
    assert rewards == [1.0, 0.0, 0.0]


@pytest.mark.slow
@pytest.mark.parametrize("bad_reward, mean", [(-1.0, 0.3 - 0.7), (0.0, 0.3)])
def test_goal_values_have_the_right_probabilities(bad_reward, mean):
    env = metarl.make("ray-maze", bad_reward=bad_reward)
    tasks = env.sample_tasks(KEY, 4000)
    # stand at the centre of goal 0 (inside that panel only) and turn: pays goal 0's value
    centre = (tasks.goal_low[:, 0] + tasks.goal_high[:, 0]) / 2

    def pay(task, position):
        state = RayMazeState(position, jnp.float32(0.0), jnp.bool_(False), jnp.int32(0))
        return env.step(KEY, state, TURN_LEFT, task)[2]

    rewards = np.asarray(jax.jit(jax.vmap(pay))(tasks, centre))
    assert set(np.unique(rewards)) <= {1.0, bad_reward}
    sd = (1.0 - bad_reward) * math.sqrt(0.3 * 0.7 / 4000)  # 0.0145 (hard), 0.0072 (easy)
    assert abs(rewards.mean() - mean) < 4 * sd
    assert abs(float(tasks.goal_good.mean()) - 0.3) < 4 * math.sqrt(0.21 / 12000)


def _is_spanning_tree(vertical, horizontal):
    n = vertical.shape[1]
    if not (vertical[[0, n]].all() and horizontal[:, [0, n]].all()):
        return False
    edges = [((i - 1, j), (i, j)) for i in range(1, n) for j in range(n) if not vertical[i, j]]
    edges += [((i, j - 1), (i, j)) for i in range(n) for j in range(1, n) if not horizontal[i, j]]
    parent = {(i, j): (i, j) for i in range(n) for j in range(n)}

    def root(c):
        while parent[c] != c:
            c = parent[c]
        return c

    for a, b in edges:
        parent[root(a)] = root(b)
    return len(edges) == n * n - 1 and len({root(c) for c in parent}) == 1


def test_aldous_broder_gives_spanning_trees_and_goals_on_interior_walls():
    env = metarl.make("ray-maze")
    tasks = env.sample_tasks(KEY, 100)
    low, high = panel_boxes(3)
    boxes = np.concatenate([low, high], 1)
    walls_of_first_task = None
    for k in range(100):
        v, h = np.asarray(tasks.vertical_walls[k]), np.asarray(tasks.horizontal_walls[k])
        assert _is_spanning_tree(v, h)  # all 9 cells connected through exactly 8 passages
        walls = np.concatenate([v[1:-1].ravel(), h[:, 1:-1].T.ravel()])  # `interior_walls` order
        walls_of_first_task = walls if walls_of_first_task is None else walls_of_first_task
        goals = np.concatenate([np.asarray(tasks.goal_low[k]), np.asarray(tasks.goal_high[k])], 1)
        chosen = [int(np.flatnonzero(np.all(boxes == g, axis=1))[0]) for g in goals]
        assert len(set(chosen)) == 3 and all(walls[p // 2] for p in chosen)  # distinct, on standing walls
    # a walk cut short (3 steps on 4x4) is completed by joining cells: still a spanning tree
    v, h = jax.jit(jax.vmap(lambda k: aldous_broder(k, 4, max_walk=3)))(jax.random.split(KEY, 20))
    assert all(_is_spanning_tree(np.asarray(v[k]), np.asarray(h[k])) for k in range(20))
    np.testing.assert_array_equal(  # `interior_walls` as the panels expect it
        interior_walls(tasks.vertical_walls[0], tasks.horizontal_walls[0]), walls_of_first_task
    )


def test_aldous_broder_is_uniform_on_2x2():
    # a 2x2 grid has 4 spanning trees (the 4-cycle less one edge); each should have prob 1/4
    v, h = jax.jit(jax.vmap(lambda k: aldous_broder(k, 2)))(jax.random.split(KEY, 4000))
    closed = np.concatenate([np.asarray(v)[:, 1, :], np.asarray(h)[:, :, 1]], axis=1)  # [4000, 4]
    assert (closed.sum(1) == 1).all()
    np.testing.assert_allclose(closed.mean(0), 0.25, atol=4 * math.sqrt(0.1875 / 4000))


def test_render_and_gif(tmp_path):
    env = metarl.make("ray-maze")
    task = _maze(vertical=[(2, 0)], goals=[((1.7, 0.0), (2.0, 1.0))])
    frames, rewards = episode_frames(KEY, env, task, [FORWARD, FORWARD, FORWARD, TURN_LEFT])
    assert rewards == [0.0, 0.0, 1.0, 0.0]
    assert frames[0].shape == (241, 241, 3) and frames[0].dtype == np.uint8
    assert tuple(frames[0][240 - 40, 40]) == (40, 80, 220)  # the agent at (0.5, 0.5)
    assert tuple(frames[0][0, 120]) == (20, 20, 20)  # the top border wall
    with Image.open(save_gif(tmp_path / "maze.gif", frames)) as gif:
        assert gif.n_frames == 5


@pytest.mark.parametrize(
    "options, message",
    [
        ({"size": 1}, "ray-maze: size must be >= 2, got 1"),
        ({"rays": 4}, "ray-maze: rays must be odd, got 4"),
        ({"goals": 9}, "ray-maze: goals must be <= 8, got 9"),
        ({"p_good": 1.5}, "ray-maze: p_good must be <= 1.0"),
        ({"field_of_view": 4.0}, "ray-maze: field_of_view must be < 3.14"),
        ({"step_size": 0.0}, "ray-maze: step_size must be > 0.0"),
        ({"horizon": 0}, "ray-maze: horizon must be >= 1"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ConfigError) as err:
        metarl.make("ray-maze", **options)
    assert message in str(err.value)
