"""Contextual classic control: factors and their errors, the training and evaluation context sets,
and dynamics equal to Gymnasium's one step at a time from shared states, at several contexts
including the evaluation set's extremes."""

import jax
import numpy as np
import pytest

import metarl
from metarl.errors import ConfigError

KEY = jax.random.PRNGKey(0)


def _task(tasks, i):
    return jax.tree.map(lambda x: x[i], tasks)


def test_training_contexts_are_a_fixed_set_and_contexts_are_multipliers():
    env = metarl.make("cartpole", factors="length,gravity", contexts=100)
    train = env.training_tasks()
    lengths = np.asarray(train.length)
    assert lengths.shape == (100,) and len(np.unique(lengths)) == 100
    assert ((lengths >= 0.2 * 0.5) & (lengths <= 2.2 * 0.5)).all()
    # every sampled task is one of the 100, with derived physics recomputed
    tasks = env.sample_tasks(jax.random.PRNGKey(5), 64)
    assert set(np.asarray(tasks.length).tolist()) <= set(lengths.tolist())
    np.testing.assert_allclose(tasks.polemass_length, tasks.masspole * tasks.length, rtol=1e-6)
    np.testing.assert_allclose(env.context(_task(tasks, 0)), [float(tasks.length[0]) / 0.5, float(tasks.gravity[0]) / 9.8], rtol=1e-6)
    # the same seed gives the same set; another seed another
    assert np.array_equal(np.asarray(metarl.make("cartpole", factors="length,gravity").training_tasks().length), lengths)
    assert not np.array_equal(np.asarray(metarl.make("cartpole", factors="length,gravity", context_seed=1).training_tasks().length), lengths)


def test_evaluation_contexts_span_interpolation_and_extrapolation():
    env = metarl.make("mountaincar")  # gravity x U(0.1, 2.2)
    multipliers, tasks, inside = env.evaluation_tasks(num=40)
    np.testing.assert_allclose(multipliers, np.linspace(0.05, 4.4, 40))
    np.testing.assert_allclose(tasks.gravity, multipliers * 0.0025, rtol=1e-6)
    assert inside.sum() == ((multipliers >= 0.1) & (multipliers <= 2.2)).sum() and 0 < inside.sum() < 40
    assert np.allclose(tasks.force, 0.001)  # the other parameters at their defaults


def test_carl_compatibility_leaves_derived_physics_at_their_defaults():
    carl = metarl.make("cartpole", factors="length", update_derived=False)
    ours = metarl.make("cartpole", factors="length")
    assert float(carl.task_with(length=1.0).polemass_length) == pytest.approx(0.05)
    assert float(ours.task_with(length=1.0).polemass_length) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "family, options, message",
    [
        ("cartpole", {"factors": "pole"}, "unknown factor 'pole' in factors; valid factors: tau, length, gravity"),
        ("cartpole", {"factors": "length=2:1"}, "needs 0 < LOW <= HIGH, got 2.0:1.0"),
        ("cartpole", {"factors": "length=-1:1"}, "needs 0 < LOW <= HIGH"),
        ("cartpole", {"factors": "length,length"}, "appears twice"),
        ("cartpole", {"action_bins": 3}, "applies to Box actions"),
        ("pendulum", {"action_bins": 1}, "action_bins must be 0"),
        ("cartpole", {"contexts": -1}, "contexts must be >= 0"),
    ],
)
def test_bad_contexts_are_clear_errors(family, options, message):
    with pytest.raises(ConfigError, match=message):
        metarl.make(family, **options)


def test_a_context_outside_physical_sense_is_an_error():
    with pytest.raises(ConfigError, match="length must be positive"):
        metarl.make("cartpole").task_with(length=-0.5)


def test_discrete_pendulum_maps_actions_to_evenly_spaced_torques():
    env = metarl.make("pendulum", action_bins=5)
    assert env.discrete and env.num_actions == 5
    np.testing.assert_allclose(np.asarray(env.action_values())[:, 0], [-2, -1, 0, 1, 2])
    box = metarl.make("pendulum")
    task = env.sample_task(KEY)
    _, state = env.reset(KEY, task)
    for a in range(5):
        mine = env.step(KEY, state, a, task)
        ref = box.step(KEY, state, np.asarray([-2.0 + a], np.float32), task)
        np.testing.assert_allclose(mine[0], ref[0]) and np.testing.assert_allclose(mine[2], ref[2])


def _contexts(env):
    """Training contexts and the evaluation set's two extremes."""
    _, evals, _ = env.evaluation_tasks(num=40)
    train = env.sample_tasks(KEY, 3)
    return [_task(train, i) for i in range(3)] + [_task(evals, 0), _task(evals, 39)]


def _matches_gymnasium(name, factors, gym_id, set_ref, draw, to_state, steps, rtol, atol):
    """One step at a time from shared random states at every context of `_contexts`: obs (to
    rtol/atol: float32 against Gymnasium's float64), reward and termination equal Gymnasium's.
    set_ref(ref, task) sets Gymnasium's physics; draw(rng) -> (state vector, action);
    to_state(gymnax state, float32 state vector) -> the gymnax state."""
    gymnasium = pytest.importorskip("gymnasium")
    env = metarl.make(name, factors=factors)
    ref = gymnasium.make(gym_id).unwrapped
    step = jax.jit(env.step)
    rng = np.random.default_rng(0)
    for task in _contexts(env):
        set_ref(ref, task)
        _, state = env.reset(KEY, task)
        for _ in range(steps):
            x, action = draw(rng)
            ref.state = np.array(x, np.float64)
            ref_obs, ref_reward, ref_terminated, _, _ = ref.step(action)
            obs, _, reward, terminated, _, _ = step(KEY, to_state(state, np.asarray(x, np.float32)), action, task)
            np.testing.assert_allclose(obs, ref_obs, rtol=rtol, atol=atol)
            np.testing.assert_allclose(float(reward), ref_reward, rtol=1e-5, atol=1e-5)
            assert bool(terminated) == bool(ref_terminated)


def test_mountaincar_equals_gymnasium():
    def set_ref(ref, task):
        ref.gravity, ref.force = float(task.gravity), float(task.force)

    _matches_gymnasium(
        "mountaincar", "gravity,force", "MountainCar-v0", set_ref,
        lambda rng: (rng.uniform([-1.2, -0.07], [0.6, 0.07]), int(rng.integers(3))),
        lambda state, x: state.replace(position=x[0], velocity=x[1], time=0), 20, 1e-5, 1e-6,
    )


def test_pendulum_equals_gymnasium():
    def set_ref(ref, task):
        ref.l, ref.g, ref.m = float(task.l), float(task.g), float(task.m)

    # the angular speed is clipped at 8; obs are cos, sin and speed
    _matches_gymnasium(
        "pendulum", "length,gravity,mass", "Pendulum-v1", set_ref,
        lambda rng: (rng.uniform([-np.pi, -8], [np.pi, 8]), rng.uniform(-2, 2, size=(1,)).astype(np.float32)),
        lambda state, x: state.replace(theta=x[0], theta_dot=x[1], time=0), 20, 1e-5, 2e-5,
    )


def test_acrobot_equals_gymnasium():
    def set_ref(ref, task):
        ref.LINK_LENGTH_1, ref.LINK_MASS_2 = float(task.link_length_1), float(task.link_mass_2)
        ref.LINK_COM_POS_1 = 0.5 * ref.LINK_LENGTH_1  # the derived centre of mass, as update_derived does

    # one RK4 step of 0.2 s in float32 against float64
    _matches_gymnasium(
        "acrobot", "link_length_1,link_mass_2", "Acrobot-v1", set_ref,
        lambda rng: (rng.uniform([-np.pi, -np.pi, -4, -9], [np.pi, np.pi, 4, 9]), int(rng.integers(3))),
        lambda state, x: state.replace(joint_angle1=x[0], joint_angle2=x[1], velocity_1=x[2], velocity_2=x[3], time=0), 10, 1e-4, 1e-4,
    )
