"""DREAM: the information-gain reward by hand, the agent never reads the task id, clear errors, and
one tiny update moves every part (the id table, the decoder, both policies)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl
from metarl import algos
from metarl.algos.dream import information_gain
from metarl.errors import ConfigError
from helpers import changed_leaves

CITY = metarl.make("city")
TINY = dict(lr_decay_updates=0, trials_per_update=4, minibatches=2, epochs=1, embed_dim=4, explorer_hidden=8, decoder_hidden=8, exploit_hidden=(8,), explore_epsilon_steps=0)


def test_information_gain_by_hand():
    f = jnp.array([1.0, 0.0])
    # the decoder's embedding before each step's transition: (0,0) -> (0.5,0) -> (1,0) -> (1,0)
    g = jnp.array([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 0.0]])
    # d = 1, 0.25, 0, 0: step 0 gains 0.75, step 1 0.25, steps 2 and 3 nothing; less 0.1 each
    np.testing.assert_allclose(information_gain(g, f, 0.1), [0.65, 0.15, -0.1, -0.1], atol=1e-6)


def test_dream_errors():
    with pytest.raises(ConfigError, match="two-phase"):
        algos.make("dream", metarl.make("bandit"), 2)
    with pytest.raises(ConfigError, match="episodes >= 2"):
        algos.make("dream", CITY, 1)
    with pytest.raises(ConfigError, match="multiple of minibatches"):
        algos.make("dream", CITY, 2, trials_per_update=6, minibatches=4)
    with pytest.raises(ConfigError, match="lr_decay_updates"):
        algos.make("dream", CITY, 2, lr_decay_updates=-1)
    with pytest.raises(ConfigError, match="exploit_epsilon_steps"):
        algos.make("dream", CITY, 2, exploit_epsilon_steps=-5)
    with pytest.raises(ConfigError, match="decoder must be one of gru, posterior"):
        algos.make("dream", CITY, 2, decoder="lstm")
    with pytest.raises(ConfigError, match="decoder_replay"):
        algos.make("dream", CITY, 2, decoder_replay=-1)


def test_the_learning_rate_decays_over_the_run():
    algo = algos.make("dream", CITY, 2, **{**TINY, "lr_decay_updates": None})
    with pytest.raises(ConfigError, match="run's own length"):  # outside a run it needs a number
        algo.optimizer()
    assert algo.for_run(7).config.lr_decay_updates == 7
    assert algo.for_run(9, {"lr_decay_updates": 5}).config.lr_decay_updates == 5  # a resumed run keeps its schedule
    assert algo.for_run(9, {"lr_decay_updates": 0}).config.lr_decay_updates == 0  # a constant rate too
    assert algo.for_run(9, {}).config.lr_decay_updates == 0  # a run saved before the schedule existed ran at a constant rate
    # 0 after lr_decay_updates x epochs x minibatches gradient steps: an update then changes nothing
    opt = algos.make("dream", CITY, 2, **{**TINY, "lr_decay_updates": 1}).optimizer()
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    for _ in range(2):  # TINY: 1 epoch x 2 minibatches
        step, state = opt.update({"w": jnp.ones(3)}, state, params)
        assert float(jnp.abs(step["w"]).max()) > 0
    step, _ = opt.update({"w": jnp.ones(3)}, state, params)
    np.testing.assert_allclose(step["w"], 0.0)


@pytest.fixture(scope="module")
def posterior_update():
    """The posterior decoder (a small reservoir; f started at N(0, 1)) with the left-out reward and
    decoder loss and the exploitation's ids dropped at random, on distraction's training split (it reads over the 53 training ids): one update,
    compiled once for the tests below. (distraction, the algorithm, its state, the updated state, metrics)"""
    dist = metarl.make("distraction")
    algo = algos.make("dream", dist, 2, **{**TINY, "decoder": "posterior", "decoder_replay": 8, "leave_one_out_reward": True,
                                           "leave_one_out_decoder": True, "exploit_id_dropout": 0.5})
    state = algo.init(jax.random.PRNGKey(0))
    new, metrics = jax.jit(algo.update)(state)
    return dist, algo, state, new, metrics


def test_one_update_trains_every_part_and_the_agent_never_reads_the_task_id(posterior_update):
    default = algos.make("dream", CITY, 2, preset="default").config  # what `metarl train dream city` runs
    assert default.decoder == "posterior" and default.decoder_replay == 16384
    dist, algo, state, new, metrics = posterior_update
    assert all(np.isfinite(float(v)) for v in metrics.values())
    moved = changed_leaves(state.params["params"], new.params["params"])
    for part in ("f", "explorer_cell", "explorer_pi", "evidence_0", "evidence_2", "exploit_pi"):
        assert all(jax.tree.leaves(moved[part])), part
    # at test time z is decoded from the exploration episode: the decoder's posterior ranges over the
    # training ids' rows of the id table, so permuting those rows together with the decoder's
    # evidence columns leaves every z the same; a policy that read f(task id) would see the rows move
    params = new.params
    train = np.array(algo.agent().train_ids)
    perm = np.asarray(jax.random.permutation(jax.random.PRNGKey(5), len(train)))
    assert perm[0] != 0  # training id 0's row moves
    moved = jax.tree.map(lambda x: x, params)
    table = params["params"]["f"]["embedding"]
    moved["params"]["f"]["embedding"] = table.at[train].set(table[train[perm]])
    moved["params"]["evidence_2"] = {"kernel": params["params"]["evidence_2"]["kernel"][:, perm], "bias": params["params"]["evidence_2"]["bias"][perm]}
    tasks = dist.tasks(np.array([i for i in range(1, 32) if i % 11])[:24])  # held-out ids
    returns = algo.evaluate(new, jax.random.PRNGKey(1), tasks=tasks)
    again = algo.evaluate(new.replace(params=moved), jax.random.PRNGKey(1), tasks=tasks)
    assert returns.shape == (24, 2)
    np.testing.assert_allclose(returns, again, atol=1e-5)
    agent = algo.agent()  # the check can fail: with the id's z read, the permuted table changes the actions
    timestep, _ = algo.trial.reset(jax.random.PRNGKey(1), metarl.envs.dream_grid.GridTask(jnp.int32(0)))
    timestep = timestep.replace(episode_index=jnp.int32(1), first=jnp.bool_(False))
    with_id = {**agent.init(None), "use_id": jnp.bool_(True)}
    step = jax.jit(lambda p: agent.step(p, {**with_id, "z_id": algo.noisy_id_embedding(p, jnp.int32(0), jnp.zeros(4))}, timestep)[1])
    logits = [step(p) for p in (params, moved)]
    assert float(jnp.abs(logits[0] - logits[1]).max()) > 0


def test_observation_entries_are_one_hot_over_their_levels():
    agent = algos.make("dream", CITY, 2, **TINY).agent()
    obs = jnp.array([4.0, 5.0, 1.0, 0.0, 0.0, 1.0, 0.0])  # on the bus stop (4, 5), instruction: corner 2
    x = np.asarray(agent.encode(obs))
    assert x.shape == (9 + 9 + 4 + 4,)
    assert np.flatnonzero(x).tolist() == [4, 9 + 5, 18 + 1, 22 + 2]
    cook = algos.make("dream", metarl.make("cooking"), 2, **TINY).agent()
    assert cook.encode(jnp.zeros(15)).shape == (3 + 3 + 4 + 5 * 4 + 8,)


def test_explorer_cannot_end_its_episode_while_exploration_is_forced():
    algo = algos.make("dream", CITY, 2, **{**TINY, "explore_full_steps": 10**6})
    agent, params = algo.agent(), algo.init(jax.random.PRNGKey(0)).params
    timestep, _ = algo.trial.reset(jax.random.PRNGKey(1))
    probs = {}
    for may_end in (False, True):
        carry = {**agent.init(None), "may_end": jnp.bool_(may_end), "epsilon": jnp.float32(1.0)}
        _, logits, _, _, exploring = agent.step(params, carry, timestep)
        assert bool(exploring)
        probs[may_end] = np.asarray(jax.nn.softmax(logits))
    assert probs[False][metarl.envs.dream_grid.END_EPISODE] == 0.0 and probs[True][metarl.envs.dream_grid.END_EPISODE] > 0.1
    assert not bool(algo.may_end(jnp.int32(0))) and bool(algo.may_end(jnp.int32(10**6)))


def test_exploitation_epsilon_mixes_the_policy_with_uniform_and_decays():
    algo = algos.make("dream", CITY, 2, **{**TINY, "exploit_epsilon_steps": 4 * 160})  # TINY: 160 env steps per update
    agent, params = algo.agent(), algo.init(jax.random.PRNGKey(0)).params
    timestep, _ = algo.trial.reset(jax.random.PRNGKey(1))
    timestep = timestep.replace(episode_index=jnp.int32(1), first=jnp.bool_(False))  # an exploitation step
    probs = {}
    for eps in (0.0, 0.5, 1.0):
        _, logits, _, _, exploring = agent.step(params, {**agent.init(None), "exploit_epsilon": jnp.float32(eps)}, timestep)
        assert not bool(exploring)
        probs[eps] = np.asarray(jax.nn.softmax(logits))
    np.testing.assert_allclose(probs[1.0], 1 / 9, atol=1e-6)
    np.testing.assert_allclose(probs[0.5], 0.5 * probs[0.0] + 0.5 / 9, atol=1e-6)
    np.testing.assert_allclose([float(algo.exploit_epsilon(jnp.int32(u))) for u in (0, 2, 4, 8)], [1.0, 0.5, 0.0, 0.0])
    assert float(algos.make("dream", CITY, 2, **TINY).exploit_epsilon(jnp.int32(0))) == 0.0  # off by default


def test_posterior_decoder_is_the_mean_of_f_under_the_summed_evidence(posterior_update):
    # it reads over the 53 training ids, on held-out ids too (the update with the left-out posterior
    # for the reward and the decoder's loss, checked by hand below)
    dist, algo, state, new, metrics = posterior_update
    agent = algo.agent()
    assert agent.decoder_size == 53 and agent.train_ids == tuple(range(0, 576, 11))
    assert np.isfinite(float(metrics["decoder_loss"])) and np.isfinite(float(metrics["decoder_final_left_out"]))
    moved = changed_leaves(state.params["params"], new.params["params"])
    assert all(jax.tree.leaves(moved["evidence_2"])) and all(jax.tree.leaves(moved["f"]))
    net, params = agent.network, new.params
    f = np.asarray(params["params"]["f"]["embedding"])[list(agent.train_ids)]
    decode = lambda h: net.apply(params, h, method=type(net).decode)  # noqa: E731
    np.testing.assert_allclose(decode(jnp.zeros(53)), f.mean(0), atol=1e-5)  # no evidence: the prior's mean
    h = jnp.zeros(53).at[3].set(50.0)
    np.testing.assert_allclose(decode(h), f[3], atol=1e-4)  # all the evidence on one id: its f
    # left out (as on an id never seen): the posterior over the other 52 training ids
    left_out = lambda h, i: algo.leave_out(params, h, i)  # noqa: E731
    np.testing.assert_allclose(left_out(h, 33), np.delete(f, 3, 0).mean(0), atol=1e-5)  # id 33 is training id 3
    np.testing.assert_allclose(left_out(h.at[7].set(40.0), 33), f[7], atol=1e-4)
    np.testing.assert_allclose(left_out(h, 34), f[3], atol=1e-4)  # not a training id: nothing to leave out
    # the explorer's reward: information gain read from the left-out posterior (from the full one without the option)
    hs = jnp.stack([jnp.zeros(53), h, h.at[7].set(40.0)])[None]  # [1 trial, 3 steps, 53]
    gs = jax.vmap(decode)(hs[0])[None]
    f_trial = jnp.asarray(f[7])[None]
    reward = algo.explore_reward(params, gs, hs, jnp.array([33]), f_trial)
    np.testing.assert_allclose(reward[0], information_gain(left_out(hs[0], 33), f_trial[0], algo.step_penalty(f_trial)), atol=1e-5)
    full = algos.make("dream", dist, 2, **{**TINY, "decoder": "posterior"})
    np.testing.assert_allclose(full.explore_reward(params, gs, hs, jnp.array([33]), f_trial)[0],
                               information_gain(gs[0], f_trial[0], full.step_penalty(f_trial)), atol=1e-5)
    # only the exploitation left out (cooking's preset): the g the trial exploited with is the left-out one, the
    # explorer's reward is read from the full posterior all the same
    exploit_only = algos.make("dream", dist, 2, **{**TINY, "decoder": "posterior", "leave_one_out_exploit": True})
    g_left = jax.vmap(lambda x: left_out(x, 33))(hs[0])[None]
    np.testing.assert_allclose(exploit_only.explore_reward(params, g_left, hs, jnp.array([33]), f_trial)[0],
                               information_gain(gs[0], f_trial[0], exploit_only.step_penalty(f_trial)), atol=1e-5)
    # the agent's decoder leaves out the id in its carry (`leave_one_out_exploit`, training only; -1 at test: none)
    zeros = jnp.zeros(dist.obs_shape)
    np.testing.assert_allclose(agent.read(params, h, zeros, 0, zeros, False, 33)[1], left_out(h, 33), atol=1e-6)
    np.testing.assert_allclose(agent.read(params, h, zeros, 0, zeros, False)[1], decode(h), atol=1e-6)
    assert int(agent.init(None)["leave_out"]) == -1
    # `exploit_id_dropout`: the carry's drop mask leaves further training ids out (none at test)
    drop = jnp.zeros(53, bool).at[7].set(True).at[12].set(True)
    np.testing.assert_allclose(agent.read(params, h.at[7].set(60.0), zeros, 0, zeros, False, -1, drop)[1], f[3], atol=1e-4)  # 7's evidence dropped
    np.testing.assert_allclose(agent.read(params, h, zeros, 0, zeros, False, 33, drop.at[3].set(False))[1],
                               np.delete(f, [3, 7, 12], 0).mean(0), atol=1e-5)  # the id left out and the two dropped
    assert not np.asarray(agent.init(None)["drop"]).any() and agent.init(None)["drop"].shape == (53,)
    dropping = algos.make("dream", dist, 2, **{**TINY, "decoder": "posterior", "exploit_id_dropout": 0.5})
    np.testing.assert_allclose(dropping.explore_reward(params, g_left, hs, jnp.array([33]), f_trial)[0],
                               information_gain(gs[0], f_trial[0], dropping.step_penalty(f_trial)), atol=1e-5)
    assert np.isfinite(float(metrics["decoder_final_left_out"]))  # (the fixture's update ran with the drop mask)
    with pytest.raises(ConfigError, match="exploit_id_dropout needs the posterior decoder"):
        algos.make("dream", dist, 2, **{**TINY, "exploit_id_dropout": 0.5})
    with pytest.raises(ConfigError, match="exploit_id_dropout must be < 1"):
        algos.make("dream", dist, 2, **{**TINY, "decoder": "posterior", "exploit_id_dropout": 1.0})
    with pytest.raises(ConfigError, match="leave_one_out_reward needs the posterior decoder"):
        algos.make("dream", dist, 2, **{**TINY, "leave_one_out_reward": True})
    # each transition adds its own evidence: two read in either order give the same g
    a, b = jax.random.normal(jax.random.PRNGKey(1), (2, params["params"]["evidence_0"]["kernel"].shape[0]))
    step = lambda h, t: net.apply(params, h, t, method=type(net).decode_step)  # noqa: E731
    np.testing.assert_allclose(step(step(jnp.zeros(53), a), b), step(step(jnp.zeros(53), b), a), atol=1e-5)
    assert float(jnp.abs(step(jnp.zeros(53), a)).max()) > 0


def test_reservoir_keeps_a_uniform_sample_of_every_trial_offered():
    algo = algos.make("dream", CITY, 2, **{**TINY, "decoder_replay": 4})
    buffer = {"task_id": jnp.full((4,), -1, jnp.int32)}
    # the first N trials fill the slots in order
    buffer, seen = algo.reservoir_add(buffer, jnp.int32(0), {"task_id": jnp.arange(3, dtype=jnp.int32)}, jax.random.PRNGKey(0))
    assert int(seen) == 3 and np.asarray(buffer["task_id"]).tolist() == [0, 1, 2, -1]
    # after that trial n is kept w.p. N / (n + 1): offer 2,000 more, 5 at a time, over many draws
    add = jax.jit(algo.reservoir_add)

    def fill(key):
        b, s = {"task_id": jnp.arange(4, dtype=jnp.int32)}, jnp.int32(4)
        for i, k in enumerate(jax.random.split(key, 20)):
            b, s = add(b, s, {"task_id": 4 + 5 * i + jnp.arange(5, dtype=jnp.int32)}, k)
        return b["task_id"]

    kept = np.concatenate([np.asarray(fill(k)) for k in jax.random.split(jax.random.PRNGKey(1), 300)])
    assert len(set(kept.reshape(300, 4)[0])) == 4  # distinct slots
    # a uniform sample of the 104 trials offered: the first half holds about half of what is kept
    assert abs(np.mean(kept < 52) - 0.5) < 0.05, np.mean(kept < 52)


def test_dream_beats_the_no_information_return_on_city(tmp_path):
    """The user's command on city (`metarl train dream city`, 2-episode trials by default) with smaller
    networks (explorer GRU 32, exploitation MLP 64 x 64: about 1.4x the steps per second of the
    default 64 and 128 x 128), 800k env steps with 128 trials per update (the default 512 needs
    about 2M to pass it on one seed), the explorer's epsilon and its ban on ending over the first
    600k (the default 1M), then the greedy agent on 240 tasks: its exploitation return is above the
    no-information optimum 0.3 (lower end of the 95% interval). About 62 s alone, 78 s beside the other test worker: a subprocess with XLA's
    optimisation passes, which the rest of the suite compiles without (conftest.py), for a run that
    long about 6x faster."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["METARL_CACHE_DIR"] = "off"  # not the user's ~/.cache/metarl: the test compiles as on a fresh machine (about 17 s)
    out = tmp_path / "city"
    subprocess.run([sys.executable, "-m", "metarl.cli", "train", "dream", "city", "--steps", "800000", "--trials-per-update", "128",
                    "--minibatches", "8", "--explorer-hidden", "32", "--exploit-hidden", "64", "64", "--explore-full-steps", "600000", "--explore-epsilon-steps", "600000", "--lr-decay-updates", "0", "--eval-tasks", "240", "--eval-seed", "0",
                    "--eval-baselines", "none", "--quiet", "--out", str(out)], check=True, env=env, timeout=1200)
    (path,) = (out / "eval").glob("steps_*.json")
    result = json.loads(path.read_text())
    assert result["header"]["episodes"] == 2
    agent = result["agents"][0]
    no_information = 0.3  # the package's expectimax on city's 24 ids (dream_optimal.no_information: 32 s; dream.md's column)
    assert agent["exploit_ci95"][0] > no_information, agent["mean_exploit_return"]  # measured here: 0.56 [0.53, 0.60] (the default networks: 0.48; 600k steps, 450k: 0.40; one MLP layer of 64 and z of 16: 0.39)


def test_evaluation_writes_exploration_and_exploitation_gifs(tmp_path):
    from PIL import Image

    from metarl.run.evaluation import write_trial_videos

    algo = algos.make("dream", CITY, 2, **TINY)
    state = jax.tree.map(lambda x: x[None], algo.init(jax.random.PRNGKey(0)))  # stacked over one seed, as the host loop keeps it
    paths = write_trial_videos(algo, state, str(tmp_path), 5120)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["steps_000000005120_explore.gif", "steps_000000005120_exploit.gif"]
    for p in paths:
        with Image.open(p) as im:
            assert im.n_frames >= 2 and im.size == (2 * 9 * 24, 2 * 9 * 24)


def test_the_relative_step_cost_and_a_zero_id_table():
    f = jnp.array([[2.0, 0.0], [0.0, 4.0]])  # ||f||^2 4 and 16: mean 10
    assert float(algos.make("dream", CITY, 2, **TINY).step_penalty(f)) == pytest.approx(0.1)
    relative = algos.make("dream", CITY, 2, **{**TINY, "info_penalty_relative": True})
    assert float(relative.step_penalty(f)) == pytest.approx(0.1) and float(relative.step_penalty(f / 2)) == pytest.approx(0.025)
    params = algos.make("dream", CITY, 2, **{**TINY, "id_init": 0.0}).init(jax.random.PRNGKey(0)).params
    assert not np.asarray(params["params"]["f"]["embedding"]).any()  # every id starts at the same (zero) row
    with pytest.raises(ConfigError, match="id_init"):
        algos.make("dream", CITY, 2, id_init=-1.0)
    # id_scale multiplies the table's rows: the same parameters give f x 3 (and the posterior decoder's mean of it)
    from metarl.algos.dream import DreamNetworks
    ids = jnp.arange(3)
    scaled = algos.make("dream", CITY, 2, **{**TINY, "id_scale": 3.0})
    params = scaled.init(jax.random.PRNGKey(0)).params
    f1 = algos.make("dream", CITY, 2, **TINY).agent().network.apply(params, ids, method=DreamNetworks.id_embedding)
    f3 = scaled.agent().network.apply(params, ids, method=DreamNetworks.id_embedding)
    np.testing.assert_allclose(f3, 3 * f1, rtol=1e-6)
    with pytest.raises(ConfigError, match="id_scale"):
        algos.make("dream", CITY, 2, id_scale=-1.0)
    # id_factored: f(id) = the sum of one table row per component of the id (cooking: its drawers' ingredients)
    cooking = metarl.make("cooking")
    factored = algos.make("dream", cooking, 2, **{**TINY, "id_factored": True, "id_scale": 2.0})
    params = factored.init(jax.random.PRNGKey(0)).params
    tables = [np.asarray(params["params"][f"f_parts_{k}"]["embedding"]) for k in range(3)]
    assert "f" not in params["params"] and [t.shape for t in tables] == [(4, 4)] * 3
    f = factored.agent().network.apply(params, jnp.array([10, 27]), method=DreamNetworks.id_embedding)
    np.testing.assert_allclose(f[0], 2.0 * (tables[0][2] + tables[1][2] + tables[2][0]), rtol=1e-6)  # drawers 2, 2, 0
    np.testing.assert_allclose(f[1], 2.0 * (tables[0][3] + tables[1][2] + tables[2][1]), rtol=1e-6)  # drawers 3, 2, 1
    assert not np.asarray(algos.make("dream", cooking, 2, **{**TINY, "id_factored": True, "id_init": 0.0})
                          .init(jax.random.PRNGKey(0)).params["params"]["f_parts_0"]["embedding"]).any()
