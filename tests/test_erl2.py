"""E-RL² on DREAM's two-phase trials: only the exploitation episodes' rewards are optimised, clear
errors for families and trials without an exploration phase, and the evaluator's exploitation
column, and `metarl eval --split` on a family with held-out ids."""

import os

import jax
import numpy as np
import pytest

import metarl
from metarl import algos
from metarl.eval import report
from metarl.errors import ConfigError

CITY = metarl.make("city")


def test_erl2_counts_only_the_exploitation_episodes_rewards():
    algo = algos.make("e-rl2", CITY, 2, preset="fast", hidden=8, trials_per_update=4, minibatch_trials=4, epochs=1)
    assert algo.config.counted_from_episode == 1
    state = algo.init(jax.random.PRNGKey(0))
    key_rollout, key_epochs = jax.random.split(jax.random.PRNGKey(1))
    batch = jax.jit(algo.rollout)(state.params, key_rollout)  # the rollout the update makes with the same key
    _, metrics = jax.jit(algo._update)(state, key_rollout, key_epochs)
    reward = np.where(np.asarray(batch["valid"]), np.asarray(batch["reward"]), 0.0)
    exploit = np.asarray(batch["timestep"].episode_index) >= 1
    np.testing.assert_allclose(metrics["counted_return"], (reward * exploit).sum(0), rtol=1e-6)
    np.testing.assert_allclose(metrics["trial_return"], reward.sum(0), rtol=1e-6)
    assert (reward * ~exploit).sum() != 0  # the exploration episode did pay rewards, not counted


def test_erl2_errors():
    with pytest.raises(ConfigError, match="two-phase"):
        algos.make("e-rl2", metarl.make("bandit"), 2)
    with pytest.raises(ConfigError, match="episodes >= 2"):
        algos.make("e-rl2", CITY, 1)
    with pytest.raises(ConfigError, match="counted_from_episode"):
        algos.make("rl2", CITY, 2, counted_from_episode=2)


def test_report_shows_the_exploitation_return_of_two_phase_trials():
    returns = np.array([[-2.0, 0.8], [-1.0, 0.3], [-0.5, -2.0]])
    results = report.Results("city", {}, 2, 3, 0, [report.AgentResult("random", "random", {}, returns)])
    entry = report.summarize(results)["agents"][0]
    assert entry["mean_exploit_return"] == pytest.approx((0.8 + 0.3 - 2.0) / 3)
    assert entry["mean_total_return"] == pytest.approx(returns.sum(1).mean())
    assert "exploitation return" in report.markdown_table(report.summarize(results))
    other = report.Results("bandit", {}, 2, 3, 0, [report.AgentResult("random", "random", {}, returns)])
    assert "mean_exploit_return" not in report.summarize(other)["agents"][0]


def test_eval_scores_a_distraction_run_on_its_held_out_ids(tmp_path, monkeypatch):
    """`metarl eval --split` on a family with held-out ids (any learned algorithm: E-RL², the quickest to build)."""
    from metarl.run import evaluate_run, evaluation, train

    out = str(tmp_path / "run")
    algo = algos.make("e-rl2", metarl.make("distraction"), 2, preset="fast", hidden=8, trials_per_update=4, minibatch_trials=4, epochs=1)
    train(algo, seeds=1, total_steps=algo.steps_per_update, out_dir=out, eval_every=0, quiet=True)
    seen = []
    scored = evaluation.evaluate_learned
    monkeypatch.setattr(evaluation, "evaluate_learned", lambda a, *rest: seen.append(a.env.split) or scored(a, *rest))
    summary = evaluate_run(out, tasks=20, baselines=[], split="test")
    assert seen == ["test"] and summary["header"]["split"] == "test"
    assert os.path.exists(os.path.join(out, "eval", "final_test.json")) and not os.path.exists(os.path.join(out, "eval", "final.json"))
    evaluate_run(out, tasks=20, baselines=[])
    assert seen == ["test", "train"]  # without it, the run's own split
    with pytest.raises(ConfigError, match="split must be one of"):
        evaluate_run(out, tasks=5, baselines=[], split="bogus")
