"""Held-out evaluation of trained agents, during training and of a saved run.

Every training seed's agent is scored by `metarl.eval.evaluate` on the same held-out tasks with the
same key, beside the chosen classical baselines (common random numbers, as in
`metarl.eval.report`). Tasks are `env.sample_tasks(PRNGKey(eval_seed), tasks)`; training draws its
keys from `fold_in(PRNGKey(seed), TRAIN_STREAM)` (see `metarl.run.settings`), a separate stream, so
evaluation tasks are never training tasks. Each seed is scored through the algorithm's evaluation
hook (`InContextAlgorithm.evaluate`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metarl.errors import CheckpointError, ConfigError, check_int
from metarl.eval import report
from metarl.run import checkpoint as ckpt
from metarl.run import folder
from metarl.run.settings import init_keys


def seed_slice(state: Any, i: int) -> Any:
    """Seed `i`'s train state out of a state stacked over seeds (one compiled program per state
    structure; op by op each leaf shape compiled its own)."""
    return _seed_slice(state, jnp.int32(i))


@jax.jit
def _seed_slice(state: Any, i: jax.Array) -> Any:
    return jax.tree.map(lambda x: x[i], state)


def greedy_agent(algo):
    """The algorithm's in-context agent acting by its most likely action (RL²'s samples by default)."""
    agent = algo.agent()
    return dataclasses.replace(agent, greedy=True) if not getattr(agent, "greedy", True) else agent


def write_trial_videos(algo, state: Any, out_dir: str, env_steps: int, seed: int = 0) -> list[str]:
    """GIFs of one greedy trial of seed 0's agent on a task sampled with PRNGKey(seed), one per
    episode: videos/steps_N_explore.gif and _exploit.gif on a two-phase family (DREAM's grid
    worlds: what the reference writes to visualize/), _episode_K.gif otherwise. Returns the paths."""
    from metarl.envs.render import save_gif, trial_frames
    from metarl.envs.trial import Trial

    env = algo.env
    params = algo.agent_params(seed_slice(state, 0))
    task = jax.tree.map(lambda x: x[0], env.sample_tasks(jax.random.PRNGKey(seed), 1))
    episodes = trial_frames(greedy_agent(algo), params, Trial(env, algo.episodes), task, report.evaluation_key(seed))
    two_phase = getattr(env, "two_phase", False)
    paths = []
    for k, frames in enumerate(episodes):
        name = ("explore" if k == 0 else "exploit" if k == 1 else f"exploit_{k}") if two_phase else f"episode_{k}"
        path = os.path.join(out_dir, "videos", f"steps_{env_steps:012d}_{name}.gif")
        paths.append(str(save_gif(path, frames, frame_ms=300, scale=2)))
    return paths


def episodes_of(algo) -> int:
    """Episodes per evaluated task: the trial's for an in-context algorithm, 1 for a policy (its
    return on each context)."""
    return algo.episodes if algo.in_context else 1


def evaluate_learned(algo, state: Any, seeds: int, tasks: int, seed: int) -> report.AgentResult:
    """Every seed's agent on the same tasks through the algorithm's evaluation hook: an
    AgentResult with returns [seed, task, episode] (an in-context agent's trial; a policy's
    return on each context, one episode)."""
    env, episodes = algo.env, episodes_of(algo)
    task_batch = env.sample_tasks(jax.random.PRNGKey(seed), tasks)
    key = report.evaluation_key(seed)
    per_seed, compile_s, run_s = [], 0.0, 0.0
    for i in range(seeds):
        seed_state = seed_slice(state, i)
        if i == 0 and algo.in_context:  # one compile serves every seed (same shapes)
            params_shape = jax.eval_shape(algo.agent_params, seed_state)  # compiling needs shapes only
            compile_s = report.compile_evaluation(algo.agent(), params_shape, env, task_batch, episodes, key)
        start = time.perf_counter()
        per_seed.append(np.asarray(algo.evaluate(seed_state, key, tasks=task_batch)))
        run_s += time.perf_counter() - start
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
    results = report.Results(env.name, folder.jsonable(env.options()), episodes_of(algo), tasks, seed, agents)
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


def check_baselines(algo, names: Sequence[str] | None) -> list[str]:
    """The baselines to show beside `algo`'s agent (all of the family's for None), each checked
    to exist for the family now, before training, not at the first evaluation."""
    from metarl import baselines as _b

    chosen = baseline_names(algo.env, names) if algo.in_context else []
    for name in chosen:
        _b.baseline_class(name, algo.env.name)
    return chosen


def evaluate_during_training(algo, state, seeds, done, spu, tasks, seed, names, out_dir, writer, cache, log) -> dict[str, Any]:
    """A held-out evaluation at `done` updates: every seed and the baselines (scored once per
    process, `cache`), written to eval/steps_*.{json,md,png} and a line of eval/history.jsonl."""
    learned = evaluate_learned(algo, state, seeds, tasks, seed)
    if names and "results" not in cache:  # baselines do not change: score them once per process
        cache["results"] = report.run_baselines(algo.env, episodes_of(algo), tasks, seed, names)
    extra = {"updates": done, "env_steps": done * spu}
    summary = summarize_with_baselines(algo, learned, cache.get("results"), tasks, seed, extra)
    eval_dir = os.path.join(out_dir, folder.EVAL)
    stem = os.path.join(eval_dir, f"steps_{done * spu:012d}")
    write_summary(summary, stem + ".json", stem + ".md", stem + ".png")
    me = summary["agents"][0]
    line = {
        "updates": done,
        "env_steps": done * spu,
        "mean_total_return": me["mean_total_return"],
        "ci95": me["ci95"],
        "per_seed_mean_total_return": me["per_seed_mean_total_return"],
        "regret": me["regret"],
        "baselines": {a["label"]: a["mean_total_return"] for a in summary["agents"][1:]},
    }
    if "mean_exploit_return" in me:  # two-phase trials: the return that counts
        line["mean_exploit_return"], line["exploit_ci95"] = me["mean_exploit_return"], me["exploit_ci95"]
    if algo.in_context and getattr(algo.env, "two_phase", False):  # DREAM's grid worlds: GIFs of the agent, as the reference's visualize/
        line["videos"] = [os.path.relpath(p, out_dir) for p in write_trial_videos(algo, state, out_dir, done * spu, seed)]
    folder.append_jsonl(os.path.join(eval_dir, "history.jsonl"), line)
    if writer is not None:
        writer.add_scalar("eval/mean_total_return", me["mean_total_return"], done * spu)
        if "mean_exploit_return" in me:
            writer.add_scalar("eval/mean_exploit_return", me["mean_exploit_return"], done * spu)
        if me["regret"] is not None:
            writer.add_scalar("eval/regret", me["regret"]["mean"], done * spu)
    base = ", ".join(f"{a['name']} {a['mean_total_return']:.3f}" for a in summary["agents"][1:])
    log(
        f"eval @ {done * spu:,} steps: {algo.name} {me['mean_total_return']:.3f} "
        f"[{me['ci95'][0]:.3f}, {me['ci95'][1]:.3f}]" + (f"; {base}" if base else "")
    )
    return summary


def load_run(run_dir: str, checkpoint: str | None = None, log=None):
    """A saved run's (config, algorithm, seeds, state, checkpoint header, checkpoint path): its last
    checkpoint that verifies, or `checkpoint`."""
    config = folder.read_config(run_dir)
    algo = folder.build_algorithm(config)
    seeds = int(config["seeds"])
    template = jax.eval_shape(jax.vmap(algo.init), init_keys(int(config["seed"]), seeds))
    if checkpoint is not None:
        state, header = ckpt.load_checkpoint(checkpoint, template, folder.config_hashes(config))
        path = checkpoint
    else:
        directory = os.path.join(run_dir, folder.CHECKPOINTS)
        if ckpt.latest_checkpoint(directory) is None:
            raise CheckpointError(f"run {run_dir} has no checkpoint in {directory}")
        state, header, path, _ = ckpt.load_latest_valid(directory, template, folder.config_hashes(config), log=log)
    return config, algo, seeds, state, header, path


def evaluate_run_contexts(run_dir: str, factor: str | None = None, num: int = 40, episodes: int = 10, seed: int = 0,
                          json_path: str | None = None, md_path: str | None = None, plot_path: str | None = None,
                          checkpoint: str | None = None, log=None) -> dict[str, Any]:
    """Score a saved run of a per-context algorithm on a contextual family's evaluation contexts
    (`evaluation_tasks(factor, num)`: linspace(LOW / 2, HIGH x 2), the other factors at their
    defaults): every seed's greedy return on each, `episodes` episodes per context; per context the
    mean over seeds with a 95% t-interval, and for the contexts inside and outside the training
    range the mean and the interquartile mean over seeds x contexts. Written as JSON, Markdown and a
    PNG (default RUN/eval/contexts_FACTOR.*); returns the summary."""
    from scipy import stats as sps

    from metarl.errors import ConfigError
    from metarl.eval import stats

    check_int("evaluate_run", "num", num, low=2)
    check_int("evaluate_run", "episodes", episodes, low=1)
    config, algo, seeds, state, header, path = load_run(run_dir, checkpoint, log)
    env = algo.env
    if algo.in_context or not hasattr(env, "evaluation_tasks"):
        raise ConfigError(f"--contexts scores a per-context policy on a contextual family; {run_dir} is {algo.name} on {env.name}", "contexts")
    factor = factor or env.factor_ranges[0][0]
    multipliers, tasks, inside = env.evaluation_tasks(factor, num)
    key = report.evaluation_key(seed)
    start = time.perf_counter()
    per_seed = np.stack([np.asarray(algo.evaluate(seed_slice(state, i), key, tasks=tasks, episodes=episodes), np.float64).mean(-1)
                         for i in range(seeds)])  # [seeds, contexts]
    cells = [stats.t_interval(per_seed[:, j]) for j in range(num)]
    parts = {}
    for part, cols in (("inside", inside), ("outside", ~inside)):
        if cols.any():
            x = per_seed[:, cols]
            parts[part] = {"contexts": int(cols.sum()), "mean": float(x.mean()), "iqm": float(sps.trim_mean(x.ravel(), 0.25))}
    low, high = next((lo, hi) for name, _, lo, hi in env.factor_ranges if name == factor)
    summary = {"run": os.path.abspath(run_dir), "checkpoint": os.path.basename(path), "env_steps": header.get("env_steps"),
               "algorithm": algo.name, "family": env.name, "family_options": folder.jsonable(env.options()), "factor": factor,
               "training_range": [low, high], "seeds": seeds, "episodes": episodes, "multipliers": multipliers.tolist(),
               "inside": inside.tolist(), "per_seed": per_seed.tolist(), "mean": [c.mean for c in cells],
               "ci95": [[c.low, c.high] for c in cells], "aggregates": parts, "wall_seconds": time.perf_counter() - start}
    base = os.path.join(run_dir, folder.EVAL, f"contexts_{factor}")
    json_path = json_path or base + ".json"
    md_path = md_path or os.path.splitext(json_path)[0] + ".md"
    plot_path = plot_path or base + ".png"
    for p in (json_path, md_path, plot_path):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    folder.write_json_atomic(json_path, summary)
    lines = [f"# {algo.name} on {env.name}, {factor} contexts ({seeds} seeds, {episodes} episodes per context)", "",
             f"Training range x [{low:g}, {high:g}] of the default; {summary['env_steps']:,} env steps per seed ({summary['checkpoint']}).", "",
             "| contexts | count | mean return | IQM (seeds x contexts) |", "|---|---|---|---|"]
    lines += [f"| {part} the range | {v['contexts']} | {v['mean']:.1f} | {v['iqm']:.1f} |" for part, v in parts.items()]
    lines += ["", "| multiplier | mean return | 95% CI |", "|---|---|---|"]
    lines += [f"| {m:.3f}{'' if ins else ' (out)'} | {c.mean:.1f} | [{c.low:.1f}, {c.high:.1f}] |" for m, ins, c in zip(multipliers, inside, cells)]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(multipliers, summary["mean"], marker=".", label=algo.name)
    ax.fill_between(multipliers, [c.low for c in cells], [c.high for c in cells], alpha=0.2)
    ax.axvspan(low, high, color="grey", alpha=0.12, label="training range")
    ax.set_xlabel(f"{factor} (multiple of the default)")
    ax.set_ylabel("greedy return")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_path, dpi=100)
    plt.close(fig)
    summary["paths"] = {"json": json_path, "markdown": md_path, "plot": plot_path}
    return summary


def evaluate_run(
    run_dir: str,
    tasks: int = 1000,
    seed: int | None = None,
    baselines: Sequence[str] | None = None,
    json_path: str | None = None,
    md_path: str | None = None,
    plot_path: str | None = None,
    checkpoint: str | None = None,
    log=None,
    split: str | None = None,
) -> dict[str, Any]:
    """Score a saved run: rebuild its algorithm from config.json, load its last checkpoint (or
    `checkpoint`), evaluate every seed's agent on `tasks` held-out tasks beside the family's
    baselines (all applicable ones, or `baselines`; `[]` for none) and write the table and plot.
    `split`: for a family with task-id splits (distraction, cooking), draw the tasks from this one
    ("test": the ids training never saw) instead of the run's own.

    Paths default to `run_dir/eval/final.{json,md,png}` (`final_SPLIT.*` with `split`); `seed`
    defaults to the run's eval seed.
    Without `checkpoint`, a corrupt or truncated newest checkpoint is skipped for the newest that
    verifies (each skip is passed to `log`, a callable taking one line, e.g. `print`). Returns the
    summary dict. Raises CheckpointError for a missing folder, no checkpoint that verifies, or a
    mismatched one; ConfigError for bad arguments."""
    check_int("evaluate_run", "tasks", tasks, low=1)
    config, algo, seeds, state, header, path = load_run(run_dir, checkpoint, log)
    if split is not None:
        if not (dataclasses.is_dataclass(algo.env) and any(f.name == "split" for f in dataclasses.fields(algo.env))):
            raise ConfigError(f"{algo.env.name} has no task-id splits; --split applies to families that hold ids out (distraction, cooking)", "split")
        algo = dataclasses.replace(algo, env=dataclasses.replace(algo.env, split=split))
    if seed is None:
        seed = int(config.get("eval", {}).get("seed", config["seed"]))
    check_int("evaluate_run", "seed", seed, low=0)
    names = baseline_names(algo.env, baselines) if algo.in_context else []
    start = time.perf_counter()
    learned = evaluate_learned(algo, state, seeds, tasks, seed)
    base = report.run_baselines(algo.env, episodes_of(algo), tasks, seed, names) if names else None
    extra = {
        "run": os.path.abspath(run_dir),
        "checkpoint": os.path.basename(path),
        "updates": header.get("updates"),
        "env_steps": header.get("env_steps"),
    }
    summary = summarize_with_baselines(algo, learned, base, tasks, seed, extra)
    summary["header"]["wall_seconds"] = time.perf_counter() - start
    eval_dir = os.path.join(run_dir, folder.EVAL)
    stem = "final" if split is None else f"final_{split}"
    if split is not None:
        summary["header"]["split"] = split
    if json_path is None:
        json_path = os.path.join(eval_dir, stem + ".json")
    if md_path is None:
        md_path = os.path.splitext(json_path)[0] + ".md"
    if plot_path is None:
        plot_path = os.path.join(eval_dir, stem + ".png")
    write_summary(summary, json_path, md_path, plot_path)
    return summary


__all__ = ["check_baselines", "evaluate_during_training", "evaluate_run", "evaluate_run_contexts", "load_run", "evaluate_learned", "summarize_with_baselines", "write_summary"]
