"""The host loop, end to end on a tiny but real meta-learner: run folder, metrics, TensorBoard,
evaluation, resume equivalence, mismatch errors, divergence, evaluate_run.

The algorithm here ("optimism-test") meta-learns the two parameters of an in-context bandit agent,
softmax(beta * posterior mean + c / sqrt(1 + pulls)), by REINFORCE over whole trials of a 2-armed
Bernoulli bandit. At beta = c = 0 it is uniformly random (expected total return 5.0 over 10 pulls);
learning pushes beta up (exploit what the trial has shown), which must beat random clearly.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metarl
from metarl import algos
from metarl.agents import Agent
from metarl.algos.base import InContextAlgorithm
from metarl.envs.trial import Trial
from metarl.errors import CheckpointError, ConfigError, MetarlError
from metarl.run import TrainingDiverged, evaluate_run, latest_checkpoint, list_checkpoints, load_checkpoint, train
from metarl.run import folder
from metarl.run.checkpoint import save_checkpoint
from metarl.run.loop import init_keys

EPISODES = 10


@dataclasses.dataclass(frozen=True)
class OptimismConfig:
    lr: float = 0.5  #: Adam learning rate on (beta, c)
    trials_per_update: int = 64  #: trials per REINFORCE batch
    nan_at_update: int = -1  #: from this update on, the loss is NaN (tests divergence); -1 never


@dataclasses.dataclass(frozen=True)
class OptimismAgent(Agent):
    name = "optimism"

    def init(self, key):
        return (jnp.zeros(self.env.num_actions), jnp.zeros(self.env.num_actions))  # pulls, successes

    def logits(self, params, carry, timestep):
        pulls, wins = carry
        seen = jax.nn.one_hot(timestep.prev_action, self.env.num_actions) * timestep.has_prev_action
        pulls, wins = pulls + seen, wins + seen * timestep.prev_reward
        mean = (wins + 1.0) / (pulls + 2.0)  # Beta(1, 1) posterior mean
        return params["w"][0] * mean + params["w"][1] / jnp.sqrt(1.0 + pulls), (pulls, wins)

    def act(self, params, carry, timestep, key):
        logits, carry = self.logits(params, carry, timestep)
        return jax.random.categorical(key, logits).astype(jnp.int32), carry


@algos.register
@dataclasses.dataclass(frozen=True)
class OptimismREINFORCE(InContextAlgorithm):
    name = "optimism-test"
    Config = OptimismConfig

    config: OptimismConfig = OptimismConfig()

    @property
    def trial(self):
        return Trial(self.env, self.episodes)

    @property
    def steps_per_update(self) -> int:
        return self.config.trials_per_update * self.trial.num_steps

    def agent(self):
        return OptimismAgent(self.env, self.episodes)

    def agent_params(self, train_state):
        return train_state["params"]

    def init(self, key):
        params = {"w": jnp.zeros((2,), jnp.float32)}
        return {
            "params": params,
            "opt_state": optax.adam(self.config.lr).init(params),
            "key": key,
            "update": jnp.int32(0),
        }

    def _trial(self, params, start, key):
        """One trial from `start` (timestep, state); returns (sum of log-probs of the actions
        taken, total reward)."""
        agent, trial = self.agent(), self.trial
        timestep, state = start

        def body(loop, key_t):
            timestep, state, carry = loop
            key_act, key_env = jax.random.split(key_t)
            logits, carry = agent.logits(params, carry, timestep)
            action = jax.random.categorical(key_act, jax.lax.stop_gradient(logits))
            logp = jax.nn.log_softmax(logits)[action]
            timestep, state, reward, _ = trial.step(key_env, state, action)
            return (timestep, state, carry), (logp, reward)

        init = (timestep, state, agent.init(key))
        _, (logp, reward) = jax.lax.scan(body, init, jax.random.split(key, trial.num_steps))
        return logp.sum(), reward.sum()

    def update(self, train_state):
        key, key_reset, key_trials = jax.random.split(train_state["key"], 3)
        B = self.config.trials_per_update
        # Tasks are sampled outside the differentiated function (Beta sampling is costly to trace).
        starts = jax.vmap(self.trial.reset)(jax.random.split(key_reset, B))
        keys = jax.random.split(key_trials, B)

        def loss_fn(params):
            logp, ret = jax.vmap(self._trial, in_axes=(None, 0, 0))(params, starts, keys)
            advantage = jax.lax.stop_gradient(ret - ret.mean())
            loss = -jnp.mean(advantage * logp)
            if self.config.nan_at_update >= 0:  # static: a config value picks the branch
                loss = loss * jnp.where(train_state["update"] >= self.config.nan_at_update, jnp.nan, 1.0)
            return loss, ret.mean()

        (loss, ret), grads = jax.value_and_grad(loss_fn, has_aux=True)(train_state["params"])
        updates, opt_state = optax.adam(self.config.lr).update(grads, train_state["opt_state"])
        params = optax.apply_updates(train_state["params"], updates)
        new = {"params": params, "opt_state": opt_state, "key": key, "update": train_state["update"] + 1}
        return new, {"loss": loss, "trial_return": ret, "beta": params["w"][0], "bonus": params["w"][1]}


def make_algo(**config):
    return algos.make("optimism-test", metarl.make("bandit", arms=2), EPISODES, **config)


SPU = 64 * EPISODES  # env steps per update of the default config
QUIET = dict(quiet=True, tensorboard=True)


def read_scalars(run_dir):
    """{tag: [(step, value)]} from the TensorBoard event files (TFRecord framing, Event protos)."""
    import struct

    from tensorboardX.proto import event_pb2

    out = {}
    for name in sorted(os.listdir(run_dir)):
        if not name.startswith("events.out.tfevents"):
            continue
        data = open(os.path.join(run_dir, name), "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


# ---------------------------------------------------------------------------------------------
def test_run_folder_metrics_eval_and_learning(tmp_path):
    out = str(tmp_path / "run")
    result = train(
        make_algo(), seeds=2, total_steps=40 * SPU, out_dir=out, eval_every=20 * SPU, eval_tasks=300,
        eval_baselines=["random"], chunk_updates=7, **QUIET,
    )
    assert result.updates == 40 and result.env_steps == 40 * SPU
    names = sorted(os.listdir(out))
    assert {"config.json", "metrics.jsonl", "checkpoints", "eval"} <= set(names)
    assert any(n.startswith("events.out.tfevents") for n in names)

    config = json.load(open(os.path.join(out, "config.json")))
    assert config["algorithm"] == {"name": "optimism-test", "config": {"lr": 0.5, "trials_per_update": 64, "nan_at_update": -1}}
    assert config["family"] == {"name": "bandit", "options": {"arms": 2, "prior_a": 1.0, "prior_b": 1.0}}
    assert (config["episodes"], config["seeds"], config["seed"], config["total_steps"]) == (EPISODES, 2, 0, 40 * SPU)
    assert config["eval"]["tasks"] == 300 and config["metarl_version"] == metarl.__version__
    # config.json is enough to rebuild the same algorithm
    assert folder.build_algorithm(config) == make_algo()

    lines = folder.read_jsonl(os.path.join(out, "metrics.jsonl"))
    # chunks of 7 cut at the evaluation boundary (20) and the end (40)
    assert [r["updates"] for r in lines] == [7, 14, 20, 27, 34, 40]
    assert all(r["env_steps"] == r["updates"] * SPU for r in lines)
    for r in lines:
        assert set(r["metrics"]) == {"loss", "trial_return", "beta", "bonus"}
        assert all(len(v) == 2 for v in r["per_seed"].values())
        assert r["metrics"]["beta"] == pytest.approx(np.mean(r["per_seed"]["beta"]))
    # it learns: beta grows, training return rises above random's 5.0
    assert lines[-1]["metrics"]["beta"] > 4.0
    assert lines[-1]["metrics"]["trial_return"] > 5.6

    scalars = read_scalars(out)
    assert [step for step, _ in scalars["train/beta"]] == [r["env_steps"] for r in lines]
    assert scalars["train/beta"][-1][1] == pytest.approx(lines[-1]["metrics"]["beta"], rel=1e-6)
    assert len(scalars["seed1/trial_return"]) == len(lines) and len(scalars["eval/mean_total_return"]) == 2

    ckpts = list_checkpoints(os.path.join(out, "checkpoints"))
    assert [os.path.basename(p) for p in ckpts][-1] == "update_000000040.ckpt"
    ev = sorted(os.listdir(os.path.join(out, "eval")))
    stem = f"steps_{40 * SPU:012d}"
    assert {stem + ".json", stem + ".md", stem + ".png", "history.jsonl"} <= set(ev)
    summary = json.load(open(os.path.join(out, "eval", stem + ".json")))
    me, rnd = summary["agents"]
    assert me["name"] == "optimism-test" and rnd["name"] == "random"
    assert len(me["per_seed_mean_total_return"]) == 2
    assert rnd["mean_total_return"] == pytest.approx(5.0, abs=0.3)  # 300 tasks: sd ~ 1.6/sqrt(300)*...
    assert me["mean_total_return"] > rnd["mean_total_return"] + 0.4
    history = folder.read_jsonl(os.path.join(out, "eval", "history.jsonl"))
    assert [h["updates"] for h in history] == [20, 40]


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    n = 6
    whole = train(make_algo(), seeds=2, total_steps=2 * n * SPU, out_dir=str(tmp_path / "whole"), eval_every=0, **QUIET)
    # "killed" after n updates (a finished shorter budget), then resumed with other chunk lengths
    part = str(tmp_path / "part")
    first = train(make_algo(), seeds=2, total_steps=n * SPU, out_dir=part, eval_every=0, chunk_updates=4, **QUIET)
    assert first.updates == n
    resumed = train(make_algo(), seeds=2, total_steps=2 * n * SPU, out_dir=part, resume=True, eval_every=0, chunk_updates=5, **QUIET)
    assert resumed.updates == 2 * n
    for a, b in zip(leaves(whole.state), leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    # and the checkpoint on disk holds exactly that state
    template = jax.eval_shape(jax.vmap(make_algo().init), init_keys(0, 2))
    on_disk, header = load_checkpoint(latest_checkpoint(os.path.join(part, "checkpoints")), template)
    assert header["updates"] == 2 * n
    for a, b in zip(leaves(whole.state), leaves(on_disk)):
        np.testing.assert_array_equal(a, b)
    # one metrics line per chunk, never a duplicate
    assert [r["updates"] for r in folder.read_jsonl(os.path.join(part, "metrics.jsonl"))] == [4, 6, 11, 12]


def test_kill_between_checkpoints_then_resume(tmp_path):
    """Killed after chunks that were logged but not checkpointed: resume restarts from the last
    checkpoint, drops the orphaned metric lines, and still matches the uninterrupted run."""
    n = 4
    whole = train(make_algo(), seeds=1, total_steps=3 * n * SPU, out_dir=str(tmp_path / "whole"), eval_every=0, **QUIET)
    run = str(tmp_path / "run")
    train(make_algo(), seeds=1, total_steps=3 * n * SPU, out_dir=run, eval_every=0, chunk_updates=2,
          checkpoint_every=n * SPU, keep_checkpoints=5, **QUIET)
    ckpt_dir = os.path.join(run, "checkpoints")
    assert [os.path.basename(p) for p in list_checkpoints(ckpt_dir)] == [
        "update_000000004.ckpt", "update_000000008.ckpt", "update_000000012.ckpt"]
    os.unlink(list_checkpoints(ckpt_dir)[-1])  # the kill came before the last checkpoint
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write('{"updates": 13, "torn')  # and tore the last line
    resumed = train(make_algo(), seeds=1, total_steps=3 * n * SPU, out_dir=run, resume=True, eval_every=0, chunk_updates=3, **QUIET)
    for a, b in zip(leaves(whole.state), leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    ups = [r["updates"] for r in folder.read_jsonl(os.path.join(run, "metrics.jsonl"))]
    assert ups == [2, 4, 6, 8, 11, 12]
    assert json.load(open(os.path.join(run, "config.json")))["resumed"][0]["updates"] == 8


def test_seed_i_is_the_same_run_whatever_the_number_of_seeds(tmp_path):
    one = train(make_algo(), seeds=1, total_steps=3 * SPU, out_dir=str(tmp_path / "a"), eval_every=0, **QUIET)
    two = train(make_algo(), seeds=2, total_steps=3 * SPU, out_dir=str(tmp_path / "b"), eval_every=0, **QUIET)
    for a, b in zip(leaves(one.state), leaves(two.state)):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)
    assert not np.array_equal(two.state["key"][0], two.state["key"][1])  # seeds differ


def test_bad_run_folders_and_mismatched_resume(tmp_path):
    out = str(tmp_path / "run")
    train(make_algo(), seeds=1, total_steps=2 * SPU, out_dir=out, eval_every=0, **QUIET)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(make_algo(), seeds=1, total_steps=2 * SPU, out_dir=out, eval_every=0, **QUIET)
    with pytest.raises(CheckpointError, match="different algorithm"):
        train(make_algo(lr=0.25), seeds=1, total_steps=4 * SPU, out_dir=out, resume=True, **QUIET)
    with pytest.raises(CheckpointError, match="different seeds"):
        train(make_algo(), seeds=2, total_steps=4 * SPU, out_dir=out, resume=True, **QUIET)
    with pytest.raises(CheckpointError, match="no run folder"):
        train(make_algo(), seeds=1, total_steps=4 * SPU, out_dir=str(tmp_path / "nothing"), resume=True, **QUIET)
    # a corrupt last checkpoint is reported, not silently skipped
    path = latest_checkpoint(os.path.join(out, "checkpoints"))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 10)
    with pytest.raises(CheckpointError, match="truncated"):
        train(make_algo(), seeds=1, total_steps=4 * SPU, out_dir=out, resume=True, **QUIET)
    with pytest.raises(ConfigError, match="eval_tasks"):
        train(make_algo(), seeds=1, total_steps=SPU, out_dir=str(tmp_path / "x"), eval_tasks=-1, **QUIET)
    with pytest.raises(ConfigError, match="does not apply|unknown baseline"):
        train(make_algo(), seeds=1, total_steps=SPU, out_dir=str(tmp_path / "y"), eval_baselines=["psrl"], **QUIET)


def test_execution_only_fields_are_outside_the_identity(tmp_path):
    """`devices` changes how an update is laid out, not what it computes: a run resumes whatever
    its saved `devices` (or from before the field existed), and checkpoints hashed with it load."""
    base = {"algorithm": {"name": "rl2", "config": {"lr": 1e-3}}, "family": {"name": "bandit", "options": {}},
            "episodes": 10, "seeds": 1, "seed": 0}
    with_devices = json.loads(json.dumps(base))
    with_devices["algorithm"]["config"]["devices"] = 2
    assert folder.config_hash(with_devices) == folder.config_hash(base)
    hashes = folder.config_hashes(with_devices)
    assert hashes[0] == folder.config_hash(base) and len(hashes) == 2  # the second: hashed with devices
    assert folder.config_hashes(base) == (folder.config_hash(base),)
    other = json.loads(json.dumps(base))
    other["algorithm"]["config"]["lr"] = 2e-3
    assert folder.config_hash(other) != folder.config_hash(base)
    # a saved run whose config names devices resumes under a config without them
    out = str(tmp_path / "run")
    train(make_algo(), seeds=1, total_steps=2 * SPU, out_dir=out, eval_every=0, **QUIET)
    path = os.path.join(out, "config.json")
    saved = json.load(open(path))
    saved["algorithm"]["config"]["devices"] = 3
    with open(path, "w") as f:
        json.dump(saved, f)
    resumed = train(make_algo(), seeds=1, total_steps=4 * SPU, out_dir=out, resume=True, eval_every=0, **QUIET)
    assert resumed.updates == 4


def test_a_run_from_before_a_config_field_existed_resumes_and_evaluates(tmp_path):
    """A field added to an algorithm's config later, with a default that keeps the old behaviour,
    is not part of the identity while at its default: a run whose config.json lacks it resumes,
    and its checkpoints (carrying the older whole-identity hash) load."""
    out = str(tmp_path / "run")
    train(make_algo(), seeds=1, total_steps=2 * SPU, out_dir=out, eval_every=0, **QUIET)
    path = os.path.join(out, "config.json")
    saved = json.load(open(path))
    del saved["algorithm"]["config"]["nan_at_update"]  # "written before nan_at_update existed"
    with open(path, "w") as f:
        json.dump(saved, f)
    assert folder.config_hash(saved) == folder.config_hash(json.loads(json.dumps(saved)) | {
        "algorithm": {"name": "optimism-test", "config": dict(saved["algorithm"]["config"], nan_at_update=-1)}})
    resumed = train(make_algo(), seeds=1, total_steps=4 * SPU, out_dir=out, resume=True, eval_every=0, **QUIET)
    assert resumed.updates == 4
    # a checkpoint stamped with the whole-identity hash of the saved config (the older rule) loads
    template = jax.eval_shape(jax.vmap(make_algo().init), init_keys(0, 1))
    older = folder.config_hashes(saved)[-1]
    assert older != folder.config_hash(saved)
    state, _ = load_checkpoint(latest_checkpoint(os.path.join(out, "checkpoints")), template)
    ckpt_path = save_checkpoint(str(tmp_path / "older"), state, {"updates": 4, "config_hash": older})
    load_checkpoint(ckpt_path, template, folder.config_hashes(saved))
    with pytest.raises(CheckpointError, match="different configuration"):
        load_checkpoint(ckpt_path, template, folder.config_hash(saved))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(TrainingDiverged, match=r"non-finite loss metric\(s\) loss in seed 0 at update 8 ") as err:
        train(make_algo(nan_at_update=7), seeds=2, total_steps=20 * SPU, out_dir=out, eval_every=0,
              chunk_updates=3, checkpoint_every=3 * SPU, **QUIET)
    assert isinstance(err.value, MetarlError)
    assert "update_000000006.ckpt" in str(err.value)
    path = latest_checkpoint(os.path.join(out, "checkpoints"))
    assert os.path.basename(path) == "update_000000006.ckpt"  # nothing from the bad chunk (7..9)
    template = jax.eval_shape(jax.vmap(make_algo(nan_at_update=7).init), init_keys(0, 2))
    state, header = load_checkpoint(path, template, folder.config_hash(json.load(open(os.path.join(out, "config.json")))))
    assert header["updates"] == 6 and all(np.isfinite(x).all() for x in leaves(state) if x.dtype.kind == "f")
    last = folder.read_jsonl(os.path.join(out, "metrics.jsonl"))[-1]
    assert last["updates"] == 9 and last["nonfinite_seeds"] == [0, 1]


def test_evaluate_run_writes_table_and_plot(tmp_path):
    out = str(tmp_path / "run")
    train(make_algo(), seeds=2, total_steps=15 * SPU, out_dir=out, eval_every=0, **QUIET)
    summary = evaluate_run(out, tasks=300, baselines=["random"])
    for name in ("final.json", "final.md", "final.png"):
        assert os.path.getsize(os.path.join(out, "eval", name)) > 0
    assert summary["header"]["tasks"] == 300 and summary["header"]["updates"] == 15
    assert [a["name"] for a in summary["agents"]] == ["optimism-test", "random"]
    md = open(os.path.join(out, "eval", "final.md")).read()
    assert "optimism-test (trained, 2 seeds)" in md and "random" in md
    # custom paths, and the same tasks give the same numbers
    again = evaluate_run(out, tasks=300, baselines=[], json_path=str(tmp_path / "e.json"), plot_path=str(tmp_path / "e.png"))
    assert os.path.exists(tmp_path / "e.json") and os.path.exists(tmp_path / "e.md") and os.path.exists(tmp_path / "e.png")
    assert again["agents"][0]["mean_total_return"] == summary["agents"][0]["mean_total_return"]
    with pytest.raises(CheckpointError, match="no run folder"):
        evaluate_run(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="bandit has no task-id splits"):  # --split is for families that hold ids out
        evaluate_run(out, tasks=5, baselines=[], split="test")
    for p in list_checkpoints(os.path.join(out, "checkpoints")):
        os.unlink(p)
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        evaluate_run(out)


# ---------------------------------------------------------------------------------------------
# the command line: metarl train / metarl eval
def test_cli_train_resume_eval_and_errors(tmp_path, capsys):
    from metarl.cli import main

    out = str(tmp_path / "run")
    base = ["train", "optimism-test", "bandit", "--arms", "2", "--episodes", str(EPISODES), "--seeds", "2", "--quiet"]
    assert main(base + ["--steps", str(4 * SPU), "--out", out, "--eval-tasks", "0"]) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["command"][:3] == ["metarl", "train", "optimism-test"] and config["algorithm"]["config"]["lr"] == 0.5
    assert main(base + ["--steps", str(6 * SPU), "--out", out, "--eval-tasks", "0", "--resume"]) == 0
    assert folder.read_jsonl(os.path.join(out, "metrics.jsonl"))[-1]["updates"] == 6
    capsys.readouterr()

    def fails(args, message, code=2):
        assert main(args) == code
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err

    fails(base + ["--steps", "10", "--out", out], "already holds a run; pass --resume")
    fails(base + ["--steps", "10", "--out", out, "--lr", "0.2", "--resume"], "different algorithm")
    fails(["train", "nope", "bandit", "--steps", "10", "--out", out], "unknown algorithm 'nope'")
    fails(base + ["--steps", "10", "--out", out, "--lr", "-1"], "lr")  # the config's own validation
    fails(["eval", str(tmp_path / "missing")], "no run folder")

    assert main(["eval", out, "--tasks", "300", "--baselines", "random", "--json", str(tmp_path / "e.json")]) == 0
    printed = capsys.readouterr().out
    assert "optimism-test (trained, 2 seeds)" in printed and "random" in printed
    assert os.path.exists(tmp_path / "e.json") and os.path.exists(tmp_path / "e.md")
    assert os.path.exists(os.path.join(out, "eval", "final.png"))

    path = latest_checkpoint(os.path.join(out, "checkpoints"))
    with open(path, "r+b") as f:
        f.seek(-5, os.SEEK_END)
        f.write(b"xxxxx")
    # A corrupt newest checkpoint is skipped, saying which and why, for the newest that verifies.
    older = list_checkpoints(os.path.join(out, "checkpoints"))[-2]
    assert main(["eval", out, "--tasks", "10", "--baselines", "none"]) == 0
    err = capsys.readouterr().err
    assert f"skipping checkpoint {os.path.basename(path)}" in err and "is corrupt" in err
    assert json.load(open(os.path.join(out, "eval", "final.json")))["header"]["checkpoint"] == os.path.basename(older)
    assert main(base + ["--steps", str(8 * SPU), "--out", out, "--resume", "--eval-tasks", "0"]) == 0
    err = capsys.readouterr().err
    assert f"skipping checkpoint {os.path.basename(path)}" in err
    assert folder.read_jsonl(os.path.join(out, "metrics.jsonl"))[-1]["updates"] == 8
    # ... and when none verifies, a clear error.
    for p in list_checkpoints(os.path.join(out, "checkpoints")):
        open(p, "wb").close()  # empty files
    for args in (["eval", out, "--tasks", "10"], base + ["--steps", str(10 * SPU), "--out", out, "--resume"]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("metarl: error: no checkpoint in") and "verifies" in err[-1]
        assert all("is empty" in line for line in err[:-1]) and len(err) == 4  # one line per skipped file


# ---------------------------------------------------------------------------------------------
# end to end with the real RL² (tiny): resume equivalence and evaluate_run
def test_rl2_end_to_end_resume_and_evaluate(tmp_path):
    pytest.importorskip("metarl.algos.rl2")
    small = dict(hidden=16, trials_per_update=16, minibatches=2, epochs=1)
    algo = algos.make("rl2", metarl.make("bandit", arms=2), EPISODES, **small)
    spu = algo.steps_per_update
    whole = train(algo, seeds=2, total_steps=4 * spu, out_dir=str(tmp_path / "whole"), eval_every=0, **QUIET)
    part = str(tmp_path / "part")
    train(algo, seeds=2, total_steps=2 * spu, out_dir=part, eval_every=0, **QUIET)
    resumed = train(algo, seeds=2, total_steps=4 * spu, out_dir=part, resume=True, eval_every=0, **QUIET)
    for a, b in zip(leaves(whole.state), leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    lines = folder.read_jsonl(os.path.join(part, "metrics.jsonl"))
    assert lines[-1]["updates"] == 4 and {"policy_loss", "value_loss", "trial_return"} <= set(lines[-1]["metrics"])
    summary = evaluate_run(part, tasks=300, baselines=["random"])
    assert [a["name"] for a in summary["agents"]] == ["rl2", "random"]
    assert 0.0 <= summary["agents"][0]["mean_total_return"] <= EPISODES


# ---------------------------------------------------------------------------------------------
# the run folder never loses a run: bad inputs a new user tries
def _folder_snapshot(run_dir):
    out = {}
    for root, _, files in os.walk(run_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, run_dir)] = f.read()
    return out


def test_resume_without_checkpoints_refuses_and_changes_nothing(tmp_path, capsys):
    from metarl.cli import main

    out = str(tmp_path / "run")
    base = ["train", "optimism-test", "bandit", "--arms", "2", "--episodes", str(EPISODES), "--quiet", "--out", out]
    assert main(base + ["--steps", str(3 * SPU), "--eval-tasks", "20", "--eval-baselines", "random"]) == 0
    import shutil

    shutil.rmtree(os.path.join(out, "checkpoints"))
    before = _folder_snapshot(out)
    capsys.readouterr()
    assert main(base + ["--steps", str(6 * SPU), "--eval-tasks", "20", "--eval-baselines", "random", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has metrics or evaluations but no checkpoint" in err, err
    assert _folder_snapshot(out) == before  # nothing in the folder changed
    # a folder holding only config.json (killed before anything was recorded) resumes from 0
    fresh = str(tmp_path / "fresh")
    os.makedirs(fresh)
    with open(os.path.join(out, "config.json")) as f, open(os.path.join(fresh, "config.json"), "w") as g:
        g.write(f.read())
    args = ["train", "optimism-test", "bandit", "--arms", "2", "--episodes", str(EPISODES), "--quiet", "--out", fresh]
    assert main(args + ["--steps", str(2 * SPU), "--eval-tasks", "20", "--eval-baselines", "random", "--resume"]) == 0
    assert folder.read_jsonl(os.path.join(fresh, "metrics.jsonl"))[-1]["updates"] == 2


@pytest.mark.parametrize("content, message", [("[]", "holds a JSON list"), ("{}", "has no 'algorithm'"), ("null", "holds a JSON null"),
                                              ('{"algorithm": 1, "family": {}, "seeds": 1, "seed": 0}', "'algorithm' field is 1")])
def test_config_json_of_the_wrong_shape_is_one_clear_line(tmp_path, capsys, content, message):
    from metarl.cli import main

    out = str(tmp_path / "run")
    os.makedirs(os.path.join(out, "checkpoints"))
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(content)
    base = ["train", "optimism-test", "bandit", "--arms", "2", "--episodes", str(EPISODES), "--quiet", "--out", out]
    for args in (base + ["--steps", str(SPU), "--resume"], ["eval", out]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is not a metarl run config" in err and message in err, err


def test_out_that_is_a_file_or_cannot_be_made_is_one_clear_line(tmp_path, capsys):
    from metarl.cli import main

    a_file = tmp_path / "file"
    a_file.write_text("x")
    base = ["train", "optimism-test", "bandit", "--arms", "2", "--episodes", str(EPISODES), "--quiet", "--steps", str(SPU)]
    for out, message in [(str(a_file), "is a file, not a run folder"), (str(a_file / "sub"), "cannot create the run folder")]:
        assert main(base + ["--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "--out" in err, err
    assert a_file.read_text() == "x"


def test_a_family_too_large_for_memory_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    from metarl.cli import main

    out = str(tmp_path / "huge")
    args = ["train", "optimism-test", "tabular-mdp", "--states", "10000", "--episodes", "2", "--quiet", "--steps", "100", "--out", out]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "out of memory" in err and "GiB" in err, err
    assert not os.path.exists(out)  # nothing blocks the same command with a smaller family
    small = [a if a != "10000" else "3" for a in args]
    assert main(small + ["--eval-tasks", "0"]) == 0


def test_a_run_config_that_recorded_a_fixed_family_field_still_builds_and_resumes():
    from metarl import algos as algos_
    from metarl.run import folder

    algo = algos_.make("dqn", metarl.make("cartpole", factors="length"), schedule_steps=100)
    config = folder.run_config(algo, seeds=1, seed=0, total_steps=100)
    assert "env_id" not in config["family"]["options"]
    old = json.loads(json.dumps(config))
    old["family"]["options"]["env_id"] = "CartPole-v1"  # what earlier folders wrote
    assert folder.build_algorithm(old).env == algo.env
    assert folder.config_hash(old) == folder.config_hash(config)  # resuming compares these
    assert folder.config_hashes(old) != folder.config_hashes(config)  # and accepts the old checkpoints' hash


def test_a_run_config_rebuilds_the_fields_that_follow_the_run_length():
    from metarl import algos as algos_
    from metarl.run import folder

    algo = algos_.make("dream", metarl.make("city"), 2, trials_per_update=4, minibatches=2)  # lr_decay_updates None
    trained = algo.for_run(25)
    config = json.loads(json.dumps(folder.run_config(trained, seeds=1, seed=0, total_steps=25 * algo.steps_per_update)))
    assert folder.build_algorithm(config) == trained  # the resolved schedule, 25 updates
    del config["algorithm"]["config"]["lr_decay_updates"]  # a folder written before the schedule existed
    assert folder.build_algorithm(config).config.lr_decay_updates == 0  # trained at a constant rate
    # the default preset's posterior decoder and reservoir are saved and rebuilt; a folder written before those
    # options trained the paper's GRU decoder without a reservoir (the config's defaults), and its checkpoints' hash still loads
    new = algos_.make("dream", metarl.make("city"), 2, preset="default", trials_per_update=4, minibatches=2).for_run(25)
    assert new.config.decoder == "posterior" and new.config.decoder_replay == 16384
    config = json.loads(json.dumps(folder.run_config(new, seeds=1, seed=0, total_steps=25 * algo.steps_per_update)))
    assert folder.build_algorithm(config) == new
    for field in ("decoder", "decoder_replay"):
        del config["algorithm"]["config"][field]
    old = folder.build_algorithm(config)
    assert old.config.decoder == "gru" and old.config.decoder_replay == 0
    explicit = json.loads(json.dumps(folder.run_config(old, seeds=1, seed=0, total_steps=25 * algo.steps_per_update)))
    assert explicit["algorithm"]["config"]["decoder"] == "gru"
    assert folder.config_hash(explicit) == folder.config_hash(config)  # fields at their defaults are left out of the hash
