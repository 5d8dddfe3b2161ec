"""What the benchmark scripts share: the machine's description, the results store (JSON +
Markdown written side by side under benchmarks/results/, atomically), the command line every
script starts from, and `train_or_resume`: train a run folder (resuming it when it exists, so a long
budget can be trained over several sessions), then evaluate it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Sequence

import jax

from metarl.cli import enable_compilation_cache
from metarl.run.folder import write_bytes_atomic, write_json_atomic

# JAX's persistent compilation cache, as for the command line: a rerun of a benchmark (resuming a
# run folder, or another row of the same shapes) skips most of its XLA compilation. Compile times
# in results are therefore those of this invocation (0-1 s when the cache was warm).
enable_compilation_cache()

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def machine() -> dict[str, Any]:
    """The machine and software a result was measured on."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU" + (f" ({cpu})" if cpu else ""),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "load_average_1min": load,
        "commit": commit or None,
    }


def write_results(name: str, data: dict[str, Any], markdown: str, directory: str = RESULTS) -> tuple[str, str]:
    """Write `name.json` (data) and `name.md` (markdown) to `directory`; returns both paths."""
    os.makedirs(directory, exist_ok=True)
    json_path, md_path = os.path.join(directory, f"{name}.json"), os.path.join(directory, f"{name}.md")
    write_json_atomic(json_path, data)
    write_bytes_atomic(md_path, markdown.encode())
    return json_path, md_path


def read_json(path: str) -> Any:
    """The JSON in `path`, or None where there is no file (results accumulate across runs)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def parser(doc: str, positional: str, seeds: int, **defaults: Any) -> argparse.ArgumentParser:
    """The command line the reproduction scripts share: POSITIONAL names (none: all), --list,
    --seeds and --tasks (held-out tasks per evaluation, `defaults.get("tasks", 1000)`)."""
    out = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    out.add_argument(positional, nargs="*", help=f"{positional} to run (none: all)")
    out.add_argument("--list", action="store_true", help=f"list the {positional} and exit")
    out.add_argument("--seeds", type=int, default=seeds, help="training seeds, trained at once")
    out.add_argument("--tasks", type=int, default=defaults.get("tasks", 1000), help="held-out tasks per evaluation")
    return out


def tuning_tasks(env, num: int, seed_base: int):
    """`num` tasks for tuning hyperparameters, sampled from keys PRNGKey(seed_base + i), disjoint
    from the evaluation tasks (sample_tasks(PRNGKey(0)))."""
    keys = jax.numpy.stack([jax.random.PRNGKey(seed_base + i) for i in range(num)])
    return jax.vmap(env.sample_task)(keys)


@dataclasses.dataclass
class Trained:
    """What `train_or_resume` did: the run folder, the host loop's result, whether it resumed, the
    wall time of this session, the training seconds over every session (from metrics.jsonl, so the
    same however often the run was resumed), the held-out learning curve and the final evaluation."""

    out: str
    result: Any
    resumed: bool
    wall_seconds: float
    train_seconds: float
    curve: list[dict[str, Any]]
    summary: dict[str, Any] | None


def learning_curve(out: str) -> list[dict[str, Any]]:
    """The held-out evaluations during training of the run in `out`: env steps, mean total return,
    its interval and the training seconds up to it (evaluation time not counted)."""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        chunks = [json.loads(line) for line in f]
    path = os.path.join(out, "eval", "history.jsonl")
    evals = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
    return [
        {"env_steps": e["env_steps"], "mean": e["mean_total_return"], "ci95": e["ci95"],
         "train_seconds": sum(c["chunk_seconds"] for c in chunks if c["env_steps"] <= e["env_steps"])}
        for e in evals
    ]


def first_reaching(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first point of a learning curve at or above `target` (None: never)."""
    return next((c for c in curve if c["mean"] >= target), None)


def train_or_resume(
    algo,
    out: str,
    steps: int,
    seeds: int = 1,
    eval_points: int = 0,
    tasks: int = 1000,
    baselines: Sequence[str] | None = None,
    command: Sequence[str] | None = None,
) -> Trained:
    """Train `algo` for `steps` env steps per seed in the run folder `out` (resuming it if it has a
    config.json), with `eval_points` held-out evaluations during training (on `tasks` tasks of
    PRNGKey(0), no baselines: the learning curve), then, unless `baselines` is None, evaluate the
    last checkpoint on the same tasks beside `baselines` (`metarl.run.evaluate_run`). A run stopped
    by a signal exits the script: nothing is recorded, and rerunning the same command resumes."""
    from metarl.run import TrainSettings, evaluate_run, train

    resumed = os.path.exists(os.path.join(out, "config.json"))
    spu = algo.steps_per_update
    every = max(spu, steps // eval_points // spu * spu) if eval_points else 0
    start = time.perf_counter()
    settings = TrainSettings(
        total_steps=steps, out_dir=out, seeds=seeds, resume=resumed, eval_every=every, eval_tasks=tasks if eval_points else 0,
        eval_seed=0, eval_baselines=(), quiet=True, command=tuple(command) if command else None,
    )
    result = train(algo, settings)
    wall = time.perf_counter() - start
    if result.interrupted:
        sys.exit(f"stopped; {out} resumes when this command is run again")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        train_seconds = sum(json.loads(line)["chunk_seconds"] for line in f)
    summary = None if baselines is None else evaluate_run(out, tasks=tasks, seed=0, baselines=list(baselines))
    return Trained(out, result, resumed, wall, train_seconds, learning_curve(out), summary)
