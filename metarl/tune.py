"""Hyperparameter search (`metarl tune`): Optuna's TPE sampler over an algorithm's search space,
with environment steps as the budget and a Hyperband pruner, on storage that any number of
processes, on one machine or many, share and resume.

    metarl tune dqn cartpole --factors length --trials 40 --budget 500000 --min-budget 100000 --workers 2 --out runs/tune-dqn

A trial trains `seeds` seeds of the algorithm (vmapped) with the config the flags give, its
searched fields replaced by the sampler's values, for `budget` env steps per seed (the length its
schedules are set for); after every `min_budget` steps it scores the greedy agent (the mean return
over `eval_tasks` tasks drawn from the family, the same tasks for every trial) and reports it, and
Hyperband (reduction factor 3, resource = steps / min_budget) stops the trials that trail their
rung. A trial whose loss or parameters turn non-finite is pruned (user attribute `diverged`).

Storage: `--storage` is any database URL Optuna's RDB storage takes (default sqlite:///OUT/study.db);
trials keep a heartbeat, so a trial whose process died is marked failed and run again (once) when a
process of the study next starts a trial. `--workers W` starts W processes on this machine; more
machines join by running the same command with the same `--storage` and `--study`. Rerunning a
command continues its study until it holds `trials` complete or pruned trials.

Written to OUT: best_config.json (the algorithm config of the best trial; `metarl train ALGO FAMILY
--config OUT/best_config.json` starts from it), trials.json and trials.md (every trial's values
and params), and Optuna's plots as PNG (optimisation history, intermediate values, parameter
importances, parallel coordinates).

Why Optuna and its Hyperband rather than DEHB (the reference's): the `dehb` package keeps its state
in the process (parallel only through a Dask cluster of that process), while Optuna's RDB storage
lets independent processes and machines share one resumable study with no coordinator, and its
pruner gives the same successive-halving budget allocation over environment steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Annotated, Any, Callable

import tyro

from metarl.errors import ConfigError, check, check_int

#: search spaces: algorithm -> fn(optuna trial) -> {config field: value}
SPACES: dict[str, Callable[[Any], dict[str, Any]]] = {}


def space(name: str):
    def deco(fn):
        SPACES[name] = fn
        return fn

    return deco


@space("dqn")
def dqn_space(trial) -> dict[str, Any]:
    """The contextual-RL reference's DQN space (../shared/reference/contextual_rl.md): lr
    log-uniform [1e-6, 1e-2], batch 4-32, gradient steps 1-10, train frequency 1-1000 (log), learning
    starts 0-10,000, buffer 5,000-500,000 (log; the reference's upper bound is 5e7, but the buffer here
    is a dense ring in memory, 5e7 slots being gigabytes per seed), exploration fraction 0.005-0.5."""
    return {
        "lr": trial.suggest_float("lr", 1e-6, 1e-2, log=True),
        "batch_size": trial.suggest_int("batch_size", 4, 32),
        "gradient_steps": trial.suggest_int("gradient_steps", 1, 10),
        "train_every": trial.suggest_int("train_every", 1, 1000, log=True),
        "learning_starts": trial.suggest_int("learning_starts", 0, 10_000),
        "buffer_size": trial.suggest_int("buffer_size", 5_000, 500_000, log=True),
        "exploration_fraction": trial.suggest_float("exploration_fraction", 0.005, 0.5),
    }


@space("ppo")
def ppo_space(trial) -> dict[str, Any]:
    """A PPO space in the spirit of RL Zoo's: lr log-uniform [1e-5, 1e-2], rollout length, epochs
    1-10, minibatches, gamma, GAE lambda, clip range, entropy coefficient (log)."""
    return {
        "lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),
        "num_steps": trial.suggest_categorical("num_steps", [32, 64, 128, 256, 512]),
        "epochs": trial.suggest_int("epochs", 1, 10),
        "minibatches": trial.suggest_categorical("minibatches", [1, 2, 4, 8]),
        "gamma": trial.suggest_float("gamma", 0.9, 0.9999, log=True),
        "gae_lambda": trial.suggest_float("gae_lambda", 0.8, 1.0),
        "clip_eps": trial.suggest_float("clip_eps", 0.05, 0.4),
        "ent_coef": trial.suggest_float("ent_coef", 1e-5, 0.1, log=True),
    }


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    """The study: its size, budget, storage and workers."""

    out_dir: Annotated[str, tyro.conf.arg(name="out", metavar="DIR")]  #: the folder for the study's database (by default), best config, tables and plots
    trials: int = 20  #: complete or pruned trials the study holds when done
    budget: int = 500_000  #: env steps per seed of a trial run to the end (the length its schedules are set for)
    min_budget: int = 100_000  #: env steps between a trial's evaluations, the smallest budget Hyperband gives
    seeds: int = 1  #: seeds per trial (vmapped); the objective is their mean
    seed: int = 0  #: seed of the first trial's training (trial k trains from seed + k) and of the sampler
    eval_tasks: int = 100  #: tasks each evaluation scores (drawn from the family, the same for every trial)
    storage: str | None = None  #: database URL shared by every process of the study (None: sqlite:///OUT/study.db)
    study: str | None = None  #: the study's name in the storage (None: tune-ALGO-FAMILY)
    workers: int = 1  #: processes started on this machine, all working on the study

    def __post_init__(self):
        o = "tune"
        check(isinstance(self.out_dir, str) and self.out_dir.strip() != "", f"{o}: out_dir must be a folder path, got {self.out_dir!r}", "out_dir")
        for name in ("trials", "seeds", "workers", "eval_tasks", "min_budget"):
            check_int(o, name, getattr(self, name), low=1)
        check_int(o, "seed", self.seed, low=0)
        check_int(o, "budget", self.budget, low=1)
        check(self.budget >= self.min_budget,
              f"{o}: budget {self.budget:,} is below the minimum budget {self.min_budget:,} (min_budget): a trial must reach its first evaluation",
              "budget")

    @property
    def storage_url(self) -> str:
        return self.storage or "sqlite:///" + os.path.abspath(os.path.join(self.out_dir, "study.db"))

    @property
    def rungs(self) -> int:
        """Evaluations of a trial run to the end (Hyperband's max resource)."""
        return self.budget // self.min_budget


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("metarl tune needs Optuna: pip install 'metarl[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trials' lines are tune's own
    return optuna


def _storage(url: str):
    import warnings

    optuna = _optuna()
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna's words
            warnings.simplefilter("ignore")
            if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9
                retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
            else:
                retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
            return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90, **retry)
    except Exception as e:  # a bad URL, an unreachable or unwritable database
        raise ConfigError(f"tune: cannot open the study storage {url!r}: {e}", "storage") from None


def check_space(algo_name: str) -> None:
    if algo_name not in SPACES:
        raise ConfigError(f"tune: no search space for algorithm {algo_name!r}; spaces exist for: {', '.join(SPACES)}")


def _study(settings: TuneSettings, name: str, sampler_seed: int):
    """The study `name` in the settings' storage (created when it is not there yet)."""
    optuna = _optuna()
    sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(settings.rungs, 1), reduction_factor=3)
    return optuna.create_study(study_name=name, storage=_storage(settings.storage_url), sampler=sampler, pruner=pruner,
                               direction="maximize", load_if_exists=True)


def _claimed(study) -> int:
    """Trials complete, pruned or running: what counts towards the study's `trials`."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))


def objective_fn(algo_name: str, env, base_config: Any, settings: TuneSettings, log: Callable[[str], None] | None = None):
    """The study's objective: train one trial's config and report its score after every rung."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from metarl import algos
    from metarl.run.evaluation import seed_slice
    from metarl.run.loop import init_states, run_chunk
    from metarl.run.settings import init_keys

    optuna = _optuna()
    cls = algos.algorithm_class(algo_name)
    eval_key = jax.random.PRNGKey(settings.seed)
    tasks = env.sample_tasks(jax.random.fold_in(eval_key, 1), settings.eval_tasks)

    def objective(trial) -> float:
        values = SPACES[algo_name](trial)
        try:
            config = dataclasses.replace(base_config, **values)
            algo = cls(env=env, config=config)
        except ConfigError as e:  # a combination the algorithm rejects (e.g. a batch the rollout cannot split)
            trial.set_user_attr("invalid", str(e))
            raise optuna.TrialPruned(str(e)) from None
        per_update = algo.steps_per_update
        total_updates = max(settings.budget // per_update, 1)
        algo = algo.for_run(total_updates)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("config", _jsonable(dataclasses.asdict(config)))  # before for_run: the schedules follow the run
        state = init_states(algo, init_keys(settings.seed + trial.number, settings.seeds))
        done = 0
        score = float("nan")
        for rung in range(1, settings.rungs + 1):
            target = total_updates if rung == settings.rungs else max(rung * settings.min_budget // per_update, 1)
            if target > done:
                state, _, bad = run_chunk(algo, state, jnp.int32(target - done))
                done = target
                if bool((np.asarray(bad) >= 0).any()):
                    trial.set_user_attr("diverged", True)
                    raise optuna.TrialPruned("non-finite loss or parameters")
            returns = [np.asarray(algo.evaluate(seed_slice(state, i), eval_key, tasks=tasks)).mean() for i in range(settings.seeds)]
            score = float(np.mean(returns))
            trial.report(score, step=rung)
            if log:
                log(f"trial {trial.number}: {done * per_update:,} steps, score {score:.2f}")
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at {done * per_update:,} steps with {score:.2f}")
        return score

    return objective


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def work(algo_name: str, family: str, family_options: dict, config_fields: dict, settings: TuneSettings, name: str, quiet: bool = True) -> None:
    """One process of the study: run trials until the study holds `settings.trials` (complete,
    pruned or running)."""
    from metarl import algos, envs

    env = envs.make(family, **family_options)
    cls = algos.algorithm_class(algo_name)
    base = cls.Config(**config_fields)
    study = _study(settings, name, settings.seed + os.getpid() % 10_000)  # workers must not propose the same configs
    objective = objective_fn(algo_name, env, base, settings, log=None if quiet else print)
    while _claimed(study) < settings.trials:
        study.optimize(objective, n_trials=1, catch=())
        if not quiet:
            t = study.trials[-1]
            print(f"trial {t.number}: {t.state.name.lower()}" + (f", score {t.value:.2f}" if t.value is not None else "") + f", {t.params}")


def _work_entry(args):  # a spawned worker (top level, so that it pickles by reference)
    work(*args)


def tune(algo_name: str, family: str, family_options: dict, config: Any, settings: TuneSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the study with `settings.workers` processes, then write OUT's files; the
    best trial's summary."""
    from metarl import algos

    _optuna()
    check_space(algo_name)
    cls = algos.algorithm_class(algo_name)
    if cls.in_context:
        raise ConfigError(f"tune: {algo_name} is an in-context algorithm; tune searches per-context ones ({', '.join(SPACES)})")
    os.makedirs(settings.out_dir, exist_ok=True)
    name = settings.study or f"tune-{algo_name}-{family}"
    study = _study(settings, name, settings.seed)  # create it once, before the workers load it
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    args = (algo_name, family, family_options, fields, settings, name)
    if settings.workers == 1:
        work(*args, quiet=False)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # JAX is not fork-safe
        procs = [ctx.Process(target=_work_entry, args=(args,)) for _ in range(settings.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if failed:
            log(f"tune: {len(failed)} of {settings.workers} workers exited with an error (codes {failed}); the study keeps their finished trials")
    study = _study(settings, name, settings.seed)
    return write_outputs(study, algo_name, family, family_options, settings)


def write_outputs(study, algo_name: str, family: str, family_options: dict, settings: TuneSettings) -> dict[str, Any]:
    from optuna.trial import TrialState

    from metarl.run.folder import write_json_atomic

    out = settings.out_dir
    trials = study.get_trials(deepcopy=False)
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "steps": (max(t.intermediate_values) * settings.min_budget if t.intermediate_values else 0),
             "pid": t.user_attrs.get("pid")} for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    summary = {"study": study.study_name, "storage": settings.storage_url, "algorithm": algo_name, "family": family,
               "family_options": family_options, "trials": rows,
               "complete": len(complete), "pruned": sum(t.state == TrialState.PRUNED for t in trials)}
    if complete:
        best = max(complete, key=lambda t: t.value)
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params}
        write_json_atomic(os.path.join(out, "best_config.json"),
                          {"algorithm": algo_name, "family": family, "family_options": family_options,
                           "trial": best.number, "value": best.value, "config": best.user_attrs.get("config")})
    write_json_atomic(os.path.join(out, "trials.json"), summary)
    lines = [f"# Study {study.study_name}: {algo_name} on {family}", "",
             f"{len(complete)} complete, {summary['pruned']} pruned of {len(trials)} trials; budget {settings.budget:,} env steps "
             f"per seed, evaluated every {settings.min_budget:,}; score: mean greedy return over {settings.eval_tasks} tasks.", ""]
    names = sorted({k for r in rows for k in r["params"]})
    lines.append("| trial | state | score | steps | " + " | ".join(names) + " |")
    lines.append("|---" * (4 + len(names)) + "|")
    for r in sorted(rows, key=lambda r: -(r["value"] if r["value"] is not None else -math.inf)):
        value = "" if r["value"] is None else f"{r['value']:.2f}"
        cells = [_fmt(r["params"].get(n)) for n in names]
        lines.append(f"| {r['number']} | {r['state'].lower()} | {value} | {r['steps']:,} | " + " | ".join(cells) + " |")
    with open(os.path.join(out, "trials.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    summary["plots"] = write_plots(study, out)
    return summary


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def write_plots(study, out: str) -> list[str]:
    """Optuna's matplotlib plots as PNG (those the study's trials allow)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    written = []
    for name, fn in (("optimization_history", vis.plot_optimization_history), ("intermediate_values", vis.plot_intermediate_values),
                     ("param_importances", vis.plot_param_importances), ("parallel_coordinate", vis.plot_parallel_coordinate)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            path = os.path.join(out, f"{name}.png")
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
        except Exception:  # too few trials for a plot (e.g. importances need two complete ones)
            plt.close("all")
    return written


def read_best_config(path: str, algo_name: str) -> dict[str, Any]:
    """The algorithm options in `path`: a best_config.json of `metarl tune`, a run's config.json, or
    a plain JSON object of options; checked to be `algo_name`'s (for `metarl train --config`)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the config file {path}: {e}", "config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a config file: it holds a JSON {type(data).__name__}", "config")
    if isinstance(data.get("algorithm"), dict):  # a run's config.json
        owner, config = data["algorithm"].get("name"), data["algorithm"].get("config") or {}
    elif "config" in data:  # metarl tune's best_config.json
        owner, config = data.get("algorithm"), data["config"]
    else:
        owner, config = algo_name, data
    if owner != algo_name:
        raise ConfigError(f"{path} holds a config of {owner!r}, not of {algo_name!r}", "config")
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: its config must be a JSON object of {algo_name}'s options", "config")
    return config
