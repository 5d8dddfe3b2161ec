"""Statistics against hand-computed values; JSON, Markdown and PNG reports written and well-formed."""

import json

import jax
import numpy as np
import pytest

import metarl
from metarl.baselines import make as make_baseline
from metarl.errors import ConfigError
from metarl.eval import evaluate, report, stats

# Student-t quantiles t(0.975, df), from tables
T975 = {1: 12.706204736174698, 4: 2.7764451051977987, 5: 2.5705818366147395}


# ---------------------------------------------------------------------------------------------
# intervals
def test_t_interval_by_hand():
    # mean 3, sample sd sqrt(2.5), sem sqrt(2.5 / 5) = sqrt(0.5)
    iv = stats.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = T975[4] * np.sqrt(0.5)
    assert iv.mean == pytest.approx(3.0)
    assert (iv.low, iv.high) == pytest.approx((3.0 - half, 3.0 + half))
    assert iv.n == 5 and iv.half_width == pytest.approx(half)


def test_t_interval_of_one_sample_is_a_point_and_bad_samples_fail():
    assert stats.t_interval([2.5]) == stats.Interval(2.5, 2.5, 2.5, 1)
    with pytest.raises(ConfigError, match="no samples"):
        stats.t_interval([])
    with pytest.raises(ConfigError, match="NaN"):
        stats.t_interval([1.0, np.nan])


def test_total_return_sums_episodes_then_intervals_over_tasks():
    returns = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 2.0], [2.0, 2.0], [2.0, 3.0]])  # totals 1..5
    iv = stats.total_return(returns)
    assert iv.mean == pytest.approx(3.0)
    assert iv.high - 3.0 == pytest.approx(T975[4] * np.sqrt(0.5))


def test_seeds_clustered_by_default_and_pooled_on_request():
    # seed 0 totals [1, 2, 3] (mean 2), seed 1 totals [3, 4, 5] (mean 4)
    returns = np.array([[[1.0], [2.0], [3.0]], [[3.0], [4.0], [5.0]]])
    clustered = stats.total_return(returns)
    # per-seed means [2, 4]: sd sqrt(2), sem 1, 1 degree of freedom
    assert clustered.mean == pytest.approx(3.0)
    assert (clustered.low, clustered.high) == pytest.approx((3.0 - T975[1], 3.0 + T975[1]))
    pooled = stats.total_return(returns, pooled=True)
    # [1, 2, 3, 3, 4, 5]: sample variance 10 / 5 = 2, sem sqrt(2 / 6)
    assert pooled.high - 3.0 == pytest.approx(T975[5] * np.sqrt(2.0 / 6.0))
    with pytest.raises(ConfigError, match="shape"):
        stats.total_return(np.zeros(4))


def test_episode_curve_per_episode_index():
    returns = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 4.0]])
    curve = stats.episode_curve(returns)
    assert [c.mean for c in curve] == pytest.approx([1.0, 1.0, 3.0])
    # index 1: both tasks returned 1, no spread
    assert (curve[1].low, curve[1].high) == pytest.approx((1.0, 1.0))
    # index 0: [0, 2], sd sqrt(2), sem 1
    assert curve[0].high == pytest.approx(1.0 + T975[1])


def test_regret_is_oracle_total_minus_agent_total_per_task():
    agent = np.array([[1.0, 1.0], [2.0, 0.0]])  # totals [2, 2]
    oracle = np.array([[2.0, 2.0], [3.0, 3.0]])  # totals [4, 6] -> regret [2, 4]
    iv = stats.regret(agent, oracle)
    assert iv.mean == pytest.approx(3.0)
    assert iv.high == pytest.approx(3.0 + T975[1])
    # an oracle of shape [task, episode] broadcasts over the agent's seeds
    seeded = stats.regret(np.stack([agent, agent + 1.0]), oracle)
    assert seeded.mean == pytest.approx((3.0 + 1.0) / 2)
    with pytest.raises(ConfigError, match="do not match"):
        stats.regret(agent, oracle[:1])


# ---------------------------------------------------------------------------------------------
# reports
def _fake_results():
    random = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    oracle = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    return report.Results(
        family="bandit",
        options={"arms": 2, "prior_a": 1.0, "prior_b": 1.0},
        episodes=2,
        tasks=3,
        seed=7,
        agents=[
            report.AgentResult("random", "random", {}, random, 1.5, 0.25),
            report.AgentResult("oracle", "oracle", {}, oracle, 1.0, 0.5),
        ],
        wall_seconds=3.0,
    )


def test_summary_and_json(tmp_path):
    summary = report.summarize(_fake_results())
    path = tmp_path / "sub" / "summary.json"
    report.write_json(summary, path)
    loaded = json.loads(path.read_text())
    header = loaded["header"]
    assert header["family"] == "bandit" and header["options"]["arms"] == 2
    assert (header["episodes"], header["tasks"], header["seed"], header["wall_seconds"]) == (2, 3, 7, 3.0)
    random, oracle = loaded["agents"]
    assert random["name"] == "random" and random["label"] == "random"
    assert random["mean_total_return"] == pytest.approx(4.0 / 3.0)  # totals [1, 2, 1]
    low, high = random["ci95"]
    assert low < 4.0 / 3.0 < high
    assert random["curve"]["mean"] == pytest.approx([2.0 / 3.0, 2.0 / 3.0])
    assert len(random["curve"]["ci95_low"]) == len(random["curve"]["ci95_high"]) == 2
    assert random["regret"]["mean"] == pytest.approx(2.0 - 4.0 / 3.0)
    assert oracle["regret"]["mean"] == 0.0 and oracle["regret"]["ci95"] == [0.0, 0.0]
    assert random["compile_seconds"] == 1.5 and random["run_seconds"] == 0.25


def test_no_oracle_no_regret():
    results = _fake_results()
    results.agents = results.agents[:1]
    summary = report.summarize(results)
    assert summary["agents"][0]["regret"] is None and summary["header"]["regret"] is None
    columns, _ = report.table_rows(summary)
    assert "regret vs Oracle" not in columns


def test_markdown_table(tmp_path):
    path = tmp_path / "table.md"
    report.write_markdown(report.summarize(_fake_results()), path)
    lines = path.read_text().strip().splitlines()
    assert lines[0].startswith("bandit(arms=2") and "interval over tasks" in lines[0]
    header, rule, *rows = lines[2:]
    assert header == "| agent | mean total return | 95% CI | regret vs Oracle | compile s | run s |"
    assert rule == "|---|---|---|---|---|---|"
    assert len(rows) == 2 and rows[0].startswith("| random | 1.33 | [")
    assert all(row.count("|") == header.count("|") for row in rows)


def test_plot_is_a_png(tmp_path):
    import matplotlib.image

    path = tmp_path / "curves.png"
    report.plot_curves(report.summarize(_fake_results()), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


# ---------------------------------------------------------------------------------------------
# run_baselines: shared tasks, timings, the same numbers as evaluate
def test_run_baselines_matches_evaluate_on_the_documented_tasks():
    env = metarl.make("bandit", arms=3)
    results = report.run_baselines(env, episodes=4, tasks=64, seed=3, names=["random"])
    (random,) = results.agents
    assert random.returns.shape == (64, 4) and random.compile_seconds > 0 and random.run_seconds > 0
    tasks = env.sample_tasks(jax.random.PRNGKey(3), 64)
    expected = evaluate(make_baseline("random", env, 4), None, env, tasks, 4, report.evaluation_key(3))
    np.testing.assert_array_equal(random.returns, expected)
    assert (results.family, results.options, results.episodes, results.tasks, results.seed) == (
        "bandit", {"arms": 3, "prior_a": 1.0, "prior_b": 1.0}, 4, 64, 3)


def test_run_baselines_rejects_bad_names_before_running():
    env = metarl.make("bandit")
    with pytest.raises(ConfigError, match="unknown baseline 'nope'"):
        report.run_baselines(env, 2, 4, 0, names=["random", "nope"])
    with pytest.raises(ConfigError, match="chosen twice"):
        report.run_baselines(env, 2, 4, 0, names=["random", "random"])
    with pytest.raises(ConfigError, match="tasks must be >= 1"):
        report.run_baselines(env, 2, 0, 0, names=["random"])
