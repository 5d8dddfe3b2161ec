"""DQN: the replay buffer, DQN and Double DQN targets against hand-computed values, the learned
(JRPL) context's window and encoder gradients, the explicit agent's context, and a tiny DQN that
beats random on CartPole."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl import algos
from metarl.algos.dqn import DQNAgent, QNetwork, prediction_error, push, replay_add, replay_add_masked, replay_sample, td_targets, window_mask
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


def test_masked_replay_writes_only_the_selected_transitions_in_order():
    buffer = {"x": jnp.full((4,), -1.0)}
    buffer, pos, size = replay_add_masked(buffer, jnp.int32(3), jnp.int32(3), {"x": jnp.array([10.0, 11.0, 12.0, 13.0])},
                                          jnp.array([True, False, True, True]))
    # 10 at slot 3, then the ring wraps: 12 at 0, 13 at 1; 11 is dropped
    assert buffer["x"].tolist() == [12, 13, -1, 10] and (int(pos), int(size)) == (2, 4)
    _, pos, size = replay_add_masked(buffer, pos, jnp.int32(0), {"x": jnp.zeros(3)}, jnp.zeros(3, bool))
    assert (int(pos), int(size)) == (2, 0)


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


def test_predictor_encoder_learns_only_from_prediction_and_the_q_head_only_from_the_q_loss():
    net = QNetwork(num_actions=2, hidden=(16,), encoder=(4,), encoder_dim=2, predictor=(4,))
    obs, ctx = jnp.array([0.1, -0.2, 0.3]), jnp.zeros((0,))
    window = jax.random.normal(jax.random.PRNGKey(1), (5, 8))
    mask = jnp.array([False, True, True, True, True])
    action = jnp.array([0.0, 1.0])
    params = net.init(jax.random.PRNGKey(1), obs, ctx, window, mask, action)
    np.testing.assert_allclose(net.apply(params, obs, ctx, window, mask), net.apply(params, obs, ctx, window, mask, action)[0])

    def q_loss(p):
        return jnp.square(net.apply(p, obs, ctx, window, mask)[0] - 1.0)

    def p_loss(p):
        _, predicted = net.apply(p, obs, ctx, window, mask, action)
        return prediction_error(predicted[None], obs[None], obs[None] + 1.0)

    def norms(grads, prefix):
        return [float(jnp.abs(g).sum()) for name, layer in grads["params"].items() if name.startswith(prefix) for g in jax.tree.leaves(layer)]

    q_grads, p_grads = jax.grad(q_loss)(params), jax.grad(p_loss)(params)
    assert all(n == 0 for n in norms(q_grads, "encoder") + norms(q_grads, "predictor"))  # the Q loss reaches the Q-head alone
    assert all(n > 0 for n in norms(q_grads, "hidden") + norms(q_grads, "q"))
    assert all(n > 0 for n in norms(p_grads, "encoder") + norms(p_grads, "predictor"))  # the prediction loss trains the encoder
    assert all(n == 0 for n in norms(p_grads, "hidden") + norms(p_grads, "q"))
    # the error of predicting s' - s: predicted 0 for a change of 1 in every coordinate costs 1
    assert float(prediction_error(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones((2, 3)))) == 1.0


@pytest.mark.slow
def test_predictor_mode_trains_its_encoder_and_predictor_in_the_update():
    env = metarl.make("cartpole", factors="length", contexts=8)
    algo = algos.make("dqn", env, context_mode="predictor", learning_starts=100, buffer_size=1000, batch_size=32,
                      history=8).for_run(60)
    state = init_states(algo, init_keys(0, 1))
    before = jax.tree.map(np.asarray, state.params["params"])  # run_chunk donates the state
    state, sums, bad = run_chunk(algo, state, jnp.int32(60))  # 600 steps: 50 gradient steps
    assert int(bad[0]) == -1 and float(sums["learning"][0]) == 50
    assert 0 < float(sums["prediction_loss"][0]) < np.inf
    after = state.params["params"]
    for name in ("encoder_0", "encoder_out", "predictor_0", "predictor_out", "hidden_0", "q"):
        assert float(jnp.abs(after[name]["kernel"] - before[name]["kernel"]).max()) > 0, name
    assert state.buffer["window"].shape == (1, 1000, 8, 2 * 4 + 2)  # each slot keeps its window


def test_probing_agent_probes_for_its_first_steps_then_keeps_the_window():
    env = metarl.make("cartpole", factors="length")
    agent = DQNAgent(env, 1, context_mode="probing", probe_steps=3)
    trial = algos.make("dqn", env, context_mode="probing", probe_steps=3, schedule_steps=100).trial
    timestep, state = trial.reset(jax.random.PRNGKey(0), env.sample_task(jax.random.PRNGKey(1)))
    carry, probes, windows = agent.init(jax.random.PRNGKey(0)), [], []
    for t in range(6):
        carry = agent.observe(carry, timestep)
        probes.append(bool(agent.probe_now(carry)))
        windows.append(np.asarray(carry[0]))
        timestep, state, *_ = trial.step(jax.random.PRNGKey(t), state, jnp.int32(t % 2))
    assert probes == [True, True, True, False, False, False]  # three probe steps, then the task policy
    assert carry[0].shape == (3, 2 * 4 + 2) and int(carry[1]) == 3
    np.testing.assert_array_equal(windows[3], windows[5])  # the probe's window stays for the rest of the trial


@pytest.mark.slow
def test_probing_mode_fills_its_ring_with_probe_transitions_and_trains_the_probe():
    env = metarl.make("cartpole", factors="length", contexts=8)
    algo = algos.make("dqn", env, context_mode="probing", probe_steps=4, learning_starts=100, buffer_size=1000, batch_size=32,
                      probe_batch_size=16, hidden=(16,)).for_run(40)
    state = init_states(algo, init_keys(0, 1))
    before = jax.tree.map(np.asarray, state.params)
    state, sums, bad = run_chunk(algo, state, jnp.int32(40))  # 400 steps, 30 gradient steps
    assert int(bad[0]) == -1 and float(sums["learning"][0]) == 30
    ring = state.probe_buffer
    size = int(ring["size"][0])
    counts = np.asarray(ring["buffer"]["count"][0][:size])
    assert 0 < size < 400 and (counts < 4).all()  # probe steps only: at most 4 of each episode
    assert (counts == 0).sum() >= 400 / 500 and set(counts.tolist()) == {0, 1, 2, 3}
    assert np.isfinite(float(sums["probe_reward"][0])) and float(sums["probe_loss"][0]) > 0
    for part in ("probe", "main"):
        changed = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.params[part], before[part]))
        assert all(v > 0 for v in changed), part


def test_explicit_agent_reads_its_tasks_context_and_others_do_not():
    env = metarl.make("cartpole", factors="length")
    assert DQNAgent(env, 1, context_mode="explicit").reads_context
    assert not DQNAgent(env, 1, context_mode="hidden").reads_context and not DQNAgent(env, 1, context_mode="learned").reads_context
    algo = algos.make("dqn", env, context_mode="explicit", schedule_steps=100)
    assert algo.trial.expose_context
    state = algo.init(jax.random.PRNGKey(0))
    assert state.buffer["context"].shape == (10_000, 1)


def test_bad_dqn_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="context_mode must be one of hidden, explicit, learned, predictor, probing"):
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
