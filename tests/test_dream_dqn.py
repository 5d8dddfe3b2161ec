"""DREAM's DQN exploitation learner (dueling double Q, its replay ring, n-step rows, the Q-only steps)
and the decoder's reservoir; apart from test_dream.py so that the two files run on the two pytest-xdist workers side by side."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl import algos
from metarl.errors import ConfigError
from helpers import changed_leaves
from test_dream import CITY, TINY  # (tests/ is on the path: pytest's default rootdir-less import mode)


DQN = {**TINY, "exploit_learner": "dqn", "dqn_buffer": 96, "dqn_batch": 3, "exploit_epsilon_steps": 320, "exploit_epsilon_end": 0.1}


def test_dqn_exploitation_acts_greedily_on_dueling_q_and_its_loss_by_hand():
    algo = algos.make("dream", metarl.make("cooking"), 2, **DQN)
    agent, net = algo.agent(), algo.agent().network
    params, other = (algo.init(k).params for k in jax.random.split(jax.random.PRNGKey(0)))
    obs, z = jnp.zeros(agent.encode(jnp.zeros(15)).shape), jnp.ones(4)
    a, v = net.apply(params, obs, z, method=type(net).exploit)
    q = np.asarray(net.apply(params, obs, z, method=type(net).q_values))
    np.testing.assert_allclose(q, float(v) + np.asarray(a) - np.mean(np.asarray(a)), atol=1e-6)  # dueling
    # the agent acts on argmax Q (epsilon 0), uniformly w.p. epsilon
    timestep, _ = jax.jit(algo.trial.reset)(jax.random.PRNGKey(1))  # compiled: op by op each operation compiles its own
    timestep = timestep.replace(episode_index=jnp.int32(1), first=jnp.bool_(False))
    carry = {**agent.init(None), "use_id": jnp.bool_(True), "z_id": z}
    obs = agent.encode(timestep.obs)
    best = int(jnp.argmax(net.apply(params, obs, z, method=type(net).q_values)))
    step = jax.jit(agent.step)
    for eps in (0.0, 0.1):
        probs = np.asarray(jax.nn.softmax(step(params, {**carry, "exploit_epsilon": jnp.float32(eps)}, timestep)[1]))
        expected = np.full(9, eps / 9)
        expected[best] += 1 - eps
        np.testing.assert_allclose(probs, expected, atol=1e-6)
    # with a temperature, training trials act by softmax(Q / temperature), mixed with epsilon's uniform
    q_obs = np.asarray(net.apply(params, obs, z, method=type(net).q_values))
    soft = np.exp((q_obs - q_obs.max()) / 0.5) / np.exp((q_obs - q_obs.max()) / 0.5).sum()
    probs = np.asarray(jax.nn.softmax(step(params, {**carry, "exploit_epsilon": jnp.float32(0.1), "exploit_temperature": jnp.float32(0.5)}, timestep)[1]))
    np.testing.assert_allclose(probs, 0.9 * soft + 0.1 / 9, atol=1e-6)
    assert agent.init(None)["exploit_temperature"] == 0.0  # the test policy: argmax
    with pytest.raises(ConfigError, match="exploit_temperature needs the Q-learning"):
        algos.make("dream", CITY, 2, exploit_temperature=0.1)
    np.testing.assert_allclose([float(algo.exploit_epsilon(jnp.int32(u))) for u in (0, 1, 2, 5)], [1.0, 0.55, 0.1, 0.1], atol=1e-6)
    # double Q-learning's target by hand: the action chosen by the online Q at s', valued by the target's
    rows = {"obs": jnp.array([[1, 1, 2, 4, 4, 4, 4, 1, 0, 0, 0, 1, 0, 0, 0], [2, 1, 3, 0, 4, 4, 4, 1, 0, 0, 0, 1, 0, 0, 0]], jnp.int8),
            "next_obs": jnp.array([[2, 1, 3, 4, 4, 4, 4, 1, 0, 0, 0, 1, 0, 0, 0], [2, 1, 3, 0, 4, 4, 4, 1, 0, 0, 0, 1, 0, 0, 0]], jnp.int8),
            "action": jnp.array([2, 7], jnp.int8), "reward": jnp.array([-0.1, 0.25]), "done": jnp.array([False, True]),
            "task_id": jnp.array([3, 5], jnp.int32), "use_id": jnp.array([True, False]), "z": jnp.array([[9.0] * 4, [0.5, -0.5, 1.0, 2.0]])}
    noise = jax.random.normal(jax.random.PRNGKey(2), (2, 4))
    loss, q_mean = jax.jit(algo.q_loss)(params, other, rows, noise)
    f = lambda p, i: net.apply(p, jnp.int32(i), method=type(net).id_embedding)  # noqa: E731
    Q = lambda p, o, zz: np.asarray(net.apply(p, agent.encode(o.astype(jnp.float32)), zz, method=type(net).q_values))  # noqa: E731
    z0, z0_target, z1 = f(params, 3) + 0.1 * noise[0], f(other, 3) + 0.1 * noise[0], rows["z"][1]  # row 1 exploited with the decoder's z
    q0, q1 = Q(params, rows["obs"][0], z0)[2], Q(params, rows["obs"][1], z1)[7]
    y0 = -0.1 + 0.99 * Q(other, rows["next_obs"][0], z0_target)[np.argmax(Q(params, rows["next_obs"][0], z0))]
    y1 = 0.25  # done: no bootstrap
    huber = lambda x: 0.5 * x**2 if abs(x) <= 1 else abs(x) - 0.5  # noqa: E731
    assert float(loss) == pytest.approx((huber(q0 - y0) + huber(q1 - y1)) / 2, rel=1e-5)
    assert float(q_mean) == pytest.approx((q0 + q1) / 2, rel=1e-5)
    # an n-step row (its reward the n rewards' discounted sum) bootstraps with gamma^n
    three = algos.make("dream", metarl.make("cooking"), 2, **{**DQN, "dqn_nstep": 3})
    y0_3 = -0.1 + 0.99**3 * Q(other, rows["next_obs"][0], z0_target)[np.argmax(Q(params, rows["next_obs"][0], z0))]
    assert float(jax.jit(three.q_loss)(params, other, rows, noise)[0]) == pytest.approx((huber(q0 - y0_3) + huber(q1 - y1)) / 2, rel=1e-5)
    with pytest.raises(ConfigError, match="exploit_learner must be one of ppo, dqn"):
        algos.make("dream", CITY, 2, exploit_learner="sarsa")


def test_dqn_replay_holds_each_trials_exploitation_transitions_in_order():
    algo = algos.make("dream", CITY, 2, **DQN)
    with pytest.raises(ConfigError, match="must hold an update's exploitation transitions"):  # TINY: 4 trials x 20 steps
        algos.make("dream", CITY, 2, **{**DQN, "dqn_buffer": 79})
    # two trials of 5 steps: exploration at 0-1 (trial 0) and 0-2 (trial 1), then exploitation; trial 1's last step invalid
    T = 5
    episode = jnp.array([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
    valid = jnp.array([[True] * 5, [True, True, True, True, False]])
    obs = jnp.arange(2 * T, dtype=jnp.float32).reshape(2, T, 1) * jnp.ones(7)
    outcome = obs + 100  # step t's outcome_obs: where step t - 1's action led
    ts = metarl.envs.trial.TimeStep(obs=obs, outcome_obs=outcome, episode_index=episode, first=jnp.zeros((2, T), bool),
                                    done=jnp.zeros((2, T), bool), prev_action=jnp.zeros((2, T), jnp.int32), prev_reward=jnp.zeros((2, T)),
                                    step_index=jnp.zeros((2, T), jnp.int32), context=jnp.zeros((2, T, 0)))
    batch = {"timestep": ts, "action": jnp.arange(2 * T).reshape(2, T), "reward": jnp.arange(2 * T, dtype=jnp.float32).reshape(2, T) / 10,
             "done": jnp.array([[False, True, False, False, True], [False, False, True, True, False]])}
    g = jnp.broadcast_to(jnp.arange(2 * T, dtype=jnp.float32).reshape(2, T, 1), (2, T, 4))
    rows, keep = algo.exploit_transitions(batch, valid & (episode == 1), g, jnp.array([7, 8]), jnp.array([True, False]))
    assert rows["obs"].shape == (2 * T, 7)  # rows per trial: its exploitation steps at most and np.asarray(keep).sum() == 4
    kept = np.asarray(keep)
    np.testing.assert_array_equal(np.asarray(rows["obs"])[kept, 0], [2, 3, 4, 8])
    np.testing.assert_array_equal(np.asarray(rows["next_obs"])[kept, 0], [103, 104, 0, 109])  # the next step's outcome_obs (none after the last)
    np.testing.assert_array_equal(np.asarray(rows["action"])[kept], [2, 3, 4, 8])
    np.testing.assert_array_equal(np.asarray(rows["done"])[kept], [False, False, True, True])
    np.testing.assert_array_equal(np.asarray(rows["task_id"])[kept], [7, 7, 7, 8])
    np.testing.assert_array_equal(np.asarray(rows["use_id"])[kept], [True, True, True, False])
    np.testing.assert_array_equal(np.asarray(rows["z"])[kept, 0], [2, 3, 4, 8])
    # n-step transitions (dqn_nstep 2): two rewards discounted, the observation two steps on, none past the episode's done
    rows2, _ = algos.make("dream", CITY, 2, **{**DQN, "dqn_nstep": 2}).exploit_transitions(batch, valid & (episode == 1), g, jnp.array([7, 8]),
                                                                                            jnp.array([True, False]))
    np.testing.assert_allclose(np.asarray(rows2["reward"])[kept], [0.2 + 0.99 * 0.3, 0.3 + 0.99 * 0.4, 0.4, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(rows2["next_obs"])[kept, 0], [104, 0, 0, 109])
    np.testing.assert_array_equal(np.asarray(rows2["done"])[kept], [False, True, True, True])
    rows3, _ = algos.make("dream", CITY, 2, **{**DQN, "dqn_nstep": 3}).exploit_transitions(batch, valid & (episode == 1), g, jnp.array([7, 8]),
                                                                                            jnp.array([True, False]))
    np.testing.assert_allclose(np.asarray(rows3["reward"])[kept][0], 0.2 + 0.99 * 0.3 + 0.99**2 * 0.4, rtol=1e-6)
    with pytest.raises(ConfigError, match="dqn_nstep"):
        algos.make("dream", CITY, 2, **{**DQN, "dqn_nstep": 0})
    # the ring keeps the kept rows in order, the oldest overwritten
    ring = {"action": jnp.full((5,), -1, jnp.int32)}
    ring, count = algo.ring_add(ring, jnp.int32(3), {"action": rows["action"]}, keep)
    assert int(count) == 7 and np.asarray(ring["action"]).tolist() == [4, 8, -1, 2, 3]


@pytest.fixture(scope="module")
def dqn_update():
    """One update of the DQN exploitation learner with its Q-only steps, the paper's GRU decoder and
    a reservoir of 8 exploration episodes (the explorer free to end from the start), on cooking:
    compiled once for the two tests below. (the algorithm, its state, the updated state, metrics)"""
    algo = algos.make("dream", metarl.make("cooking"), 2, **{**DQN, "dqn_steps": 4, "dqn_target_every": 2, "dqn_only_batch": 5,
                                                             "decoder": "gru", "decoder_replay": 8, "explore_full_steps": 0})
    state = algo.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(algo.update)(state)
    return algo, state, new, metrics


def test_one_dqn_update_trains_the_q_network_and_f_from_its_replay(monkeypatch, dqn_update):
    algo, state, new, metrics = dqn_update
    assert all(np.isfinite(float(metrics[k])) for k in ("exploit_loss", "q_mean", "q_only_loss"))
    kept = int(new.exploit_count)
    assert 4 <= kept <= 4 * 20  # TINY's 4 trials, each 1 to 20 exploitation steps
    assert np.asarray(new.exploit_buffer["obs"][kept:]).sum() == 0 and np.asarray(new.exploit_buffer["obs"][:kept]).any()
    moved = changed_leaves(state.params["params"], new.params["params"])
    for part in ("f", "exploit_pi", "exploit_v", "exploit_layers_0", "explorer_pi"):
        assert all(jax.tree.leaves(moved[part])), part
    # the Q-learning-only steps move the Q-network and f, not the explorer
    drawn = []
    sample = type(algo).ring_sample
    monkeypatch.setattr(type(algo), "ring_sample", lambda self, *a: drawn.append(a[-1]) or sample(self, *a))
    q_params, _, q_loss = jax.jit(algo.q_steps)(state.params, state.dqn_opt_state, new.exploit_buffer, new.exploit_count, jax.random.PRNGKey(1))
    assert np.isfinite(float(q_loss)) and drawn == [(5,)]  # dqn_only_batch rows per Q-only step (traced once in the scan)
    moved = changed_leaves(state.params["params"], q_params["params"])
    assert all(jax.tree.leaves(moved["exploit_pi"])) and all(jax.tree.leaves(moved["f"])) and not any(jax.tree.leaves(moved["explorer_pi"]))
    with pytest.raises(ConfigError, match="multiple of dqn_target_every"):
        algos.make("dream", CITY, 2, **{**DQN, "dqn_steps": 3, "dqn_target_every": 2})


def test_the_reservoir_decoder_reads_what_the_rollout_decoder_read(dqn_update):
    algo, state, new, metrics = dqn_update
    env = algo.env
    assert int(new.decoder_seen) == 4 and np.isfinite(float(metrics["decoder_loss"]))
    moved = changed_leaves(state.params["params"], new.params["params"])
    assert all(jax.tree.leaves(moved["decoder_cell"])) and all(jax.tree.leaves(moved["decoder_out"]))
    buffer = new.decoder_buffer
    assert np.asarray(buffer["reads"][:4]).any() and not np.asarray(buffer["reads"][4:]).any()
    # a trial played step by step: the reservoir's view of it decodes to the g the agent computed while it ran
    agent, params = algo.agent(greedy=False), new.params
    timestep, trial_state = algo.trial.reset(jax.random.PRNGKey(3), metarl.envs.dream_grid.GridTask(jnp.int32(5)))
    carry = {**agent.init(None), "epsilon": jnp.float32(1.0)}
    steps, gs, valid = [], [], []
    agent_step, trial_step = jax.jit(agent.step), jax.jit(algo.trial.step)  # one compilation each, not one per op
    for t, key in enumerate(jax.random.split(jax.random.PRNGKey(4), 2 * env.max_steps)):
        steps.append(timestep)
        carry, logits, _, g, _ = agent_step(params, carry, timestep)
        gs.append(g)
        action = jax.random.categorical(key, logits).astype(jnp.int32)
        timestep, trial_state, _, info = trial_step(jax.random.fold_in(key, 1), trial_state, action)
        valid.append(info["valid"])
    batch = {"timestep": jax.tree.map(lambda *x: jnp.stack(x)[None], *steps)}
    slot = jax.tree.map(lambda x: x[0], algo.decoder_slots(batch, jnp.stack(valid)[None]))
    S = env.max_steps + 1
    assert slot["reads"].shape == (S,) and bool(slot["reads"].any())
    np.testing.assert_allclose(algo.decode_slot(params, slot), jnp.stack(gs)[:S], atol=1e-5)
