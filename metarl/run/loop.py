"""The host loop: every algorithm trains through `train`, which owns all I/O.

`train(algo, seeds, total_steps, out_dir)`:

1. builds `seeds` independent train states stacked on a leading axis, `jax.vmap(algo.init)` over
   keys `fold_in(fold_in(PRNGKey(seed), TRAIN_STREAM), i)` (so seed i of a 3-seed run is the same
   run as seed i of a 5-seed run), or loads them from the last checkpoint (`resume=True`);
2. repeatedly runs one jitted *chunk*: `n` updates of `jax.vmap(algo.update)` in a device loop,
   with the state buffers donated; it returns the new state, the metrics summed over the chunk
   (per seed) and, per seed, the first update whose loss metrics or state were not finite;
3. between chunks, does all I/O: a line of `metrics.jsonl` (means over the chunk, per seed and
   averaged), TensorBoard scalars, the progress bar, held-out evaluation every `eval_every` env
   steps (and at the end), checkpoints every `checkpoint_every` env steps, every
   `checkpoint_seconds` and at the end.

The chunk's length is a traced argument (`lax.fori_loop` with a dynamic trip count, which XLA runs
as the same while loop `lax.scan` lowers to): one compilation serves every chunk length, so the
loop can size chunks to take about `chunk_seconds` from measured speed, end them exactly at
evaluation and checkpoint boundaries, and a run's numbers do not depend on where chunks end. This
is what makes `resume=True` reproduce an uninterrupted run exactly: the PRNG key is in the train
state, the checkpoint holds the whole state, and every update runs the same compiled code.

`--steps` counts environment steps per seed; steps/s in the progress bar count all seeds.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metarl.errors import CheckpointError, ConfigError, MetarlError, check_int
from metarl.run import checkpoint as ckpt
from metarl.run import folder

#: fold_in constant separating training keys from evaluation keys (PRNGKey(eval_seed) itself)
TRAIN_STREAM = 0x7472_6E  # "trn"


class TrainingDiverged(MetarlError, RuntimeError):
    """A loss metric (or the train state) became NaN or infinite; the run stopped."""


@dataclasses.dataclass
class TrainResult:
    """What `train` returns. `state` is the train state stacked over seeds."""

    run_dir: str
    state: Any
    updates: int  #: updates done per seed
    env_steps: int  #: environment steps per seed
    checkpoint: str | None  #: the last checkpoint written (or resumed from)
    metrics: dict[str, float]  #: the last chunk's metrics, averaged over seeds
    compile_seconds: float
    train_seconds: float  #: wall time in chunks (device compute)
    host_seconds: float  #: wall time between chunks (logging, progress; not eval or checkpoints)
    eval_seconds: float
    checkpoint_seconds: float
    chunks: int
    interrupted: bool = False


def init_keys(seed: int, seeds: int) -> jax.Array:
    """[seeds, 2] uint32 keys, one per training seed, from a stream disjoint from evaluation's."""
    root = jax.random.fold_in(jax.random.PRNGKey(seed), TRAIN_STREAM)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(seeds, dtype=jnp.uint32))


def _loss_keys(metric_names: Sequence[str]) -> list[str]:
    keys = [k for k in metric_names if "loss" in k]
    return keys or list(metric_names)


@functools.partial(jax.jit, static_argnames=("algo",))
def init_states(algo, keys: jax.Array) -> Any:
    """`jax.vmap(algo.init)(keys)`: the train states of every seed, stacked on axis 0."""
    return jax.vmap(algo.init)(keys)


def metric_names(algo, state_shape: Any) -> tuple[list[str], list[str]]:
    """(every metric name, the names checked for NaN/Inf: those with "loss" in them, else all)."""
    _, metric_shape = jax.eval_shape(jax.vmap(algo.update), state_shape)
    names = sorted(metric_shape)
    return names, _loss_keys(names)


@functools.partial(jax.jit, static_argnames=("algo",), donate_argnames=("state",))
def run_chunk(algo, state: Any, num_updates: jax.Array) -> tuple[Any, dict[str, jax.Array], jax.Array]:
    """`num_updates` updates of every seed: (state, metric sums {name: [seeds]}, first_bad [seeds]).

    `first_bad[i]` is the index (within the chunk) of the first update after which seed i had a
    non-finite loss metric or state leaf, -1 if none. `algo` is static (a frozen, hashable
    dataclass), so every run of the same algorithm in a process shares one compilation."""
    vupdate = jax.vmap(algo.update)
    names, check_keys = metric_names(algo, state)
    seeds = jax.tree.leaves(state)[0].shape[0]

    def per_seed(x):  # [seeds, ...] -> [seeds]
        x = jnp.asarray(x, jnp.float32)
        return x.reshape(x.shape[0], -1).mean(axis=1)

    def all_finite(state, metrics):
        ok = jnp.ones((seeds,), bool)
        for k in check_keys:
            ok &= jnp.isfinite(per_seed(metrics[k]))
        for leaf in jax.tree.leaves(state):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                ok &= jnp.all(jnp.isfinite(leaf.reshape(seeds, -1)), axis=1)
        return ok

    def body(i, carry):
        state, sums, first_bad = carry
        state, metrics = vupdate(state)
        sums = {k: sums[k] + per_seed(metrics[k]) for k in names}
        first_bad = jnp.where((first_bad < 0) & ~all_finite(state, metrics), i, first_bad)
        return state, sums, first_bad

    sums = {k: jnp.zeros((seeds,), jnp.float32) for k in names}
    first_bad = jnp.full((seeds,), -1, jnp.int32)
    return jax.lax.fori_loop(0, num_updates, body, (state, sums, first_bad))


class _Progress:
    """A rich progress bar when the output is a terminal; otherwise a line every ~30 s."""

    def __init__(self, enabled: bool | None, total: int, done: int, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.last_line = 0.0
        if quiet:
            return
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.completed:,}/{task.total:,} steps"),
                TextColumn("{task.fields[sps]}"),
                TextColumn("{task.fields[ret]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),  # stdout stays for results (tables)
                transient=False,
            )
            self.task = self.bar.add_task("train", total=total, completed=done, sps="", ret="")
            self.bar.start()

    def update(self, done: int, total: int, sps: float, ret: tuple[str, float] | None):
        ret_text = f"{ret[0]} {ret[1]:.3f}" if ret else ""
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total, sps=f"{sps:,.0f} steps/s", ret=ret_text)
        elif not self.quiet and (time.monotonic() - self.last_line > 30 or done >= total):
            self.last_line = time.monotonic()
            print(f"train: {done:,}/{total:,} steps, {sps:,.0f} steps/s {ret_text}", file=sys.stderr, flush=True)

    def log(self, text: str):
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


class _StopRequest:
    """SIGINT/SIGTERM: finish the running chunk, write a checkpoint, stop. A second signal stops
    at once (the last checkpoint stays intact)."""

    def __init__(self):
        self.signal: int | None = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print("\nstopping after this chunk (a checkpoint will be written); press Ctrl-C again to stop now", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def _boundary(done: int, every: int | None) -> int | None:
    """The next multiple of `every` after `done` (None when `every` is None)."""
    if not every:
        return None
    return (done // every + 1) * every


def train(
    algo,
    seeds: int,
    total_steps: int,
    out_dir: str,
    resume: bool = False,
    seed: int = 0,
    eval_every: int | None = None,
    eval_tasks: int = 200,
    eval_seed: int | None = None,
    eval_baselines: Sequence[str] | None = None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 300.0,
    keep_checkpoints: int = 3,
    chunk_seconds: float = 5.0,
    max_chunk_updates: int = 10_000,
    chunk_updates: int | None = None,
    progress: bool | None = None,
    quiet: bool = False,
    tensorboard: bool = True,
    command: Sequence[str] | None = None,
) -> TrainResult:
    """Train `seeds` independent copies of `algo` for `total_steps` environment steps each,
    writing the run folder `out_dir` (see `metarl.run.folder`).

    eval_every: env steps between held-out evaluations (None: only at the end; 0: never).
    eval_tasks: held-out tasks per evaluation (0: no evaluation). eval_seed: seed of the held-out
      tasks (default `seed`; training keys come from a separate stream). eval_baselines: names of
      baselines shown beside the agent (None: every baseline of the family; []: none).
    checkpoint_every: env steps between checkpoints (None: by time only); checkpoint_seconds: at
      most this long between checkpoints; one is always written at the end.
    chunk_seconds: target wall time of one chunk (chunks are sized from measured speed);
      chunk_updates: a fixed chunk length instead.
    resume: continue `out_dir` from its last checkpoint (same algorithm, config, seeds, seed);
      `total_steps` may be larger than the original budget.

    Raises ConfigError (bad arguments, existing folder without resume), CheckpointError (nothing
    or a bad checkpoint to resume) and TrainingDiverged (non-finite loss; the last checkpoint,
    written before the bad chunk, stays loadable)."""
    check_int("train", "seeds", seeds, low=1)
    check_int("train", "total_steps", total_steps, low=1)
    check_int("train", "seed", seed, low=0)
    check_int("train", "eval_tasks", eval_tasks, low=0)
    check_int("train", "keep_checkpoints", keep_checkpoints, low=1)
    if eval_every is not None:
        check_int("train", "eval_every", eval_every, low=0)
    if checkpoint_every is not None:
        check_int("train", "checkpoint_every", checkpoint_every, low=1)
    if chunk_updates is not None:
        check_int("train", "chunk_updates", chunk_updates, low=1)
    check_int("train", "max_chunk_updates", max_chunk_updates, low=1)
    eval_seed = seed if eval_seed is None else eval_seed
    check_int("train", "eval_seed", eval_seed, low=0)
    spu = int(algo.steps_per_update)
    total_updates = math.ceil(total_steps / spu)
    to_updates = lambda steps: None if not steps else max(1, math.ceil(steps / spu))  # noqa: E731
    evaluating = eval_tasks > 0 and eval_every != 0
    eval_every_updates = to_updates(eval_every) if evaluating else None
    ckpt_every_updates = to_updates(checkpoint_every)
    if evaluating:
        from metarl.run.evaluation import baseline_names

        eval_baselines = baseline_names(algo.env, eval_baselines)
        from metarl import baselines as _b

        for name in eval_baselines:  # fail before training, not at the first evaluation
            _b.baseline_class(name, algo.env.name)

    config = folder.run_config(
        algo,
        seeds,
        seed,
        total_steps,
        total_updates=total_updates,
        eval={"every": eval_every, "tasks": eval_tasks, "seed": eval_seed, "baselines": eval_baselines},
        checkpoint={"every": checkpoint_every, "seconds": checkpoint_seconds, "keep": keep_checkpoints},
        command=list(command) if command is not None else None,
    )
    chash = folder.config_hash(config)
    config_path = os.path.join(out_dir, folder.CONFIG)
    ckpt_dir = os.path.join(out_dir, folder.CHECKPOINTS)
    metrics_path = os.path.join(out_dir, folder.METRICS)

    keys = init_keys(seed, seeds)
    state_shape = jax.eval_shape(jax.vmap(algo.init), keys)
    start_updates, last_ckpt_path = 0, None
    if resume:
        saved = folder.read_config(out_dir)
        if folder.config_hash(saved) != chash:
            diffs = [k for k in folder.IDENTITY_KEYS if folder.jsonable(saved.get(k)) != config[k]]
            raise CheckpointError(
                f"cannot resume {out_dir}: it was run with a different {', '.join(diffs) or 'configuration'} "
                f"(see its {folder.CONFIG}); resume with the same algorithm, config, family, episodes, seeds and seed"
            )
        last_ckpt_path = ckpt.latest_checkpoint(ckpt_dir)
        if last_ckpt_path is None:
            state = None  # killed before its first checkpoint: start again from the beginning
        else:
            state, header = ckpt.load_checkpoint(last_ckpt_path, state_shape, folder.config_hashes(saved))
            start_updates = int(header["updates"])
        config["created"] = saved.get("created", folder.now())
        config["resumed"] = saved.get("resumed", []) + [{"time": folder.now(), "updates": start_updates}]
        folder.truncate_jsonl(metrics_path, start_updates)
        folder.truncate_jsonl(os.path.join(out_dir, folder.EVAL, "history.jsonl"), start_updates)
    else:
        if os.path.exists(config_path):
            raise ConfigError(
                f"run folder {out_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        state = None
        config["created"] = folder.now()
    os.makedirs(out_dir, exist_ok=True)
    folder.write_json_atomic(config_path, config)
    if state is None:
        state = init_states(algo, keys)

    bar = _Progress(progress, total_updates * spu, start_updates * spu, quiet)
    if resume:
        bar.log(f"resuming {out_dir} at update {start_updates:,} ({start_updates * spu:,} env steps)")
    names, check_keys = metric_names(algo, state_shape)
    ret_key = next((k for k in names if "return" in k), None)
    t0 = time.perf_counter()
    try:
        compiled = run_chunk.lower(algo, state, jnp.int32(1)).compile()  # cached per algorithm and shapes
    except BaseException:
        bar.close()
        raise
    compile_seconds = time.perf_counter() - t0
    writer = None
    if tensorboard:
        from tensorboardX import SummaryWriter

        purge = start_updates * spu if resume and start_updates > 0 else None
        writer = SummaryWriter(logdir=out_dir, purge_step=purge, flush_secs=10)
    bar.log(f"compiled {seeds} x {algo.name} update in {compile_seconds:.1f} s; {spu:,} env steps per update and seed")

    done = start_updates
    times = {"train": 0.0, "host": 0.0, "eval": 0.0, "checkpoint": 0.0}
    last_ckpt_time = time.monotonic()
    last_ckpt_updates = start_updates
    per_update_seconds, last_n = None, 1
    baseline_cache: dict[str, Any] = {}
    last_means: dict[str, float] = {}
    chunks = 0
    interrupted = False

    def write_checkpoint():
        nonlocal last_ckpt_path, last_ckpt_time, last_ckpt_updates
        t = time.perf_counter()
        header = {"updates": done, "env_steps": done * spu, "seeds": seeds, "config_hash": chash, "time": folder.now()}
        last_ckpt_path = ckpt.save_checkpoint(ckpt_dir, state, header, keep=keep_checkpoints)
        last_ckpt_time, last_ckpt_updates = time.monotonic(), done
        times["checkpoint"] += time.perf_counter() - t

    try:
        with _StopRequest() as stop:
            while done < total_updates:
                # Chunk length: sized to the target time, cut at evaluation/checkpoint boundaries.
                if chunk_updates is not None:
                    n = chunk_updates
                elif per_update_seconds is None:
                    n = 1  # the first chunk measures speed
                else:  # grow at most 8x per chunk, in case the first timings were not representative
                    n = int(max(1, min(max_chunk_updates, 8 * last_n, chunk_seconds / per_update_seconds)))
                stops = [total_updates, _boundary(done, eval_every_updates), _boundary(done, ckpt_every_updates)]
                n = max(1, min([n] + [b - done for b in stops if b is not None]))

                t = time.perf_counter()
                state, sums, first_bad = compiled(state, jnp.int32(n))
                sums, first_bad = jax.device_get((sums, first_bad))
                chunk_time = time.perf_counter() - t
                times["train"] += chunk_time
                per_update_seconds, last_n = chunk_time / n, n
                chunks += 1
                t_host = time.perf_counter()
                done += n
                per_seed = {k: (np.asarray(v, np.float64) / n).tolist() for k, v in sums.items()}
                means = {k: float(np.mean(v)) for k, v in per_seed.items()}
                last_means = means
                sps = n * spu * seeds / chunk_time
                bad = [i for i in range(seeds) if first_bad[i] >= 0]
                record = {
                    "updates": done,
                    "env_steps": done * spu,
                    "time": folder.now(),
                    "chunk_updates": n,
                    "chunk_seconds": round(chunk_time, 4),
                    "steps_per_second": round(sps, 1),
                    "metrics": means,
                    "per_seed": per_seed,
                }
                if bad:
                    record["nonfinite_seeds"] = bad
                folder.append_jsonl(metrics_path, record)
                if writer is not None:
                    step = done * spu
                    for k, v in means.items():
                        writer.add_scalar(f"train/{k}", v, step)
                        if seeds > 1:
                            for i, vi in enumerate(per_seed[k]):
                                writer.add_scalar(f"seed{i}/{k}", vi, step)
                    writer.add_scalar("speed/steps_per_second", sps, step)
                if bad:
                    i = bad[0]
                    first = done - n + int(first_bad[i]) + 1
                    nonfinite = [k for k in check_keys if not math.isfinite(per_seed[k][i])]
                    what = f"loss metric(s) {', '.join(nonfinite)}" if nonfinite else "train state"
                    where = (
                        f"the last good checkpoint, {last_ckpt_path}, is intact (update {last_ckpt_updates:,})"
                        if last_ckpt_path
                        else "no checkpoint was written before it"
                    )
                    raise TrainingDiverged(
                        f"training diverged: non-finite {what} in seed {i} at update {first:,} "
                        f"(env step {first * spu:,}); the run stopped and {where}; "
                        "lower the learning rate or check the algorithm's config"
                    )
                bar.update(done * spu, total_updates * spu, sps, (ret_key, means[ret_key]) if ret_key else None)
                times["host"] += time.perf_counter() - t_host

                finished = done >= total_updates
                due = (
                    finished
                    or stop.signal is not None
                    or (ckpt_every_updates and done % ckpt_every_updates == 0)
                    or time.monotonic() - last_ckpt_time >= checkpoint_seconds
                )
                if due and done > last_ckpt_updates:
                    write_checkpoint()
                if evaluating and (finished or (eval_every_updates and done % eval_every_updates == 0)):
                    t = time.perf_counter()
                    _evaluate_during_training(
                        algo, state, seeds, done, spu, eval_tasks, eval_seed, eval_baselines, out_dir, writer, baseline_cache, bar
                    )
                    times["eval"] += time.perf_counter() - t
                if stop.signal is not None:
                    interrupted = True
                    bar.log(f"stopped at update {done:,}; checkpoint {last_ckpt_path}; continue with --resume")
                    break
    finally:
        bar.close()
        if writer is not None:
            writer.close()

    return TrainResult(
        run_dir=out_dir,
        state=state,
        updates=done,
        env_steps=done * spu,
        checkpoint=last_ckpt_path,
        metrics=last_means,
        compile_seconds=compile_seconds,
        train_seconds=times["train"],
        host_seconds=times["host"],
        eval_seconds=times["eval"],
        checkpoint_seconds=times["checkpoint"],
        chunks=chunks,
        interrupted=interrupted,
    )


def _evaluate_during_training(algo, state, seeds, done, spu, tasks, seed, names, out_dir, writer, cache, bar):
    from metarl.eval import report
    from metarl.run import evaluation

    learned = evaluation.evaluate_learned(algo, state, seeds, tasks, seed)
    if names and "results" not in cache:  # baselines do not change: score them once per process
        cache["results"] = report.run_baselines(algo.env, algo.episodes, tasks, seed, names)
    extra = {"updates": done, "env_steps": done * spu}
    summary = evaluation.summarize_with_baselines(algo, learned, cache.get("results"), tasks, seed, extra)
    eval_dir = os.path.join(out_dir, folder.EVAL)
    stem = os.path.join(eval_dir, f"steps_{done * spu:012d}")
    evaluation.write_summary(summary, stem + ".json", stem + ".md", stem + ".png")
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
    folder.append_jsonl(os.path.join(eval_dir, "history.jsonl"), line)
    if writer is not None:
        writer.add_scalar("eval/mean_total_return", me["mean_total_return"], done * spu)
        if me["regret"] is not None:
            writer.add_scalar("eval/regret", me["regret"]["mean"], done * spu)
    base = ", ".join(f"{a['name']} {a['mean_total_return']:.3f}" for a in summary["agents"][1:])
    bar.log(
        f"eval @ {done * spu:,} steps: {algo.name} {me['mean_total_return']:.3f} "
        f"[{me['ci95'][0]:.3f}, {me['ci95'][1]:.3f}]" + (f"; {base}" if base else "")
    )
