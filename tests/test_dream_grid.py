"""DREAM's grid worlds against hand-worked cases: buses and their return buses, the useless buses,
the map cell, the cooking drawers, sub-goal rewards and a wrong pickup, end_episode's cost, the
two-phase trial (a hidden instruction while exploring, the explorer stopped on the goal), the
train/test splits and the exact optimal returns on cases small enough to work out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl.envs import dream_optimal
from metarl.envs.dream_grid import (
    DOWN, DROP, END_EPISODE, LEFT, NOOP, PICKUP, RIDE_BUS, RIGHT, UP, Cooking, GridTask, exploit_return,
)
from metarl.envs.trial import Trial
from metarl.errors import ConfigError

KEY = jax.random.PRNGKey(0)


def run(env, task_id, actions, instruction=None, episode=1):
    """Step one exploitation (episode >= 1) or exploration (0) episode: [(obs, reward, terminated)]."""
    params = GridTask(jnp.int32(task_id))
    obs, state = env.reset_episode(KEY, params, jnp.int32(episode))
    if instruction is not None:
        state = state.replace(instruction=jnp.asarray(instruction, jnp.int32))
        obs = env.observe(state, params)
    step = jax.jit(env.step)
    out = [(np.asarray(obs), 0.0, False)]
    for a in actions:
        obs, state, reward, terminated, truncated, _ = step(KEY, state, jnp.int32(a), params)
        assert not bool(truncated)
        out.append((np.asarray(obs), float(reward), bool(terminated)))
    return out


def test_city_buses_follow_the_ids_permutation_and_come_back():
    city = metarl.make("city")
    # id 0: the identity permutation, (4,5) -> (0,1); ride back from (0,1) to (4,5)
    steps = run(city, 0, [UP, RIDE_BUS, RIDE_BUS], instruction=(8, 8))
    assert [tuple(s[0][:3]) for s in steps] == [(4, 4, 0), (4, 5, 1), (0, 1, 1), (4, 5, 1)]
    assert [round(s[1], 6) for s in steps[1:]] == [-0.1, -0.1, -0.1]
    # id 23: the reversed permutation, (4,5) -> (8,7); then up to the corner (8,8): +1 ends the episode
    steps = run(city, 23, [UP, RIDE_BUS, UP], instruction=(8, 8))
    assert [tuple(s[0][:2]) for s in steps] == [(4, 4), (4, 5), (8, 7), (8, 8)]
    assert np.isclose(sum(s[1] for s in steps), 0.8) and steps[-1][2] and not steps[-2][2]
    # ride_bus off a stop does nothing; moves are clamped to the grid
    steps = run(city, 0, [RIDE_BUS, LEFT, LEFT, LEFT, LEFT, LEFT, DOWN], instruction=(8, 8))
    assert [tuple(s[0][:2]) for s in steps][-3:] == [(0, 4), (0, 4), (0, 3)]


def test_distraction_has_useless_two_way_buses_and_its_splits():
    env = metarl.make("distraction")
    # id = helpful + 24 x useless: id 24 x 23 uses the reversed useless permutation, (5,5) -> (4,8)
    steps = run(env, 24 * 23, [UP, RIGHT, RIDE_BUS, RIDE_BUS], instruction=(0, 0))
    assert [tuple(s[0][:3]) for s in steps] == [(4, 4, 0), (4, 5, 1), (5, 5, 1), (4, 8, 1), (5, 5, 1)]
    steps = run(env, 24 * 23 + 23, [UP, RIDE_BUS], instruction=(0, 0))  # the helpful part: reversed too
    assert tuple(steps[-1][0][:2]) == (8, 7)
    train, test = env.train_ids(), env.test_ids()
    assert len(train) == 53 and train[:3].tolist() == [0, 11, 22] and train[-1] == 572 and len(test) == 523
    assert set(train) | set(test) == set(range(576)) and not set(train) & set(test)
    assert set(np.asarray(jax.vmap(env.sample_task)(jax.random.split(KEY, 200)).task_id).tolist()) <= set(train.tolist())
    held_out = metarl.make("distraction", split="test")
    assert set(np.asarray(jax.vmap(held_out.sample_task)(jax.random.split(KEY, 200)).task_id).tolist()) <= set(test.tolist())
    parts, sizes = env.id_factors()  # (helpful, useless) permutation
    assert sizes == (24, 24) and parts[24 * 23 + 5].tolist() == [5, 23] and parts[11].tolist() == [11, 0]
    city = metarl.make("city")
    assert city.train_ids().tolist() == city.test_ids().tolist() == list(range(24))
    assert city.id_factors()[0][:, 0].tolist() == list(range(24)) and city.id_factors()[1] == (24,)


def test_map_cell_shows_the_id_plus_one():
    env = metarl.make("map")
    path = [RIGHT, RIGHT, RIGHT, DOWN, UP]  # (4,4) -> (7,4) -> (7,3) -> (7,4)
    steps = run(env, 17, path, instruction=(0, 0))
    assert [tuple(s[0][:2]) for s in steps][3:] == [(7, 4), (7, 3), (7, 4)]
    assert [s[0][3] for s in steps] == [0, 0, 0, 0, 18, 0]
    assert env.obs_shape == (4 + 4,)


def test_cooking_drawers_sub_goals_and_a_wrong_pickup():
    env = metarl.make("cooking")
    assert np.asarray(Cooking.drawer_contents(10)).tolist() == [2, 2, 0]
    assert np.asarray(Cooking.drawer_contents(27)).tolist() == [3, 2, 1]  # 27 = 3 + 2 x 4 + 1 x 16
    assert env.test_ids().tolist() == [10] and len(env.train_ids()) == 63 and 10 not in env.train_ids()
    parts, sizes = Cooking.id_factors()  # (what DREAM's factored f is made of: the drawers' contents)
    assert sizes == (4, 4, 4) and parts[10].tolist() == [2, 2, 0] and parts[27].tolist() == [3, 2, 1]
    assert (parts == np.asarray(Cooking.drawer_contents(jnp.arange(64)))).all()
    # id 10, instruction (0, 2): drawer (2,2) holds 0, (2,1) holds 2; the agent starts on the bowl
    steps = run(env, 10, [RIGHT, UP, PICKUP, DOWN, LEFT, DROP, RIGHT, PICKUP, LEFT, DROP], instruction=(0, 2))
    obs0 = steps[0][0]
    assert obs0[:7].tolist() == [1, 1, 2, 4, 4, 4, 4]  # (x, y, status bowl, empty hand, empty bowl)
    assert obs0[7:].tolist() == [1, 0, 0, 0, 0, 0, 1, 0]  # the instruction, one-hot per ingredient
    rewards = [round(s[1], 6) for s in steps[1:]]
    assert rewards == [-0.1, -0.1, 0.25, -0.1, -0.1, 0.25, -0.1, 0.25, -0.1, 0.25]
    assert steps[3][0][:4].tolist() == [2, 2, 3, 0]  # on the drawer, holding ingredient 0
    assert steps[-1][0][3:7].tolist() == [4, 0, 2, 4] and steps[-1][2]  # both in the bowl, in order: done
    assert np.isclose(sum(rewards), 1 - 0.2 * (2 + 1))  # the reference's 1 - 0.2 (d1 + d2)
    # a wrong pickup costs -0.35; dropping the awaited ingredient outside the bowl: -0.35, back one sub-goal
    steps = run(env, 10, [RIGHT, PICKUP, UP, PICKUP, RIGHT, DROP, UP], instruction=(0, 2))
    rewards = [round(s[1], 6) for s in steps[1:]]
    assert rewards == [-0.1, -0.35, -0.1, 0.25, -0.1, -0.35, -0.1]
    # pickup at the bowl empties the hand (the bowl gives nothing)
    steps = run(env, 10, [RIGHT, PICKUP, LEFT, PICKUP], instruction=(2, 2))
    assert steps[2][0][3] == 2 and steps[4][0][3] == 4


def test_end_episode_costs_the_steps_remaining():
    for name, instruction in (("city", (0, 0)), ("cooking", (0, 0))):
        env = metarl.make(name)
        steps = run(env, 3, [NOOP, END_EPISODE], instruction=instruction)
        assert np.isclose(steps[2][1], -0.1 - 0.1 * 18) and steps[2][2] and not steps[1][2]
    steps = run(metarl.make("city"), 3, [NOOP] * 20, instruction=(0, 0))
    assert [s[2] for s in steps[1:]] == [False] * 19 + [True]  # 20 steps end the episode


def test_two_phase_trial_hides_the_instruction_while_exploring_and_stops_the_explorer_on_the_goal():
    env = metarl.make("city")
    trial = Trial(env, 2)
    params = GridTask(jnp.int32(0))
    timestep, state = trial.reset(jax.random.PRNGKey(3), params)
    assert int(timestep.episode_index) == 0 and np.all(np.asarray(timestep.obs[3:]) == 0)  # exploring: no instruction
    hidden = np.asarray(state.env_state.instruction)
    assert bool(state.env_state.exploring) and tuple(hidden) in {(0, 0), (8, 8), (0, 8), (8, 0)}
    # walk the explorer onto its hidden goal: the exploration episode ends there
    x, y = 4, 4
    moves = [RIGHT if hidden[0] > x else LEFT] * 4 + [UP if hidden[1] > y else DOWN] * 4
    step = jax.jit(trial.step)
    for t, a in enumerate(moves):
        timestep, state, reward, info = step(jax.random.PRNGKey(10 + t), state, jnp.int32(a))
    assert bool(info["terminated"]) and float(reward) == 1.0 and int(timestep.episode_index) == 1
    # the exploitation episode: back at the start, the instruction shown
    assert np.asarray(timestep.obs[:2]).tolist() == [4, 4] and np.asarray(timestep.obs[3:]).sum() == 1
    assert not bool(state.env_state.exploring)
    assert exploit_return(np.array([[-0.5, 0.8, 0.3]])).tolist() == [pytest.approx(1.1)]


def test_optimal_returns_on_cases_worked_by_hand():
    # 3 steps: id known, step to the right stop, ride, step to the corner: -0.1 - 0.1 + 1 = 0.8.
    # No information: any bus lands beside the corner w.p. 1/4 (then 0.8); otherwise 1 step is left
    # and nothing reaches the corner: -0.3; ending at once costs -0.1 - 0.2 = -0.3 too.
    city = metarl.make("city", max_steps=3)
    np.testing.assert_allclose(dream_optimal.full_information(city, [0, 7, 23]), 0.8, atol=1e-6)
    np.testing.assert_allclose(dream_optimal.no_information(city, city.train_ids()), 0.25 * 0.8 - 0.75 * 0.3, atol=1e-6)
    # cooking's test id (drawers [2, 2, 0]): 1 - 0.2 (d1 + d2) with d = 1 for ingredient 2 (p 2/3), 2 for 0
    expected = 1 - 0.2 * 2 * (2 / 3 * 1 + 1 / 3 * 2)
    np.testing.assert_allclose(dream_optimal.full_information(metarl.make("cooking"), [10]), expected, atol=1e-6)
    assert abs(expected - 0.4667) < 1e-3
    with pytest.raises(ConfigError, match="task ids"):
        dream_optimal.full_information(city, [24])
    with pytest.raises(ConfigError, match="city-type"):
        dream_optimal.no_information(metarl.make("cooking"), [10])


def test_bad_options_and_renders():
    with pytest.raises(ConfigError, match="split"):
        metarl.make("city", split="validation")
    with pytest.raises(ConfigError, match="max_steps"):
        metarl.make("cooking", max_steps=0)
    for name in ("city", "distraction", "map", "cooking"):
        env = metarl.make(name)
        params = env.sample_task(KEY)
        _, state = env.reset(KEY, params)
        image = env.render(params, state)
        assert image.dtype == np.uint8 and image.shape == (env.size * 24, env.size * 24, 3)
        assert float(env.context(params)[0]) == float(params.task_id)


def test_trial_frames_one_list_per_episode_with_the_last_state_before_the_reset():
    import dataclasses

    from metarl.agents import Agent
    from metarl.envs.render import trial_frames

    @dataclasses.dataclass(frozen=True)
    class Scripted(Agent):  # explore: up onto the bus at (4, 5), ride it, end; exploit: end at once
        def init(self, key):
            return jnp.int32(0)

        def act(self, params, carry, timestep, key):
            script = jnp.array([UP, RIDE_BUS, END_EPISODE, END_EPISODE])
            return script[carry], carry + 1

    city = metarl.make("city")
    task = GridTask(jnp.int32(0))
    episodes = trial_frames(Scripted(city, 2), None, Trial(city, 2), task, KEY)
    assert [len(e) for e in episodes] == [4, 2]  # each episode: its first state, then one frame per step
    _, start = Trial(city, 2).reset(jax.random.split(KEY)[0], task)  # the trial trial_frames starts
    np.testing.assert_array_equal(episodes[0][0], city.render(task, start.env_state))
    # the bus ride moves the agent (frame 2 differs from frame 1); end_episode does not (frame 3 = frame 2)
    assert np.any(episodes[0][2] != episodes[0][1])
    np.testing.assert_array_equal(episodes[0][3], episodes[0][2])
    assert episodes[1][0].dtype == np.uint8 and episodes[1][0].ndim == 3
