"""The host loop: every algorithm trains through `train`, which owns all I/O.

`train(algo, TrainSettings(total_steps=..., out_dir=..., seeds=...))` (or the same settings as
keyword arguments, `train(algo, total_steps=..., out_dir=...)`):

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

from metarl.errors import CheckpointError, ConfigError, MetarlError
from metarl.run import checkpoint as ckpt
from metarl.algos import host
from metarl.run import evaluation, folder
from metarl.run.settings import TRAIN_STREAM, TrainSettings, init_keys  # noqa: F401  (re-exported)


class TrainingDiverged(MetarlError, RuntimeError):
    """A loss metric (or the learned parameters) became NaN or infinite; the run stopped."""

    exit_code = 1  #: not bad input: the run itself failed


class OutOfMemory(MetarlError, MemoryError):
    """The run needs more memory than the machine has (estimated before it starts, or XLA ran out)."""


def _is_oom(error: BaseException) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text or isinstance(error, MemoryError)


def _oom_error(what: str, error: BaseException | None = None) -> OutOfMemory:
    detail = f" ({str(error).splitlines()[0][:200]})" if error is not None else ""
    return OutOfMemory(
        f"out of memory {what}{detail}; make the family or the batch smaller (e.g. fewer arms or states, "
        "fewer trials per update, fewer --seeds or --eval-tasks)"
    )


def available_memory_bytes() -> int | None:
    """Memory available to this process now (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _tree_bytes(tree: Any) -> int:
    return sum(int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree) if hasattr(x, "shape"))


def _params_of(state: Any) -> Any:
    """The learned parameters in a train state (`.params`, or a dict's "params"; else the state)."""
    if hasattr(state, "params"):
        return state.params
    if isinstance(state, dict) and "params" in state:
        return state["params"]
    return state


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


def _loss_keys(metric_names: Sequence[str]) -> list[str]:
    keys = [k for k in metric_names if "loss" in k]
    return keys or list(metric_names)


@functools.partial(jax.jit, static_argnames=("algo",))
def init_states(algo, keys: jax.Array) -> Any:
    """`jax.vmap(algo.init)(keys)`: the train states of every seed, stacked on axis 0."""
    return jax.vmap(algo.init)(keys)


def spread_seeds(algo, state: Any, seeds: int) -> Any:
    """The state with its seeds split over the local JAX devices (`metarl --host-devices N` on a
    CPU, or several accelerators), when there are several, they divide the seeds and the algorithm
    does not split its own work over them (RL²'s `devices`); seeds are independent, so each device
    runs its own with no communication. Otherwise the state as it is."""
    devices = jax.local_devices()
    if len(devices) < 2 or seeds % len(devices) or getattr(getattr(algo, "config", None), "devices", 1) != 1:
        return state
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(devices), ("seeds",))
    split, whole = NamedSharding(mesh, PartitionSpec("seeds")), NamedSharding(mesh, PartitionSpec())
    # an empty leaf (e.g. a hidden context's [seeds, 0]) stays whole, as XLA returns it
    return jax.tree.map(lambda x: jax.device_put(x, whole if x.size == 0 else split), state)


def metric_names(algo, state_shape: Any) -> tuple[list[str], list[str]]:
    """(every metric name, the names checked for NaN/Inf: those with "loss" in them, else all).
    Traced through `seeds_update`, whose trace JAX keeps: `run_chunk` and the host loop both ask."""
    _, metric_shape = jax.eval_shape(seeds_update(algo), state_shape)
    names = sorted(metric_shape)
    return names, _loss_keys(names)


@functools.lru_cache(maxsize=16)
def seeds_update(algo):
    """`jax.jit(jax.vmap(algo.update))`, one per algorithm: JAX keeps a jitted function's trace per
    argument shapes, so `metric_names` and `run_chunk`'s loop body (which calls it) trace a
    DREAM update, seconds of Python, once between them instead of twice."""
    return jax.jit(jax.vmap(algo.update))


@functools.partial(jax.jit, static_argnames=("algo",), donate_argnames=("state",))
def run_chunk(algo, state: Any, num_updates: jax.Array) -> tuple[Any, dict[str, jax.Array], jax.Array]:
    """`num_updates` updates of every seed: (state, metric sums {name: [seeds]}, first_bad [seeds]).

    `first_bad[i]` is the index (within the chunk) of the first update after which seed i had a
    non-finite loss metric or learned parameter, -1 if none (the rest of the state, e.g. a
    replay buffer, is not scanned). `algo` is static (a frozen, hashable
    dataclass), so every run of the same algorithm in a process shares one compilation."""
    vupdate = seeds_update(algo)
    names, check_keys = metric_names(algo, state)
    seeds = jax.tree.leaves(state)[0].shape[0]

    def per_seed(x):  # [seeds, ...] -> [seeds]
        x = jnp.asarray(x, jnp.float32)
        return x.reshape(x.shape[0], -1).mean(axis=1)

    def all_finite(state, metrics):
        ok = jnp.ones((seeds,), bool)
        for k in check_keys:
            ok &= jnp.isfinite(per_seed(metrics[k]))
        for leaf in jax.tree.leaves(_params_of(state)):
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


def train(algo, settings: TrainSettings | None = None, /, **overrides: Any) -> TrainResult:
    """Train `settings.seeds` independent copies of `algo` for `settings.total_steps` environment
    steps each, writing the run folder `settings.out_dir` (see `metarl.run.folder` and
    `TrainSettings` for every setting). Settings may also be given as keyword arguments (they
    override `settings`'s fields).

    Raises ConfigError (bad settings, an existing run without resume, a folder that cannot be
    made), CheckpointError (a run that cannot be resumed: another configuration, or metrics but no
    checkpoint), OutOfMemory, and TrainingDiverged (non-finite loss; the last checkpoint, written
    before the bad chunk, stays loadable)."""
    s = TrainSettings(**overrides) if settings is None else dataclasses.replace(settings, **overrides)
    spu = int(algo.steps_per_update)
    total_updates = math.ceil(s.total_steps / spu)
    algo = algo.for_run(total_updates, folder.saved_algorithm_config(s.out_dir) if s.resume else None)
    evaluating = s.eval_tasks > 0 and s.eval_every != 0
    eval_baselines = evaluation.check_baselines(algo, s.eval_baselines) if evaluating else None
    config = folder.run_config(
        algo,
        s.seeds,
        s.seed,
        s.total_steps,
        total_updates=total_updates,
        eval={"every": s.eval_every, "tasks": s.eval_tasks, "seed": s.evaluation_seed, "baselines": eval_baselines},
        checkpoint={"every": s.checkpoint_every, "seconds": s.checkpoint_seconds, "keep": s.keep_checkpoints},
        command=list(s.command) if s.command is not None else None,
    )
    run = _Run(algo, s, config, spu, total_updates, evaluating, eval_baselines)
    return run.go()


class _Run:
    """One call of `train`: the folder, the state, the chunk loop and its I/O."""

    def __init__(self, algo, s: TrainSettings, config: dict, spu: int, total_updates: int, evaluating: bool, eval_baselines):
        self.algo, self.s, self.config, self.spu, self.total_updates = algo, s, config, spu, total_updates
        self.evaluating, self.eval_baselines = evaluating, eval_baselines
        to_updates = lambda steps: None if not steps else max(1, math.ceil(steps / spu))  # noqa: E731
        self.eval_every_updates = to_updates(s.eval_every) if self.evaluating else None
        self.ckpt_every_updates = to_updates(s.checkpoint_every)
        self.chash = folder.config_hash(config)
        self.out = s.out_dir
        self.ckpt_dir = os.path.join(self.out, folder.CHECKPOINTS)
        self.metrics_path = os.path.join(self.out, folder.METRICS)
        self.times = {"train": 0.0, "host": 0.0, "eval": 0.0, "checkpoint": 0.0}
        self.last_ckpt_path = None
        self.baseline_cache: dict[str, Any] = {}

    # --- the folder ---------------------------------------------------------------------------
    def _open_folder(self, state_shape) -> tuple[Any, int, bool]:
        """Check the folder and, on resume, load the state. Returns (state or None, updates done,
        whether this call creates the folder). Nothing is written here."""
        out, s = self.out, self.s
        if os.path.exists(out) and not os.path.isdir(out):
            raise ConfigError(f"--out {out} is a file, not a run folder; choose another --out")
        if s.resume:
            saved = folder.read_config(out)
            if folder.config_hash(saved) != self.chash:
                diffs = [k for k in folder.IDENTITY_KEYS if folder.jsonable(saved.get(k)) != self.config[k]]
                raise CheckpointError(
                    f"cannot resume {out}: it was run with a different {', '.join(diffs) or 'configuration'} "
                    f"(see its {folder.CONFIG}); resume with the same algorithm, config, family, episodes, seeds and seed"
                )
            if not ckpt.list_checkpoints(self.ckpt_dir):
                if folder.has_results(out):
                    raise CheckpointError(
                        f"cannot resume {out}: it has metrics or evaluations but no checkpoint in {self.ckpt_dir} "
                        "(deleted or never written); resuming would start again from update 0 and overwrite them. "
                        "Restore the checkpoints, or start a new run with another --out"
                    )
                self.config["created"] = saved.get("created", folder.now())
                self.config["resumed"] = saved.get("resumed", []) + [{"time": folder.now(), "updates": 0}]
                return None, 0, False  # killed before anything was recorded: start from the beginning
            warn = lambda line: print(f"metarl: {line}", file=sys.stderr, flush=True)  # noqa: E731  (even when quiet)
            state, header, path, _ = ckpt.load_latest_valid(self.ckpt_dir, state_shape, folder.config_hashes(saved), log=warn)
            self.last_ckpt_path = path
            start = int(header["updates"])
            self.config["created"] = saved.get("created", folder.now())
            self.config["resumed"] = saved.get("resumed", []) + [{"time": folder.now(), "updates": start}]
            return state, start, False
        if os.path.exists(os.path.join(out, folder.CONFIG)) and folder.has_results(out):
            raise ConfigError(f"run folder {out} already holds a run; pass --resume to continue it or choose another --out")
        self.config["created"] = folder.now()
        return None, 0, not os.path.exists(out)

    def _make_folder(self, start_updates: int) -> None:
        try:
            os.makedirs(self.out, exist_ok=True)
            folder.write_json_atomic(os.path.join(self.out, folder.CONFIG), self.config)
        except OSError as error:
            raise ConfigError(f"cannot create the run folder --out {self.out}: {error.strerror or error}") from None
        if self.s.resume:
            folder.truncate_jsonl(self.metrics_path, start_updates)
            folder.truncate_jsonl(os.path.join(self.out, folder.EVAL, "history.jsonl"), start_updates)

    # --- the loop -----------------------------------------------------------------------------
    def go(self) -> TrainResult:
        algo, s, spu = self.algo, self.s, self.spu
        keys = init_keys(s.seed, s.seeds)
        state_shape = jax.eval_shape(jax.vmap(algo.init), keys)
        state, self.done, creates = self._open_folder(state_shape)
        self._check_memory(_tree_bytes(state_shape), "for the train state")
        try:
            if state is None:
                state = init_states(algo, keys)
            t0 = time.perf_counter()
            host_stepped = algo.env.host_stepped  # Box2D: Gymnasium environments stepped from here
            if host_stepped:
                compiled = host.HostChunk(algo, s.seeds, s.seed)
            else:
                state = spread_seeds(algo, state, s.seeds)
                compiled = run_chunk.lower(algo, state, jnp.int32(1)).compile()  # cached per algorithm and shapes
            self.compile_seconds = time.perf_counter() - t0
            if not host_stepped:
                self._check_compiled_memory(compiled)
        except Exception as error:
            if _is_oom(error):
                raise _oom_error("while building the run", error) from None
            raise
        self._make_folder(self.done)  # only now: a run that cannot start leaves no folder behind
        self.bar = _Progress(s.progress, self.total_updates * spu, self.done * spu, s.quiet)
        if s.resume:
            self.bar.log(f"resuming {self.out} at update {self.done:,} ({self.done * spu:,} env steps)")
        self.names, self.check_keys = compiled.metric_names(state) if host_stepped else metric_names(algo, state_shape)
        self.ret_key = next((k for k in self.names if "return" in k), None)
        self.writer = None
        if s.tensorboard:
            from tensorboardX import SummaryWriter

            purge = self.done * spu if s.resume and self.done > 0 else None
            self.writer = SummaryWriter(logdir=self.out, purge_step=purge, flush_secs=10)
        how = "host-stepped (Gymnasium environments stepped from here)" if host_stepped else "update"
        self.bar.log(f"compiled {s.seeds} x {algo.name} {how} in {self.compile_seconds:.1f} s; {spu:,} env steps per update and seed")
        self.state = state
        self.last_ckpt_time, self.last_ckpt_updates = time.monotonic(), self.done
        self.chunks, interrupted, self.last_means = 0, False, {}
        try:
            with _StopRequest() as stop:
                per_update, last_n = None, 1
                while self.done < self.total_updates:
                    n = self._chunk_length(per_update, last_n)
                    chunk_time = self._run_chunk(compiled, n)
                    per_update, last_n = chunk_time / n, n
                    finished = self.done >= self.total_updates
                    due = (
                        finished
                        or stop.signal is not None
                        or (self.ckpt_every_updates and self.done % self.ckpt_every_updates == 0)
                        or time.monotonic() - self.last_ckpt_time >= s.checkpoint_seconds
                    )
                    if due and self.done > self.last_ckpt_updates:
                        self._checkpoint()
                    if self.evaluating and (finished or (self.eval_every_updates and self.done % self.eval_every_updates == 0)):
                        t = time.perf_counter()
                        self._evaluate()
                        self.times["eval"] += time.perf_counter() - t
                    if stop.signal is not None:
                        interrupted = True
                        self.bar.log(f"stopped at update {self.done:,}; checkpoint {self.last_ckpt_path}; continue with --resume")
                        break
        except Exception as error:
            if _is_oom(error):
                raise _oom_error("while training", error) from None
            raise
        finally:
            self.bar.close()
            if self.writer is not None:
                self.writer.close()
        t = self.times
        return TrainResult(
            run_dir=self.out,
            state=self.state,
            updates=self.done,
            env_steps=self.done * spu,
            checkpoint=self.last_ckpt_path,
            metrics=self.last_means,
            compile_seconds=self.compile_seconds,
            train_seconds=t["train"],
            host_seconds=t["host"],
            eval_seconds=t["eval"],
            checkpoint_seconds=t["checkpoint"],
            chunks=self.chunks,
            interrupted=interrupted,
        )

    def _check_memory(self, need: int, what: str) -> None:
        have = available_memory_bytes()
        if have is not None and need > have:
            raise OutOfMemory(
                f"out of memory {what}: it needs {need / 2**30:.1f} GiB but {have / 2**30:.1f} GiB is available; make the "
                "family or the batch smaller (e.g. fewer arms or states, fewer trials per update, fewer --seeds)"
            )

    def _check_compiled_memory(self, compiled) -> None:
        try:
            m = compiled.memory_analysis()
            need = int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)
        except Exception:  # noqa: BLE001  (not every backend reports it)
            return
        self._check_memory(need, "for one chunk of updates")

    def _chunk_length(self, per_update: float | None, last_n: int) -> int:
        """Sized to the target time, cut at evaluation/checkpoint boundaries."""
        s = self.s
        if s.chunk_updates is not None:
            n = s.chunk_updates
        elif per_update is None:
            n = 1  # the first chunk measures speed
        else:  # grow at most 8x per chunk, in case the first timings were not representative
            n = int(max(1, min(s.max_chunk_updates, 8 * last_n, s.chunk_seconds / per_update)))
        stops = [self.total_updates, _boundary(self.done, self.eval_every_updates), _boundary(self.done, self.ckpt_every_updates)]
        return max(1, min([n] + [b - self.done for b in stops if b is not None]))

    def _run_chunk(self, compiled, n: int) -> float:
        s, spu = self.s, self.spu
        t = time.perf_counter()
        self.state, sums, first_bad = compiled(self.state, jnp.int32(n))
        sums, first_bad = jax.device_get((sums, first_bad))
        chunk_time = time.perf_counter() - t
        self.times["train"] += chunk_time
        self.chunks += 1
        t_host = time.perf_counter()
        self.done += n
        per_seed = {k: (np.asarray(v, np.float64) / n).tolist() for k, v in sums.items()}
        means = {k: float(np.mean(v)) for k, v in per_seed.items()}
        self.last_means = means
        sps = n * spu * s.seeds / chunk_time
        bad = [i for i in range(s.seeds) if first_bad[i] >= 0]
        record = {
            "updates": self.done,
            "env_steps": self.done * spu,
            "time": folder.now(),
            "chunk_updates": n,
            "chunk_seconds": round(chunk_time, 4),
            "steps_per_second": round(sps, 1),
            "metrics": means,
            "per_seed": per_seed,
        }
        if bad:
            record["nonfinite_seeds"] = bad
        folder.append_jsonl(self.metrics_path, record)
        if self.writer is not None:
            step = self.done * spu
            for k, v in means.items():
                self.writer.add_scalar(f"train/{k}", v, step)
                if s.seeds > 1:
                    for i, vi in enumerate(per_seed[k]):
                        self.writer.add_scalar(f"seed{i}/{k}", vi, step)
            self.writer.add_scalar("speed/steps_per_second", sps, step)
        if bad:
            i = bad[0]
            first = self.done - n + int(first_bad[i]) + 1
            nonfinite = [k for k in self.check_keys if not math.isfinite(per_seed[k][i])]
            what = f"loss metric(s) {', '.join(nonfinite)}" if nonfinite else "parameters"
            where = (
                f"the last good checkpoint, {self.last_ckpt_path}, is intact (update {self.last_ckpt_updates:,})"
                if self.last_ckpt_path
                else "no checkpoint was written before it"
            )
            raise TrainingDiverged(
                f"training diverged: non-finite {what} in seed {i} at update {first:,} "
                f"(env step {first * spu:,}); the run stopped and {where}; "
                "lower the learning rate or check the algorithm's config"
            )
        ret = (self.ret_key, means[self.ret_key]) if self.ret_key else None
        self.bar.update(self.done * spu, self.total_updates * spu, sps, ret)
        self.times["host"] += time.perf_counter() - t_host
        return chunk_time

    def _checkpoint(self) -> None:
        t = time.perf_counter()
        header = {"updates": self.done, "env_steps": self.done * self.spu, "seeds": self.s.seeds, "config_hash": self.chash, "time": folder.now()}
        self.last_ckpt_path = ckpt.save_checkpoint(self.ckpt_dir, self.state, header, keep=self.s.keep_checkpoints)
        self.last_ckpt_time, self.last_ckpt_updates = time.monotonic(), self.done
        self.times["checkpoint"] += time.perf_counter() - t

    def _evaluate(self) -> None:
        s = self.s
        evaluation.evaluate_during_training(
            self.algo, self.state, s.seeds, self.done, self.spu, s.eval_tasks, s.evaluation_seed, self.eval_baselines,
            self.out, self.writer, self.baseline_cache, self.bar.log,
        )
