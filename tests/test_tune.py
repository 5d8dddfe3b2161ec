"""metarl tune: a study of tiny trials shared by two processes through one SQLite storage, its best
config passed back to `metarl train`, and the settings' errors."""

import dataclasses
import json
import os

import pytest

from metarl import algos
from metarl.cli import config_from_file, main
from metarl.errors import ConfigError
from metarl.tune import TuneSettings, tune

optuna = pytest.importorskip("optuna")


@pytest.mark.slow
def test_three_tiny_trials_in_two_processes_share_one_sqlite_study(tmp_path):
    out = str(tmp_path / "study")
    settings = TuneSettings(out_dir=out, trials=3, budget=1000, min_budget=500, eval_tasks=4, workers=2)
    base = algos.make("dqn", __import__("metarl").make("gymnax", env_id="CartPole-v1"), hidden=(8,)).config
    summary = tune("dqn", "gymnax", {"env_id": "CartPole-v1"}, base, settings, log=lambda line: None)
    study = optuna.load_study(study_name="tune-dqn-gymnax", storage=settings.storage_url)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 3 <= len(done) <= 4  # two workers may both start the last trial
    assert len({t.user_attrs["pid"] for t in done}) == 2  # both processes ran trials
    assert os.getpid() not in {t.user_attrs["pid"] for t in done}
    assert summary["complete"] >= 1 and os.path.exists(os.path.join(out, "trials.md"))
    assert all(0.0 <= t.params["exploration_fraction"] - 0.005 <= 0.495 for t in done)
    # the best config goes back to train: the searched values over the fixed ones
    best = json.load(open(os.path.join(out, "best_config.json")))
    config = config_from_file("dqn", algos.make("dqn", __import__("metarl").make("cartpole")).config, os.path.join(out, "best_config.json"))
    assert config.lr == best["config"]["lr"] and config.hidden == (8,) and config.schedule_steps is None
    # rerunning the command continues the same study: it already holds 3 trials, so nothing new runs
    again = tune("dqn", "gymnax", {"env_id": "CartPole-v1"}, base, dataclasses.replace(settings, workers=1), log=lambda line: None)
    assert len(again["trials"]) == len(study.trials)


def test_tune_settings_errors_are_one_clear_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="budget 500 is below the minimum budget 1,000"):
        TuneSettings(out_dir=str(tmp_path), budget=500, min_budget=1000)
    code = main(["tune", "dqn", "cartpole", "--out", str(tmp_path), "--budget", "10", "--min-budget", "100"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "below the minimum budget" in err[0], err
    assert main(["tune", "rl2", "bandit", "--out", str(tmp_path)]) == 2
    assert "no search space for algorithm 'rl2'" in capsys.readouterr().err


def test_train_config_file_must_be_the_algorithms(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"algorithm": "ppo", "config": {"lr": 1e-3}}))
    start = algos.make("dqn", __import__("metarl").make("cartpole")).config
    with pytest.raises(ConfigError, match="holds a config of 'ppo', not of 'dqn'"):
        config_from_file("dqn", start, str(path))
    path.write_text(json.dumps({"lr": 1e-3, "wings": 2}))
    with pytest.raises(ConfigError, match="no option 'wings'"):
        config_from_file("dqn", start, str(path))
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        config_from_file("dqn", start, str(path))
    path.write_text(json.dumps({"lr": 1e-3, "hidden": [32, 32]}))
    assert config_from_file("dqn", start, str(path)).hidden == (32, 32)
