"""The command line, called in-process through `cli.main([...])` (one subprocess for the real exit code)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from metarl import algos, baselines, cli, envs


def run(capsys, *args):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_top_level_help_names_every_command(capsys):
    for args in ([], ["--help"], ["-h"]):
        code, out, _ = run(capsys, *args)
        assert code == 0
        assert "meta-reinforcement learning" in out
        for name in cli.COMMANDS:
            assert f"  {name} " in out


def test_list_shows_every_family_with_options_every_baseline_and_algorithm(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in envs.names():
        assert name in out
    assert "--arms 5" in out and "--states 10 --actions 5 --horizon 10" in out
    for name in baselines.names():
        assert name in out
    for name in algos.names():
        assert name in out


def test_baselines_help_lists_family_flags(capsys):
    code, out, _ = run(capsys, "baselines", "tabular-mdp", "--help")
    assert code == 0
    for flag in ("--states", "--actions", "--horizon", "--episodes", "--tasks", "--seed", "--agents", "--json", "--plot"):
        assert flag in out
    assert "steps per episode H" in out  # the family's field documentation is the flag's help
    assert "example:" in out
    code, out, _ = run(capsys, "baselines", "--help")
    assert code == 0 and all(name in out for name in envs.names())


def test_baselines_table_and_json(capsys, tmp_path):
    path = tmp_path / "out" / "bandit.json"
    plot = tmp_path / "out" / "bandit.png"
    code, out, err = run(
        capsys, "baselines", "bandit", "--arms", "5", "--episodes", "10", "--tasks", "400", "--seed", "1",
        "--agents", "random", "--json", str(path), "--plot", str(plot),
    )
    assert code == 0, err
    assert "random" in out and "mean total return" in out and "95% CI" in out
    summary = json.loads(path.read_text())
    assert summary["header"]["options"]["arms"] == 5
    assert (summary["header"]["episodes"], summary["header"]["tasks"], summary["header"]["seed"]) == (10, 400, 1)
    agents = {a["name"]: a for a in summary["agents"]}
    random = agents["random"]
    # Random pulls pay 0.5 on average: 5.0 over 10 pulls (Duan et al.'s table). A task's total has
    # variance 4 (10 * E[m(1 - m)] + 100 * Var(m), m the mean of 5 U[0,1] arm means), so over 400
    # tasks the standard error is 0.1; 0.4 is four of them.
    assert abs(random["mean_total_return"] - 5.0) < 0.4
    low, high = random["ci95"]
    assert low < random["mean_total_return"] < high and 0.25 < high - low < 0.55  # 2 * 1.97 * 0.1
    assert len(random["curve"]["mean"]) == 10
    assert all(0.3 < m < 0.7 for m in random["curve"]["mean"])
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["baselines", "nope"], "unknown task family 'nope'; valid names: acrobot, bandit"),
        (["baselines", "bandit", "--arms", "0"], "bandit: --arms must be >= 1, got 0"),
        (["baselines", "bandit", "--agents", "nope"], "unknown baseline 'nope'"),
        (["baselines", "bandit", "--tasks", "0"], "tasks must be >= 1"),
        (["baselines", "bandit", "--episodes", "0"], "episodes must be >= 1"),
        (["frobnicate"], "unknown command 'frobnicate'; valid commands: list"),
        (["baselines"], None),  # help, not an error
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    if message is None:
        assert code == 0 and "FAMILY" in out
        return
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metarl: error: ") and message in lines[0], err


def test_inapplicable_baseline_is_a_clear_error(capsys):
    mdp_only = [n for n in baselines.names("tabular-mdp") if "bandit" not in baselines.families(n)]
    if not mdp_only:
        pytest.skip("no baseline specific to tabular-mdp registered")
    code, _, err = run(capsys, "baselines", "bandit", "--agents", mdp_only[0])
    assert code == 2 and "does not apply to task family 'bandit'" in err


def test_malformed_flag_exits_2(capsys):
    code, _, err = run(capsys, "baselines", "bandit", "--arms", "five")
    assert code == 2 and "--arms" in err
    code, _, err = run(capsys, "baselines", "bandit", "--bogus", "1")
    assert code == 2 and "--bogus" in err


def test_entry_point_process_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "metarl.cli", "baselines", "bandit", "--arms", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip() == "metarl: error: bandit: --arms must be >= 1, got 0"


# ---------------------------------------------------------------------------------------------
# parsing real dataclasses with tyro
@dataclasses.dataclass(frozen=True)
class _Config:
    hidden: int = 256  #: width of the recurrent core
    lr: float = 2e-4
    """AdamW learning rate"""
    run_name: str = dataclasses.field(default="")

    def __post_init__(self):
        from metarl.errors import check_int

        check_int("toy", "hidden", self.hidden, low=1)


def test_parse_reads_the_real_dataclass_and_returns_its_instances(capsys):
    parsed = cli.parse([("config", _Config, _Config(hidden=64))], ["--lr", "0.5", "--run-name", "x"], prog="t", description="d")
    assert type(parsed["config"]) is _Config and parsed["config"] == _Config(hidden=64, lr=0.5, run_name="x")
    with pytest.raises(SystemExit) as exit_:
        cli.parse([("config", _Config, None)], ["--help"], prog="t", description="d")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "width of the recurrent core" in out and "AdamW learning rate" in out  # the fields' docs are the help
    # a validation error leaves tyro as the library's own error (main prints it on one line)
    with pytest.raises(envs.registry.ConfigError, match="hidden must be >= 1"):
        cli.parse([("config", _Config, None)], ["--hidden", "0"], prog="t", description="d")


def test_take_names_validates_with_the_registry():
    (family,), rest = cli.take_names(["bandit", "--arms", "3"], ["FAMILY"], [envs.family_class])
    assert family == "bandit" and rest == ["--arms", "3"]
    with pytest.raises(envs.registry.ConfigError, match="missing FAMILY"):
        cli.take_names(["--arms", "3"], ["FAMILY"], [envs.family_class])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0", "--out", "x"], "metarl: error: train: --steps must be >= 1, got 0"),
        (["--steps", "10", "--out", "x", "--eval-every", "-1"], "metarl: error: train: --eval-every must be >= 0, got -1"),
        (["--steps", "10", "--out", "x", "--hidden", "0"], "metarl: error: rl2: --hidden must be >= 1, got 0"),
        (["--steps", "10", "--out", "x", "--preset", "nope"], "metarl: error: algorithm 'rl2' has no preset 'nope'; its presets: reference, fast"),
    ],
)
def test_train_errors_name_the_flag(capsys, tmp_path, args, message):
    code, _, err = run(capsys, "train", "rl2", "bandit", *args)
    assert code == 2 and err.strip().startswith(message) and len(err.strip().splitlines()) == 1, err


def test_train_defaults_to_the_algorithms_preset_for_the_setting(capsys, monkeypatch):
    seen = {}

    def fake_train(algo, settings):
        seen["algo"], seen["settings"] = algo, settings
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr("metarl.run.train", fake_train)
    readme = ["train", "rl2", "bandit", "--arms", "5", "--episodes", "10", "--steps", "5000000", "--seeds", "3", "--out", "runs/b5"]
    assert cli.main(readme) == 130
    assert seen["algo"].config == algos.rl2.PRESETS["fast"]  # not the slow "reference"
    assert (seen["settings"].total_steps, seen["settings"].seeds, seen["settings"].out_dir) == (5_000_000, 3, "runs/b5")
    assert cli.main(readme[:6] + ["100"] + readme[7:]) == 130  # 100-pull trials
    assert seen["algo"].config == algos.rl2.PRESETS["fast-long"]
    assert cli.main(readme + ["--preset", "reference", "--hidden", "64"]) == 130  # a named preset, then a field over it
    assert seen["algo"].config == dataclasses.replace(algos.rl2.PRESETS["reference"], hidden=64)
    capsys.readouterr()
    code, out, _ = run(capsys, "train", "rl2", "bandit", "--episodes", "100", "--help")
    assert code == 0 and "start from preset 'fast-long', its default for this setting" in out
    code, out, _ = run(capsys, "train", "ppo", "gymnax", "--env-id", "Pendulum-v1", "--help")
    assert code == 0 and "preset 'pendulum'" in out and "--episodes INT" not in out  # episodes belong to in-context algorithms


def test_trial_length_defaults_to_the_familys_trial(capsys, monkeypatch):
    # DREAM's users run `dream -b environment="distraction"`: one exploration and one exploitation
    # episode, so a two-phase family's trial defaults to 2 episodes; elsewhere to 10
    seen = {}

    def fake_train(algo, settings):
        seen["algo"] = algo
        raise KeyboardInterrupt

    monkeypatch.setattr("metarl.run.train", fake_train)
    base = ["--steps", "1000", "--out", "runs/x"]
    assert cli.main(["train", "dream", "distraction"] + base) == 130 and seen["algo"].episodes == 2
    # and starts from the preset DREAM chooses: "held-out-dqn-late" where the family holds ids out
    # (cooking: "held-out-dqn"), else "posterior" (by choice or by name); "paper" is the GRU
    assert seen["algo"].config == algos.dream.PRESETS["held-out-dqn-late"] and seen["algo"].config.id_init == 0.0
    assert cli.main(["train", "dream", "cooking"] + base) == 130 and seen["algo"].config == algos.dream.PRESETS["held-out-dqn"]
    assert seen["algo"].config.exploit_learner == "dqn"  # cooking's chain needs the replay learner
    assert cli.main(["train", "dream", "city"] + base) == 130 and seen["algo"].config == algos.dream.PRESETS["posterior"]
    assert seen["algo"].config.decoder == "posterior"
    assert cli.main(["train", "dream", "city", "--preset", "default"] + base) == 130 and seen["algo"].config == algos.dream.PRESETS["posterior"]
    # a preset by its name on any family ("default" is the family's choice: on distraction "held-out-dqn-late")
    assert cli.main(["train", "dream", "distraction", "--preset", "posterior"] + base) == 130 and seen["algo"].config.id_init == 1.0
    assert cli.main(["train", "dream", "city", "--preset", "paper"] + base) == 130 and seen["algo"].config.decoder == "gru"
    assert cli.main(["train", "e-rl2", "city", "--episodes", "3"] + base) == 130 and seen["algo"].episodes == 3
    assert cli.main(["train", "rl2", "bandit"] + base) == 130 and seen["algo"].episodes == 10
    capsys.readouterr()


@pytest.mark.slow  # two First-Explore compilations, 30-45 s
def test_first_explore_schedule_spans_the_runs_steps(capsys, tmp_path):
    # 4 tasks x 2 episodes x 2 (explore + exploit) x 1 step = 16 env steps per update; 40 steps -> 3 updates
    common = ["train", "first-explore", "fixed-arm-bandit", "--arms", "2", "--episodes", "2", "--preset", "fast",
              "--batch-tasks", "4", "--hidden", "8", "--layers", "1", "--choose-k-tasks", "4",
              "--eval-tasks", "0", "--quiet", "--out", str(tmp_path / "auto")]
    assert cli.main(common + ["--steps", "40"]) == 0
    capsys.readouterr()
    assert json.load(open(tmp_path / "auto" / "config.json"))["algorithm"]["config"]["total_updates"] == 3
    # resumed with more steps, the run keeps the schedule it started with
    assert cli.main(common + ["--steps", "80", "--resume"]) == 0
    config = json.load(open(tmp_path / "auto" / "config.json"))
    assert config["algorithm"]["config"]["total_updates"] == 3 and config["total_steps"] == 80


def test_host_devices_is_a_global_option_checked_before_jax_starts(capsys):
    code, _, err = run(capsys, "--host-devices", "0", "list")
    assert code == 2 and err.strip() == "metarl: error: --host-devices must be a positive integer, got '0'"
    code, out, _ = run(capsys, "--host-devices=1", "list")  # one device: what this process already has
    assert code == 0 and "task families" in out
    code, out, _ = run(capsys, "--help")
    assert "--host-devices N" in out


def test_every_algorithm_and_family_has_a_parser_without_clashing_flags(capsys):
    # a field of the same name in the family, the algorithm's config and TrainSettings would make
    # one flag ambiguous (cli.parse refuses to build such a parser): check every pair by name, and
    # build one real parser per algorithm
    from metarl.run import TrainSettings

    def names(cls):
        return {f.name for f in dataclasses.fields(cls) if f.init}

    for algo in algos.names():
        cls = algos.algorithm_class(algo)
        choice = cli.TrialOptions if cls.in_context else cli.PresetOption
        for family in envs.names():
            parts = [names(envs.family_class(family)), names(cls.Config), names(TrainSettings), names(choice)]
            clashes = {n for i, a in enumerate(parts) for b in parts[i + 1:] for n in a & b}
            assert not clashes, (algo, family, clashes)
        code, out, _ = run(capsys, "train", algo, "cartpole", "--help")
        assert code == 0 and "--steps N" in out, algo


def test_train_from_a_config_file_then_eval_on_the_evaluation_contexts(capsys, tmp_path):
    config = tmp_path / "best_config.json"  # the shape metarl tune writes
    config.write_text(json.dumps({"algorithm": "dqn", "config": {"hidden": [8], "learning_starts": 50, "batch_size": 8}}))
    out = str(tmp_path / "run")
    code, _, err = run(capsys, "train", "dqn", "cartpole", "--factors", "length", "--config", str(config), "--steps", "200",
                       "--out", out, "--eval-tasks", "0", "--quiet")
    assert code == 0, err
    saved = json.load(open(os.path.join(out, "config.json")))["algorithm"]["config"]
    assert saved["hidden"] == [8] and saved["batch_size"] == 8 and saved["learning_starts"] == 50
    code, text, err = run(capsys, "eval", out, "--contexts", "length", "--num-contexts", "4", "--episodes", "1")
    assert code == 0, err
    summary = json.load(open(os.path.join(out, "eval", "contexts_length.json")))
    # linspace(0.2 / 2, 2.2 x 2, 4): only 1.533 lies inside the training range [0.2, 2.2]
    np.testing.assert_allclose(summary["multipliers"], [0.1, 0.1 + 4.3 / 3, 0.1 + 8.6 / 3, 4.4], rtol=1e-6)
    assert summary["inside"] == [False, True, False, False] and len(summary["per_seed"][0]) == 4
    assert "outside the range" in text and os.path.exists(os.path.join(out, "eval", "contexts_length.png"))
    code, _, err = run(capsys, "eval", out, "--contexts", "tau")
    assert code == 2 and "not one of this family's factors" in err
