"""Held-out evaluation of trained agents, during training and of a saved run.

Every training seed's agent is scored by `metarl.eval.evaluate` on the same held-out tasks with the
same key, beside the chosen classical baselines (common random numbers, as in
`metarl.eval.report`). Tasks are `env.sample_tasks(PRNGKey(eval_seed), tasks)`; training draws its
keys from `fold_in(PRNGKey(seed), TRAIN_STREAM)` (see `metarl.run.loop`), a separate stream, so
evaluation tasks are never training tasks.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import jax
import numpy as np

from metarl.errors import CheckpointError, check_int
from metarl.eval import report
from metarl.eval.evaluate import evaluate
from metarl.run import checkpoint as ckpt
from metarl.run import folder


def seed_slice(state: Any, i: int) -> Any:
    """Seed `i`'s train state out of a state stacked over seeds."""
    return jax.tree.map(lambda x: x[i], state)


def evaluate_learned(algo, state: Any, seeds: int, tasks: int, seed: int) -> report.AgentResult:
    """Every seed's agent on the same tasks: an AgentResult with returns [seed, task, episode]."""
    env, episodes = algo.env, algo.episodes
    task_batch = env.sample_tasks(jax.random.PRNGKey(seed), tasks)
    key = report.evaluation_key(seed)
    agent = algo.agent()
    per_seed, compile_s, run_s = [], 0.0, 0.0
    for i in range(seeds):
        params = algo.agent_params(seed_slice(state, i))
        if i == 0:  # one compile serves every seed (same shapes)
            returns, compile_s, run_s = report.evaluate_timed(agent, params, env, task_batch, episodes, key)
        else:
            start = time.perf_counter()
            returns = evaluate(agent, params, env, task_batch, episodes, key)
            run_s += time.perf_counter() - start
        per_seed.append(returns)
    label = f"{algo.name} (trained" + (f", {seeds} seeds)" if seeds > 1 else ")")
    return report.AgentResult(
        algo.name, label, folder.jsonable(algo.config), np.stack(per_seed), compile_s, run_s
    )


def summarize_with_baselines(
    algo, learned: report.AgentResult, baseline_results: report.Results | None, tasks: int, seed: int, extra: dict
) -> dict[str, Any]:
    """One summary (report.summarize's format) of the learned agent followed by the baselines,
    with each seed's mean total return and `extra` (training progress) in the header."""
    env = algo.env
    agents = [learned] + (list(baseline_results.agents) if baseline_results is not None else [])
    results = report.Results(env.name, folder.jsonable(env.options()), algo.episodes, tasks, seed, agents)
    summary = report.summarize(results)
    summary["header"].update(extra)
    summary["agents"][0]["per_seed_mean_total_return"] = [float(r.sum(-1).mean()) for r in learned.returns]
    return summary


def write_summary(summary: dict[str, Any], json_path: str | None, md_path: str | None, plot_path: str | None) -> None:
    if json_path:
        report.write_json(summary, json_path)
    if md_path:
        report.write_markdown(summary, md_path)
    if plot_path:
        report.plot_curves(summary, plot_path)


def baseline_names(env, names: Sequence[str] | None) -> list[str]:
    from metarl import baselines

    return list(baselines.names(env.name)) if names is None else list(names)


def evaluate_run(
    run_dir: str,
    tasks: int = 1000,
    seed: int | None = None,
    baselines: Sequence[str] | None = None,
    json_path: str | None = None,
    md_path: str | None = None,
    plot_path: str | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Score a saved run: rebuild its algorithm from config.json, load its last checkpoint (or
    `checkpoint`), evaluate every seed's agent on `tasks` held-out tasks beside the family's
    baselines (all applicable ones, or `baselines`; `[]` for none) and write the table and plot.

    Paths default to `run_dir/eval/final.{json,md,png}`; `seed` defaults to the run's eval seed.
    Returns the summary dict. Raises CheckpointError for a missing folder or a missing, corrupt or
    mismatched checkpoint; ConfigError for bad arguments."""
    check_int("evaluate_run", "tasks", tasks, low=1)
    config = folder.read_config(run_dir)
    algo = folder.build_algorithm(config)
    seeds = int(config["seeds"])
    if seed is None:
        seed = int(config.get("eval", {}).get("seed", config["seed"]))
    check_int("evaluate_run", "seed", seed, low=0)
    path = checkpoint or ckpt.latest_checkpoint(os.path.join(run_dir, folder.CHECKPOINTS))
    if path is None:
        raise CheckpointError(f"run {run_dir} has no checkpoint in {os.path.join(run_dir, folder.CHECKPOINTS)}")
    from metarl.run.loop import init_keys  # loop imports this module

    template = jax.eval_shape(jax.vmap(algo.init), init_keys(int(config["seed"]), seeds))
    state, header = ckpt.load_checkpoint(path, template, folder.config_hashes(config))
    names = baseline_names(algo.env, baselines)
    start = time.perf_counter()
    learned = evaluate_learned(algo, state, seeds, tasks, seed)
    base = report.run_baselines(algo.env, algo.episodes, tasks, seed, names) if names else None
    extra = {
        "run": os.path.abspath(run_dir),
        "checkpoint": os.path.basename(path),
        "updates": header.get("updates"),
        "env_steps": header.get("env_steps"),
    }
    summary = summarize_with_baselines(algo, learned, base, tasks, seed, extra)
    summary["header"]["wall_seconds"] = time.perf_counter() - start
    eval_dir = os.path.join(run_dir, folder.EVAL)
    if json_path is None:
        json_path = os.path.join(eval_dir, "final.json")
    if md_path is None:
        md_path = os.path.splitext(json_path)[0] + ".md"
    if plot_path is None:
        plot_path = os.path.join(eval_dir, "final.png")
    write_summary(summary, json_path, md_path, plot_path)
    return summary


__all__ = ["evaluate_run", "evaluate_learned", "summarize_with_baselines", "write_summary"]
