"""DQN: the replay buffer, DQN and Double DQN targets against hand-computed values, the learned
(JRPL) context's window and encoder gradients, the explicit agent's context, and a tiny DQN that
beats random on CartPole."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl import algos
from metarl.algos.dqn import DQNAgent, QNetwork, push, replay_add, replay_sample, td_targets, window_mask
from metarl.errors import ConfigError
from metarl.run.evaluation import seed_slice
from metarl.run.loop import init_states, run_chunk
from metarl.run.settings import init_keys


def test_replay_is_a_ring_in_fifo_order_and_samples_only_filled_slots():
    buffer = {"x": jnp.full((5,), -1.0)}
    buffer, pos, size = replay_add(buffer, jnp.int32(0), jnp.int32(0), {"x": jnp.array([0.0, 1.0, 2.0])})
    assert (int(pos), int(size)) == (3, 3) and buffer["x"].tolist() == [0, 1, 2, -1, -1]
    drawn = replay_sample(buffer, size, jax.random.PRNGKey(0), 1000)["x"]
    assert set(np.asarray(drawn).tolist()) == {0.0, 1.0, 2.0}  # never the empty slots
    buffer, pos, size = replay_add(buffer, pos, size, {"x": jnp.array([3.0, 4.0, 5.0, 6.0])})
    # slots 3, 4 then wrap to 0, 1: the oldest (0, 1) are overwritten first
    assert (int(pos), int(size)) == (2, 5) and buffer["x"].tolist() == [5, 6, 2, 3, 4]


def test_dqn_and_double_dqn_targets():
    reward = jnp.array([1.0, 0.5])
    terminated = jnp.array([False, True])
    q_target = jnp.array([[2.0, 3.0], [10.0, 0.0]])
    q_online = jnp.array([[5.0, 1.0], [0.0, 1.0]])
    # DQN: 1 + 0.9 * max(2, 3) = 3.7; the terminal one is its reward alone
    np.testing.assert_allclose(td_targets(reward, terminated, 0.9, q_target), [3.7, 0.5])
    # Double DQN: the online network picks action 0 for the first: 1 + 0.9 * 2 = 2.8
    np.testing.assert_allclose(td_targets(reward, terminated, 0.9, q_target, q_online), [2.8, 0.5])


def test_window_keeps_the_newest_transitions_and_masks_the_rest():
    window, count = jnp.zeros((3, 2)), jnp.int32(0)
    for i in range(4):
        window, count = push(window, count, jnp.full((2,), float(i + 1)))
        if i == 0:
            assert window_mask(count, 3).tolist() == [False, False, True]
    assert int(count) == 3 and window[:, 0].tolist() == [2.0, 3.0, 4.0]


def test_learned_encoder_pools_only_valid_rows_and_gets_gradients_from_the_q_loss():
    net = QNetwork(num_actions=2, hidden=(8,), encoder=(4,), encoder_dim=2)
    obs, ctx = jnp.ones((3,)), jnp.zeros((0,))
    window = jax.random.normal(jax.random.PRNGKey(1), (5, 6))
    mask = jnp.array([False, False, True, True, True])
    params = net.init(jax.random.PRNGKey(0), obs, ctx, window, mask)
    junk = window.at[:2].set(100.0)  # masked rows do not matter
    np.testing.assert_allclose(net.apply(params, obs, ctx, window, mask), net.apply(params, obs, ctx, junk, mask), rtol=1e-6)

    def q_loss(p):
        return jnp.square(net.apply(p, obs, ctx, window, mask)[0] - 1.0)

    grads = jax.grad(q_loss)(params)["params"]
    assert all(float(jnp.abs(g).sum()) > 0 for name, layer in grads.items() if name.startswith("encoder") for g in jax.tree.leaves(layer))


def test_explicit_agent_reads_its_tasks_context_and_others_do_not():
    env = metarl.make("cartpole", factors="length")
    assert DQNAgent(env, 1, context_mode="explicit").reads_context
    assert not DQNAgent(env, 1, context_mode="hidden").reads_context and not DQNAgent(env, 1, context_mode="learned").reads_context
    algo = algos.make("dqn", env, context_mode="explicit", schedule_steps=100)
    assert algo.trial.expose_context
    state = algo.init(jax.random.PRNGKey(0))
    assert state.buffer["context"].shape == (10_000, 1)


def test_bad_dqn_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="context_mode must be one of hidden, explicit, learned"):
        algos.make("dqn", metarl.make("cartpole"), context_mode="magic")
    with pytest.raises(ConfigError, match="needs discrete actions.*action_bins"):
        algos.make("dqn", metarl.make("pendulum"))
    with pytest.raises(ConfigError, match="schedule_steps=None"):
        algos.make("dqn", metarl.make("cartpole")).epsilon(jnp.float32(0))


def test_a_tiny_dqn_beats_random_on_cartpole():
    env = metarl.make("gymnax", env_id="CartPole-v1")
    algo = algos.make("dqn", env, learning_starts=1000, target_every=200)
    algo = algo.for_run(3_000)  # 30,000 steps: epsilon decays over the first 15,000
    state = init_states(algo, init_keys(0, 1))
    state, _, bad = run_chunk(algo, state, jnp.int32(3_000))
    assert int(bad[0]) == -1
    returns = algo.evaluate(seed_slice(state, 0), jax.random.PRNGKey(1), tasks=16)
    # a uniformly random policy lasts about 22 steps (std about 12: 16 episodes have a standard
    # error of 3), the untrained greedy one about 10; 45 is twice random's
    assert returns.mean() > 45, returns.mean()


def test_torch_initialisation_matches_nn_linear_bounds():
    net = QNetwork(num_actions=2, hidden=(120, 84))
    params = net.init(jax.random.PRNGKey(0), jnp.ones((4,)), jnp.zeros((0,)))["params"]
    for name, fan_in in (("hidden_0", 4), ("hidden_1", 120), ("q", 84)):
        bound = 1 / np.sqrt(fan_in)
        kernel, bias = params[name]["kernel"], params[name]["bias"]
        assert 0.9 * bound < float(jnp.abs(kernel).max()) <= bound  # U(-bound, bound), hundreds of draws
        assert 0 < float(jnp.abs(bias).max()) <= bound
    lecun = QNetwork(num_actions=2, hidden=(8,), weight_init="lecun").init(jax.random.PRNGKey(0), jnp.ones((4,)), jnp.zeros((0,)))
    assert float(jnp.abs(lecun["params"]["hidden_0"]["bias"]).max()) == 0.0
