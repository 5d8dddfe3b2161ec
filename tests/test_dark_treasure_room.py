"""Dark Treasure Room (First-Explore): moves, edges, treasures paid once per episode, the oracle."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import metarl
from metarl.envs.dark_treasure_room import DarkTreasureRoomTask
from metarl.envs.render import episode_frames, save_gif
from metarl.errors import ConfigError

KEY = jax.random.PRNGKey(0)
NOOP, UP, RIGHT, DOWN, LEFT = range(5)


def _task(cells_values, treasures=8):
    """Treasures at the given (x, y) cells with the given values; the rest worth 0 in a corner."""
    cells = [c for c, _ in cells_values] + [(0, 0)] * (treasures - len(cells_values))
    values = [v for _, v in cells_values] + [0.0] * (treasures - len(cells_values))
    return DarkTreasureRoomTask(jnp.array(cells, jnp.int32), jnp.array(values, jnp.float32))


def _run(env, task, actions):
    obs, state = env.reset(KEY, task)
    step = jax.jit(env.step)
    out = [np.asarray(obs)]
    rewards, dones = [], []
    for a in actions:
        obs, state, reward, _, done, _ = step(KEY, state, a, task)
        out.append(np.asarray(obs))
        rewards.append(float(reward))
        dones.append(bool(done))
    return np.array(out), rewards, dones


def test_moves_and_grid_edges_block():
    env = metarl.make("dark-treasure-room", size=3, horizon=20)
    obs, _, _ = _run(env, _task([]), [LEFT, LEFT, DOWN, DOWN, NOOP, RIGHT, RIGHT, RIGHT, UP, UP, UP])
    # start at the centre (1, 1); left to the edge and blocked, down to the corner and blocked, ...
    expected = [(1, 1), (0, 1), (0, 1), (0, 0), (0, 0), (0, 0), (1, 0), (2, 0), (2, 0), (2, 1), (2, 2), (2, 2)]
    np.testing.assert_array_equal(obs, np.array(expected, np.float32))


def test_treasure_paid_once_per_episode_and_observation_is_position_only():
    env = metarl.make("dark-treasure-room")
    assert env.obs_shape == (2,)
    # 0.5 on the start cell (4, 4), 1.5 at (4, 5), two treasures together at (5, 5): 1 and -0.25
    task = _task([((4, 4), 0.5), ((4, 5), 1.5), ((5, 5), 1.0), ((5, 5), -0.25)])
    actions = [NOOP, NOOP, UP, NOOP, DOWN, UP, RIGHT, LEFT, RIGHT]
    obs, rewards, dones = _run(env, task, actions)
    # no-op onto the start cell pays its treasure, once; the stacked pair pays 0.75 together, once
    assert rewards == [0.5, 0.0, 1.5, 0.0, 0.0, 0.0, 0.75, 0.0, 0.0]
    assert dones == [False] * 8 + [True]  # 9-step episodes
    np.testing.assert_array_equal(obs[0], [4.0, 4.0])
    # the agent sees only (x, y): another task gives the same observations for the same actions
    other, other_rewards, _ = _run(env, _task([((4, 5), -3.0)]), actions)
    np.testing.assert_array_equal(obs, other)
    assert other_rewards[2] == -3.0


def test_treasure_paid_again_after_the_trials_auto_reset():
    env = metarl.make("dark-treasure-room")
    trial = metarl.Trial(env, episodes=2)
    task = _task([((4, 5), 1.5)])
    ts, state = trial.reset(KEY, task)
    step = jax.jit(trial.step)
    seen = []
    for t, a in enumerate([UP, NOOP, DOWN, UP, NOOP, NOOP, NOOP, NOOP, NOOP] * 2):
        ts, state, reward, info = step(jax.random.fold_in(KEY, t), state, a)
        seen.append((int(info["episode_index"]), float(reward)))
    assert seen[:9] == [(0, 1.5)] + [(0, 0.0)] * 8
    assert seen[9:] == [(1, 1.5)] + [(1, 0.0)] * 8
    assert bool(info["trial_done"])


def test_task_prior():
    env = metarl.make("dark-treasure-room")
    tasks = env.sample_tasks(KEY, 2000)
    assert tasks.treasure_xy.shape == (2000, 8, 2) and tasks.treasure_value.shape == (2000, 8)
    v = np.asarray(tasks.treasure_value)
    assert v.min() >= -4.0 and v.max() < 2.0
    assert abs(v.mean() + 1.0) < 0.06  # U(-4, 2): mean -1, std sqrt(3); 4 sigma over 16000 = 0.055
    counts = np.zeros((9, 9))
    np.add.at(counts, tuple(np.asarray(tasks.treasure_xy).reshape(-1, 2).T), 1)
    assert counts.min() > 0 and counts[4, 4] > 0  # every cell, the start cell included
    assert abs(counts.mean() - 16000 / 81) < 1e-9 and counts.std() < 0.2 * counts.mean()  # ~14 each: Poisson sd 0.07
    control = metarl.make("dark-treasure-room", minval=0.0).sample_tasks(KEY, 200).treasure_value
    assert float(control.min()) >= 0.0


def test_oracle_hand_worked():
    env = metarl.make("dark-treasure-room")
    # corners (0, 0) = 1 and (8, 8) = 2 are 8 steps away and 16 apart; one no-op collects the 0.5
    # on the start cell: 0.5 + 2 in 9 steps
    task = _task([((0, 0), 1.0), ((8, 8), 2.0), ((4, 4), 0.5)])
    assert float(env.optimal_episode_return(task)) == pytest.approx(2.5)
    # 2 behind a -1: walk round it (4 steps) instead of through it
    task = _task([((4, 5), -1.0), ((4, 6), 2.0)])
    assert float(env.optimal_episode_return(task)) == pytest.approx(2.0)


def test_oracle_matches_brute_force_on_a_small_room():
    env = metarl.make("dark-treasure-room", size=3, treasures=4, horizon=4)
    tasks = env.sample_tasks(jax.random.PRNGKey(3), 8)
    sequences = jnp.array(list(itertools.product(range(5), repeat=4)))  # all 625 action sequences

    def episode_return(task, actions):
        _, state = env.reset(KEY, task)

        def body(state, a):
            _, state, reward, _, _, _ = env.step(KEY, state, a, task)
            return state, reward

        return jax.lax.scan(body, state, actions)[1].sum()

    best = jax.jit(jax.vmap(lambda task: jax.vmap(lambda a: episode_return(task, a))(sequences).max()))(tasks)
    oracle = jax.jit(jax.vmap(env.optimal_episode_return))(tasks)
    np.testing.assert_allclose(oracle, best, atol=1e-5)


def test_render_and_gif(tmp_path):
    env = metarl.make("dark-treasure-room")
    task = _task([((4, 5), 1.5), ((2, 2), -3.0)])
    frames, rewards = episode_frames(KEY, env, task, [UP, UP, RIGHT])
    assert len(frames) == 4 and rewards == [1.5, 0.0, 0.0]
    assert frames[0].shape == (9 * 24, 9 * 24, 3) and frames[0].dtype == np.uint8
    # the agent (blue) is drawn at (4, 4): image row (8 - 4) * 24 + 12, column 4 * 24 + 12
    assert tuple(frames[0][4 * 24 + 12, 4 * 24 + 12]) == (40, 80, 220)
    assert tuple(frames[2][3 * 24 + 2, 4 * 24 + 2]) == (150, 150, 150)  # (4, 5): row (8 - 5) * 24; grey once collected
    path = save_gif(tmp_path / "room.gif", frames)
    with Image.open(path) as gif:
        assert gif.n_frames == 4


@pytest.mark.parametrize(
    "options, message",
    [
        ({"size": 0}, "dark-treasure-room: size must be >= 1, got 0"),
        ({"treasures": 0}, "dark-treasure-room: treasures must be >= 1, got 0"),
        ({"minval": 2.0}, "dark-treasure-room: minval must be < maxval"),
        ({"minval": float("inf")}, "dark-treasure-room: minval must be a finite number"),
        ({"horizon": 0}, "dark-treasure-room: horizon must be >= 1"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ConfigError) as err:
        metarl.make("dark-treasure-room", **options)
    assert message in str(err.value)


def test_oracle_refuses_too_many_treasures():
    env = metarl.make("dark-treasure-room", treasures=20)
    with pytest.raises(ConfigError, match="treasures <= 12"):
        env.optimal_episode_return(env.sample_task(KEY))
