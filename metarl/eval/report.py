"""Evaluate agents on shared tasks and report: a JSON summary, a Markdown table, a PNG plot.

    results = run_baselines(env, episodes=10, tasks=1000, seed=0)       # every applicable baseline
    summary = summarize(results)                                       # JSON-able dict
    write_json(summary, "eval/baselines.json"); write_markdown(summary, "eval/baselines.md")
    plot_curves(summary, "eval/baselines.png")

Every agent is scored on the same tasks, `env.sample_tasks(jax.random.PRNGKey(seed), tasks)`, and
with the same evaluation key, so environment noise is shared between agents (common random numbers:
regret against the Oracle is then measured with less noise). Intervals follow `metarl.eval.stats`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Sequence

import jax
import numpy as np

from metarl import baselines
from metarl.agents import Agent
from metarl.envs.base import Environment
from metarl.envs.trial import Trial
from metarl.errors import ConfigError, check_int
from metarl.eval import stats
from metarl.eval.evaluate import _evaluate_keys, evaluate

__all__ = [
    "AgentResult",
    "Results",
    "evaluate_timed",
    "run_agents",
    "run_baselines",
    "summarize",
    "write_json",
    "markdown_table",
    "write_markdown",
    "plot_curves",
]

#: name under which the Oracle registers; its returns are the reference for regret
ORACLE = "oracle"


@dataclasses.dataclass
class AgentResult:
    """One agent's evaluation: returns [task, episode] (or [seed, task, episode]) and timings."""

    name: str
    label: str
    hparams: dict[str, Any]
    returns: np.ndarray
    compile_seconds: float = 0.0
    run_seconds: float = 0.0


@dataclasses.dataclass
class Results:
    """Several agents evaluated on the same tasks of one family."""

    family: str
    options: dict[str, Any]
    episodes: int
    tasks: int
    seed: int
    agents: list[AgentResult]
    wall_seconds: float = 0.0

    def oracle(self) -> AgentResult | None:
        return next((a for a in self.agents if a.name == ORACLE), None)


def evaluation_key(seed: int) -> jax.Array:
    """The key of the agents' and environments' randomness (the tasks use `PRNGKey(seed)` itself)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def compile_evaluation(agent: Agent, agent_params: Any, env: Environment, tasks: Any, episodes: int, key: jax.Array) -> float:
    """Compile `evaluate`'s program for these shapes ahead of time (`lower().compile()`, which
    fills jit's cache); returns the seconds it took."""
    num = jax.tree.leaves(tasks)[0].shape[0]
    start = time.perf_counter()
    trial = Trial(env, episodes, expose_context=agent.reads_context)
    _evaluate_keys.lower(agent, trial, agent_params, tasks, jax.random.split(key, num)).compile()
    return time.perf_counter() - start


def evaluate_timed(
    agent: Agent, agent_params: Any, env: Environment, tasks: Any, episodes: int, key: jax.Array
) -> tuple[np.ndarray, float, float]:
    """`evaluate(...)` with its compile and run times measured separately.

    Returns (returns[task, episode], compile_seconds, run_seconds). The program is compiled ahead of
    time (`lower().compile()`, which fills jit's cache), then `evaluate` runs it; run time includes
    copying the returns to the host."""
    compile_seconds = compile_evaluation(agent, agent_params, env, tasks, episodes, key)
    start = time.perf_counter()
    returns = evaluate(agent, agent_params, env, tasks, episodes, key)
    return returns, compile_seconds, time.perf_counter() - start


def run_agents(
    env: Environment, episodes: int, tasks: int, seed: int, agents: Sequence[tuple[Agent, Any]]
) -> Results:
    """Evaluate `(agent, agent_params)` pairs on the same `tasks` tasks of `env` (see module doc)."""
    check_int("run_agents", "episodes", episodes, low=1)
    check_int("run_agents", "tasks", tasks, low=1)
    check_int("run_agents", "seed", seed, low=0)
    start = time.perf_counter()
    task_batch = env.sample_tasks(jax.random.PRNGKey(seed), tasks)
    key = evaluation_key(seed)
    out = []
    for agent, params in agents:
        returns, compile_s, run_s = evaluate_timed(agent, params, env, task_batch, episodes, key)
        out.append(AgentResult(agent.name, agent.label(), _jsonable(agent.hparams()), returns, compile_s, run_s))
    return Results(env.name, _jsonable(env.options()), episodes, tasks, seed, out, time.perf_counter() - start)


def run_baselines(
    env: Environment, episodes: int, tasks: int, seed: int, names: Sequence[str] | None = None
) -> Results:
    """Evaluate every baseline applicable to `env`'s family (or the ones in `names`, in that
    order), each with its tuned defaults for this setting, on the same tasks.

    Unknown or inapplicable names raise `ConfigError` before anything runs."""
    check_int("run_baselines", "episodes", episodes, low=1)
    check_int("run_baselines", "tasks", tasks, low=1)
    check_int("run_baselines", "seed", seed, low=0)
    chosen = list(baselines.names(env.name)) if names is None else list(names)
    if not chosen:
        raise ConfigError(f"no baselines chosen for task family {env.name!r}")
    duplicates = sorted({n for n in chosen if chosen.count(n) > 1})
    if duplicates:
        raise ConfigError(f"baseline {', '.join(map(repr, duplicates))} chosen twice")
    agents = [(baselines.make(name, env, episodes), None) for name in chosen]  # validates every name first
    return run_agents(env, episodes, tasks, seed, agents)


# ---------------------------------------------------------------------------------------------
# the summary (what every writer reads)
def summarize(results: Results, pooled: bool = False) -> dict[str, Any]:
    """A JSON-able summary: a header and, per agent, its mean total return with a 95% interval,
    the per-episode curve, and the regret against the Oracle when an Oracle was evaluated."""
    oracle = results.oracle()
    seeds = stats.as_seed_task_episode(results.agents[0].returns).shape[0] if results.agents else 1
    header = {
        "family": results.family,
        "options": results.options,
        "episodes": results.episodes,
        "tasks": results.tasks,
        "seed": results.seed,
        "training_seeds": seeds,
        "interval": (
            "95% Student-t interval over tasks"
            if seeds == 1
            else ("95% Student-t interval over seeds x tasks, pooled" if pooled else "95% Student-t interval over per-seed means")
        ),
        "regret": "oracle total return minus agent total return, per task" if oracle else None,
        "wall_seconds": results.wall_seconds,
    }
    two_phase = _two_phase(results.family) and results.episodes >= 2
    if two_phase:
        header["exploitation"] = "two-phase trials: episode 0 explores; the exploitation return sums episodes >= 1"
    agents = []
    for a in results.agents:
        total = stats.total_return(a.returns, pooled)
        curve = stats.episode_curve(a.returns, pooled)
        entry = {
            "name": a.name,
            "label": a.label,
            "hparams": a.hparams,
            "mean_total_return": total.mean,
            "ci95": [total.low, total.high],
            "curve": {
                "mean": [c.mean for c in curve],
                "ci95_low": [c.low for c in curve],
                "ci95_high": [c.high for c in curve],
            },
            "regret": None,
            "compile_seconds": a.compile_seconds,
            "run_seconds": a.run_seconds,
        }
        if two_phase:
            exploit = stats.total_return(np.asarray(a.returns)[..., 1:], pooled)
            entry["mean_exploit_return"], entry["exploit_ci95"] = exploit.mean, [exploit.low, exploit.high]
        if oracle is not None:
            reg = stats.regret(a.returns, oracle.returns, pooled)
            entry["regret"] = {"mean": reg.mean, "ci95": [reg.low, reg.high]}
        agents.append(entry)
    return {"header": header, "agents": agents}


def _two_phase(family: str) -> bool:
    from metarl.envs.registry import family_class

    try:
        return bool(getattr(family_class(family), "two_phase", False))
    except Exception:  # noqa: BLE001  (a summary of an unknown family: no exploitation column)
        return False


def _jsonable(value: Any) -> Any:
    """Plain Python numbers/lists for numpy and JAX scalars or arrays (json cannot write them)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(value).tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _ensure_parent(path: str | os.PathLike) -> None:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)


def write_json(summary: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the summary as JSON (strict: no NaN), atomically (a reader never sees half a file)."""
    _ensure_parent(path)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        json.dump(_jsonable(summary), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "nan"


def table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Column names and formatted rows (one per agent), shared by the Markdown and terminal tables."""
    has_regret = any(a["regret"] is not None for a in summary["agents"])
    has_exploit = any("mean_exploit_return" in a for a in summary["agents"])
    columns = (["agent", "mean total return", "95% CI"] + (["exploitation return", "95% CI"] if has_exploit else [])
               + (["regret vs Oracle"] if has_regret else []) + ["compile s", "run s"])
    rows = []
    for a in summary["agents"]:
        row = [a["label"], _fmt(a["mean_total_return"]), f"[{_fmt(a['ci95'][0])}, {_fmt(a['ci95'][1])}]"]
        if has_exploit:
            row += [_fmt(a["mean_exploit_return"]), f"[{_fmt(a['exploit_ci95'][0])}, {_fmt(a['exploit_ci95'][1])}]"]
        if has_regret:
            r = a["regret"]
            row.append("" if r is None else f"{_fmt(r['mean'])} [{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}]")
        row += [_fmt(a["compile_seconds"], 1), _fmt(a["run_seconds"], 2)]
        rows.append(row)
    return columns, rows


def title(summary: dict[str, Any]) -> str:
    h = summary["header"]
    opts = ", ".join(f"{k}={v}" for k, v in h["options"].items())
    return f"{h['family']}({opts}), {h['episodes']} episodes per trial, {h['tasks']} tasks, seed {h['seed']}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table with a one-line caption."""
    columns, rows = table_rows(summary)
    lines = [f"{title(summary)}; {summary['header']['interval']}.", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_markdown(summary: dict[str, Any], path: str | os.PathLike) -> None:
    _ensure_parent(path)
    with open(path, "w") as f:
        f.write(markdown_table(summary))


def plot_curves(summary: dict[str, Any], path: str | os.PathLike) -> None:
    """PNG of every agent's per-episode return (mean and 95% band) on one figure."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; safe to call repeatedly
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a in summary["agents"]:
        c = a["curve"]
        x = np.arange(1, len(c["mean"]) + 1)
        (line,) = ax.plot(x, c["mean"], label=a["label"], marker="o" if len(x) <= 20 else None, markersize=3)
        ax.fill_between(x, c["ci95_low"], c["ci95_high"], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("episode index in the trial")
    ax.set_ylabel("mean episode return")
    ax.set_title(title(summary), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _ensure_parent(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
