"""PPO: Box and Discrete policies, learning on CartPole, the host loop (eval hook, exact resume)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl import algos
from metarl.run import train
from metarl.run.loop import init_states, run_chunk
from metarl.run.settings import init_keys

CARTPOLE = metarl.make("gymnax", env_id="CartPole-v1")


def test_init_vmapped_over_three_seeds_completes():
    # with XLA CPU's default scheduler this hung while the initializers called the batched QR kernel (nets/init.py)
    state = jax.jit(jax.vmap(algos.make("ppo", CARTPOLE).init))(init_keys(0, 3))
    assert state.streams.timestep.obs.shape == (3, 4, 4) and state.streams.pool.length.shape == (3, 4, 16)


def test_learns_cartpole_far_above_random():
    algo = algos.make("ppo", CARTPOLE, lr_decay_updates=0)
    state = init_states(algo, init_keys(0, 1))
    state, sums, bad = run_chunk(algo, state, jnp.int32(30))  # 15,360 steps
    assert int(bad[0]) == -1
    returns = algo.evaluate(jax.tree.map(lambda x: x[0], state), jax.random.PRNGKey(1), tasks=16)
    assert returns.shape == (16, 1)
    # a uniformly random policy lasts ~22 steps, the untrained greedy one ~9
    assert returns.mean() > 60, returns.mean()


def test_gaussian_policy_on_pendulum_keeps_actions_in_the_box():
    env = metarl.make("gymnax", env_id="Pendulum-v1", factors="l=0.5:1.5")
    algo = algos.make("ppo", env, num_envs=2, num_steps=32, minibatches=2, epochs=1, init_log_std=1.0)
    state = init_states(algo, init_keys(0, 1))
    assert float(state.params["params"]["log_std"][0, 0]) == 1.0
    state, sums, bad = run_chunk(algo, state, jnp.int32(2))
    assert int(bad[0]) == -1 and all(np.isfinite(np.asarray(v)).all() for v in sums.values())
    agent = algo.agent(greedy=False)
    seed = jax.tree.map(lambda x: x[0], state)
    ts = jax.tree.map(lambda x: x[0], seed.streams.timestep)
    actions = jax.vmap(lambda k: agent.act(seed.params, (), ts, k)[0])(jax.random.split(jax.random.PRNGKey(0), 500))
    assert actions.shape == (500, 1) and float(actions.min()) >= -2.0 and float(actions.max()) <= 2.0
    assert float(actions.min()) == -2.0 and float(actions.max()) == 2.0  # std e^1 x max torque: clipped at both ends


@pytest.mark.slow
def test_host_loop_evaluates_per_context_and_resumes_exactly(tmp_path):
    env = metarl.make("gymnax", env_id="CartPole-v1", factors="length=0.5:2")
    algo = algos.make("ppo", env, num_envs=2, num_steps=16, minibatches=2, epochs=1)
    spu = algo.steps_per_update
    quiet = dict(quiet=True, eval_tasks=8)
    whole = train(algo, seeds=2, total_steps=6 * spu, out_dir=str(tmp_path / "whole"), **quiet)
    part = str(tmp_path / "part")
    train(algo, seeds=2, total_steps=3 * spu, out_dir=part, **quiet)
    resumed = train(algo, seeds=2, total_steps=6 * spu, out_dir=part, resume=True, **quiet)
    for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)  # the env streams are in the state: resume is exact
    final = json.load(open(os.path.join(part, "eval", f"steps_{6 * spu:012d}.json")))
    me = final["agents"][0]
    assert me["label"].startswith("ppo (trained, 2 seeds)") and len(final["agents"]) == 1  # no baselines for a policy
    assert final["header"]["episodes"] == 1 and 8 <= me["mean_total_return"] <= 500


def test_explicit_context_mode_feeds_the_tasks_context_to_the_policy():
    env = metarl.make("cartpole", factors="length,gravity", contexts=4)
    algo = algos.make("ppo", env, context_mode="explicit", num_envs=2, num_steps=8, minibatches=2, epochs=1)
    assert algo.agent().reads_context and algo.trial.expose_context
    state = init_states(algo, init_keys(0, 1))
    first = jax.tree.leaves(state.params)[0]
    kernels = [x for x in jax.tree.leaves(state.params) if x.ndim == 3]  # [seeds, in, out]
    assert {k.shape[1] for k in kernels} >= {4 + 2}  # the observation and the two factors' multipliers
    state, _, bad = run_chunk(algo, state, jnp.int32(2))
    assert int(bad[0]) == -1 and first.shape[0] == 1
    # the policy acts on the context: the same observation under two contexts gives two outputs
    agent, params = algo.agent(), jax.tree.map(lambda x: x[0], state.params)
    obs = jnp.zeros((4,))
    out_a, _ = agent.network.apply(params, agent.features(obs, jnp.array([1.0, 1.0])))
    out_b, _ = agent.network.apply(params, agent.features(obs, jnp.array([2.0, 0.5])))
    assert float(jnp.abs(out_a - out_b).max()) > 0
    assert not algos.make("ppo", env).agent().reads_context


def _window_net(predictor):
    from metarl.algos.ppo import EncodedActorCritic

    return EncodedActorCritic(2, True, (8,), "tanh", (4,), 2, "mean", (4,) if predictor else None)


@pytest.mark.slow
def test_ppo_learned_encoder_gets_gradients_from_the_ppo_loss_and_the_predictor_only_from_prediction():
    obs, window = jnp.ones((3, 4)), jax.random.normal(jax.random.PRNGKey(1), (3, 5, 10))
    mask = jnp.arange(5)[None] >= jnp.array([[2], [4], [0]])  # 3, 1 and 5 valid rows
    learned, predictor = _window_net(False), _window_net(True)
    params = learned.init(jax.random.PRNGKey(0), obs, window, mask)

    def norms(grads, prefix):
        return [float(jnp.abs(g).sum()) for name, layer in grads["params"].items() if name.startswith(prefix) for g in jax.tree.leaves(layer)]

    def rl_loss(p, net):  # a policy-and-value loss: what PPO's loss reads of the network
        out, value = net.apply(p, obs, window, mask)[:2]
        return jnp.sum(jax.nn.log_softmax(out)[:, 0]) + jnp.sum(jnp.square(value - 1.0))

    grads = jax.grad(rl_loss)(params, learned)
    assert norms(grads, "encoder") and all(n > 0 for n in norms(grads, "encoder"))  # JRPL: trained through the RL loss
    # the invalid rows do not reach the encoding: changing them changes nothing
    other = window.at[0, :2].set(100.0).at[1, :4].set(-7.0)
    np.testing.assert_allclose(learned.apply(params, obs, other, mask)[0], learned.apply(params, obs, window, mask)[0], rtol=1e-6)

    action = jax.nn.one_hot(jnp.array([0, 1, 1]), 2)
    p_params = predictor.init(jax.random.PRNGKey(0), obs, window, mask, action)
    rl = jax.grad(lambda p: rl_loss(p, predictor))(p_params)
    assert all(n == 0 for n in norms(rl, "encoder") + norms(rl, "predictor"))  # IIDA: the RL loss does not reach the encoder
    pred = jax.grad(lambda p: jnp.sum(jnp.square(predictor.apply(p, obs, window, mask, action)[2] - 1.0)))(p_params)
    assert all(n > 0 for n in norms(pred, "encoder") + norms(pred, "predictor"))
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(pred["params"]["actor_critic"]))


def test_ppo_window_holds_the_trials_transitions_and_empties_on_a_new_context():
    env = metarl.make("cartpole", factors="length", contexts=4)
    agent = algos.make("ppo", env, context_mode="learned", history=3).agent()
    trial = algos.make("ppo", env, context_mode="learned").trial
    carry = agent.init(jax.random.PRNGKey(0))
    timestep, state = trial.reset(jax.random.PRNGKey(0), env.sample_task(jax.random.PRNGKey(1)))
    carry = agent.observe(carry, timestep)
    assert int(carry[1]) == 0  # the trial's first step: nothing seen yet
    rows = []
    for t, action in enumerate([1, 0, 1, 1]):
        prev = timestep.obs
        timestep, state, _ = trial.step(jax.random.PRNGKey(t), state, jnp.int32(action))[:3]
        carry = agent.observe(carry, timestep)
        rows.append(np.concatenate([prev, np.eye(2)[action], timestep.outcome_obs]))
    window, count, _ = carry
    assert int(count) == 3 and window.shape == (3, 2 * 4 + 2)
    np.testing.assert_allclose(window, np.stack(rows[-3:]), rtol=1e-6)  # the newest three, oldest first
    fresh, _ = trial.reset(jax.random.PRNGKey(5), env.sample_task(jax.random.PRNGKey(2)))
    assert int(agent.observe(carry, fresh)[1]) == 0 and float(jnp.abs(agent.observe(carry, fresh)[0]).sum()) == 0


@pytest.mark.slow
def test_ppo_predictor_mode_trains_its_encoder_and_predictor_in_the_update():
    # one compilation: the predictor mode runs the learned mode's window and encoder, plus the predictor
    env = metarl.make("cartpole", factors="length", contexts=8)
    for mode, moved in (("predictor", ("encoder_0", "encoder_out", "predictor_0", "predictor_out")),):
        algo = algos.make("ppo", env, context_mode=mode, num_envs=2, num_steps=16, minibatches=2, epochs=1, history=8)
        state = init_states(algo, init_keys(0, 1))
        before = jax.tree.map(np.asarray, state.params["params"])  # run_chunk donates the state
        state, sums, bad = run_chunk(algo, state, jnp.int32(3))
        assert int(bad[0]) == -1
        assert state.agent_carry[0].shape == (1, 2, 8, 2 * 4 + 2)  # each stream's window, carried between updates
        after = state.params["params"]
        for name in moved + ("actor_critic",):
            diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(after[name]), jax.tree.leaves(before[name])))
            assert diff > 0, (mode, name)
        assert (mode == "predictor") == ("prediction_loss" in sums)


def _set_head(params, bias):
    """`params` (a Flax tree) with its policy head's kernel zeroed and its bias set: logits = bias."""
    head = params["params"]["policy_head"] if "policy_head" in params["params"] else params["params"]["actor_critic"]["policy_head"]
    head["kernel"] = jnp.zeros_like(head["kernel"])
    head["bias"] = jnp.asarray(bias, jnp.float32)
    return params


def test_ppo_probing_agent_acts_with_the_probe_for_its_first_steps_then_keeps_the_window():
    env = metarl.make("cartpole", factors="length", contexts=4)
    algo = algos.make("ppo", env, context_mode="probing", probe_steps=3)
    agent = algo.agent()
    params = jax.tree.map(np.array, jax.jit(algo.init_params)(jax.random.PRNGKey(0), jax.random.PRNGKey(1)))  # compiled: op by op, seconds
    _set_head(params["main"], [5.0, -5.0])  # the task policy always pushes left,
    params["probe"]["params"]["policy"] = _set_head({"params": params["probe"]["params"]["policy"]}, [-5.0, 5.0])["params"]  # the probe right
    timestep, state = jax.jit(algo.trial.reset)(jax.random.PRNGKey(0), env.sample_task(jax.random.PRNGKey(1)))
    carry, actions, windows = agent.init(jax.random.PRNGKey(0)), [], []
    act, trial_step = jax.jit(agent.act), jax.jit(algo.trial.step)  # one compilation each, not one per op
    for t in range(6):
        action, carry = act(params, carry, timestep, jax.random.PRNGKey(t))
        actions.append(int(action))
        windows.append(np.asarray(carry[0]))
        timestep, state, *_ = trial_step(jax.random.PRNGKey(t), state, action)
    assert actions == [1, 1, 1, 0, 0, 0]  # three probe steps, then the task policy
    assert carry[0].shape == (3, 2 * 4 + 2) and int(carry[1]) == 3
    np.testing.assert_array_equal(windows[3], windows[5])  # the probe's window stays for the rest of the trial
    assert float(np.abs(windows[3][0, 4:6] - [0.0, 1.0]).max()) == 0  # its rows hold the probe's actions (one-hot right)


def test_ppo_probe_reward_is_f0s_error_minus_the_encoders_on_the_state_change():
    env = metarl.make("cartpole", factors="length", contexts=4)
    algo = algos.make("ppo", env, context_mode="probing", probe_steps=3)
    params = jax.tree.map(np.array, jax.jit(algo.init_params)(jax.random.PRNGKey(0), jax.random.PRNGKey(1)))  # compiled: op by op, seconds
    for tree, name, bias in ((params["main"]["params"], "predictor_out", [0.1, 0.0, 0.0, 0.0]),
                             (params["probe"]["params"], "model0_out", [0.0, 0.0, 0.0, 0.5])):
        tree[name]["kernel"] = np.zeros_like(tree[name]["kernel"])  # a constant prediction of s' - s
        tree[name]["bias"] = np.asarray(bias, np.float32)
    obs = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
    next_obs = obs + np.array([[0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    rows = {"obs": obs, "next_obs": next_obs, "action": np.eye(2, dtype=np.float32)[[0, 1]],
            "window": np.zeros((2, 3, 10), np.float32), "count": np.array([0, 2], np.int32)}
    reward, _ = algo.probe_rewards(params, rows)
    # row 0: f0 misses by (0.1, 0, 0, -0.5) -> 0.26 / 4; f exact -> 0.  row 1: f0 0.25 / 4, f 0.01 / 4
    np.testing.assert_allclose(np.asarray(reward), [0.26 / 4, (0.25 - 0.01) / 4], rtol=1e-5)


def test_ppo_probing_update_trains_the_probe_f0_the_encoder_and_the_policy():
    env = metarl.make("cartpole", factors="length", contexts=8)
    algo = algos.make("ppo", env, context_mode="probing", num_envs=2, num_steps=16, minibatches=2, epochs=1, probe_steps=4)
    state = init_states(algo, init_keys(0, 1))
    before = jax.tree.map(np.asarray, state.params)  # run_chunk donates the state
    state, sums, bad = run_chunk(algo, state, jnp.int32(2))
    assert int(bad[0]) == -1
    assert state.agent_carry[0].shape == (1, 2, 4, 2 * 4 + 2)  # each stream's probe window, carried between updates
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.params, before)
    for part, names in (("main", ("encoder_0", "encoder_out", "predictor_0", "predictor_out", "actor_critic")),
                        ("probe", ("model0_0", "model0_out", "policy"))):
        for name in names:
            assert all(v > 0 for v in jax.tree.leaves(moved[part]["params"][name])), (part, name)
    share = float(sums["probe_share"][0]) / 2  # per update: 2 streams x 16 steps, episodes of about 20 steps
    assert 0.1 < share < 0.5 and np.isfinite(float(sums["probe_reward"][0]))
    for k in ("probe_policy_loss", "probe_value_loss", "model0_loss", "prediction_loss"):
        assert np.isfinite(float(sums[k][0])), k


def test_ppo_probing_settings_are_checked():
    from metarl.errors import ConfigError

    for bad, match in (({"probe_task_coef": -1.0}, "probe_task_coef"), ({"probe_steps": 0}, "probe_steps"),
                       ({"probe_gamma": 1.5}, "probe_gamma")):
        with pytest.raises(ConfigError, match=match):
            algos.make("ppo", CARTPOLE, context_mode="probing", **bad)
