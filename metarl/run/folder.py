"""The run folder: what a run writes and how a run is rebuilt from it.

    runs/NAME/
      config.json        everything needed to rerun (algorithm + config, family + options, episodes,
                         seeds, steps, evaluation settings, metarl version)
      metrics.jsonl      one line per chunk of updates: means over the chunk, per seed and averaged
      events.out.tfevents.*   TensorBoard scalars (the same numbers, x axis = env steps per seed)
      checkpoints/       atomic, no pickle (see `metarl.run.checkpoint`)
      eval/              tables (JSON, Markdown) and PNG plots of held-out evaluations

The *identity* of a run (what a checkpoint must match to be resumed or evaluated) is the part of
the config that changes the numbers: algorithm and its config, family and its options, episodes,
number of seeds and the seed. Its hash is stored in every checkpoint header. The step budget and
evaluation settings are not part of it: a finished run can be resumed with a larger budget. Nor are
the algorithm's execution-only fields (`EXECUTION_FIELDS`, e.g. RL²'s `devices`), which change how
the computation is laid out, not what it computes (a run may resume on another number of devices),
nor algorithm-config fields at their default value, so a run made before a field was added (with
a default that keeps the old behaviour) resumes and evaluates as before. Checkpoints written before
these rules carry the hash of the whole identity, which `config_hashes` also accepts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import tempfile
import time
from typing import Any

import numpy as np

from metarl.errors import CheckpointError, ConfigError
from metarl.run.checkpoint import write_bytes_atomic

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
IDENTITY_KEYS = ("algorithm", "family", "episodes", "seeds", "seed")
EXECUTION_FIELDS = ("devices",)  #: algorithm-config fields outside the identity


def jsonable(value: Any) -> Any:
    """Plain JSON values for dataclasses, tuples, numpy and JAX scalars/arrays."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        arr = np.asarray(value)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples (frozen configs must stay hashable to be static under jit)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def run_config(algo, seeds: int, seed: int, total_steps: int, **settings: Any) -> dict[str, Any]:
    """The JSON-able config of a run of `algo` (an `Algorithm`), plus loop `settings`."""
    import metarl

    env = algo.env
    return jsonable(
        {
            "metarl_version": metarl.__version__,
            "algorithm": {"name": algo.name, "config": algo.config},
            "family": {"name": env.name, "options": env.options()},
            "episodes": algo.constructor_options().get("episodes"),
            "seeds": seeds,
            "seed": seed,
            "total_steps": total_steps,
            "steps_per_update": algo.steps_per_update,
            **settings,
        }
    )


def config_hash(config: dict[str, Any]) -> str:
    """Hash of the run's identity (see module doc): 16 hex digits."""
    return _hash(_identity(config, drop=("execution", "defaults")))


def config_hashes(config: dict[str, Any]) -> tuple[str, ...]:
    """The hashes a checkpoint of this run may carry: `config_hash`, then those of older rules (the
    whole identity; the identity without execution-only fields), which older checkpoints carry."""
    older = (_hash(_identity(config, drop=(), fixed=True)), _hash(_identity(config, drop=("execution",), fixed=True)),
             _hash(_identity(config, drop=("execution", "defaults"), fixed=True)))
    return tuple(dict.fromkeys((config_hash(config), *older)))


def _identity(config: dict[str, Any], drop: tuple[str, ...], fixed: bool = False) -> dict[str, Any]:
    """The identity part of `config`; `drop` may hold "execution" (leave out EXECUTION_FIELDS) and
    "defaults" (leave out algorithm-config fields at their default). The family's fixed fields are
    left out of its options unless `fixed` (the rule of the checkpoints written while run folders
    recorded them)."""
    identity = jsonable({k: config[k] for k in IDENTITY_KEYS})
    family = identity.get("family")
    if not fixed and isinstance(family, dict) and "options" in family:
        family["options"] = _family_options(family.get("name"), family["options"])
    algorithm = identity.get("algorithm")
    if drop and isinstance(algorithm, dict) and isinstance(algorithm.get("config"), dict):
        defaults = _config_defaults(algorithm.get("name")) if "defaults" in drop else {}
        execution = EXECUTION_FIELDS if "execution" in drop else ()
        algorithm["config"] = {
            k: v for k, v in algorithm["config"].items() if k not in execution and not (k in defaults and defaults[k] == v)
        }
    return identity


def _config_defaults(name: Any) -> dict[str, Any]:
    """{field: JSON default} of algorithm `name`'s config dataclass ({} if it is unknown)."""
    from metarl import algos

    if not isinstance(name, str):
        return {}
    if name not in algos.names():
        try:  # algorithms register on import (see build_algorithm)
            importlib.import_module(f"metarl.algos.{name.replace('-', '_')}")
        except ImportError:
            return {}
    try:
        fields = dataclasses.fields(algos.algorithm_class(name).Config)
    except (ConfigError, TypeError, AttributeError):
        return {}
    return {f.name: jsonable(f.default) for f in fields if f.default is not dataclasses.MISSING}


def _hash(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _family_options(name: Any, options: Any) -> Any:
    """`options` without the family's fixed fields (`init=False`, e.g. a contextual family's
    env_id), which earlier run folders recorded beside the options."""
    from metarl import envs

    if not isinstance(options, dict) or not isinstance(name, str) or name not in envs.names():
        return options
    fixed = {f.name for f in dataclasses.fields(envs.family_class(name)) if not f.init}
    return {k: v for k, v in options.items() if k not in fixed}


def build_algorithm(config: dict[str, Any]):
    """Rebuild the `Algorithm` a run's config.json describes (raises ConfigError if it cannot)."""
    from metarl import algos, envs

    try:
        alg, fam = config["algorithm"], config["family"]
        name, options, episodes = alg["name"], fam["options"], config.get("episodes")
    except (KeyError, TypeError) as e:
        raise ConfigError(f"run config is missing field {e}; is this a metarl run folder?") from None
    if name not in algos.names():
        # Algorithms register on import; a module named after the algorithm may not be imported yet.
        try:
            importlib.import_module(f"metarl.algos.{name.replace('-', '_')}")
        except ImportError:
            pass
    env = envs.make(fam["name"], **_tuples(_family_options(fam["name"], options)))
    algo = algos.make(name, env, episodes, **_tuples(alg["config"]))
    total_steps = config.get("total_steps")
    if isinstance(total_steps, int) and total_steps > 0 and isinstance(alg["config"], dict):
        # fields that follow the run's length, as the run resolved them (a folder written before such a
        # field existed gets the algorithm's choice for it)
        algo = algo.for_run(math.ceil(total_steps / algo.steps_per_update), alg["config"])
    return algo


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON so that a reader (or a crash) never sees half a file."""
    write_bytes_atomic(path, (json.dumps(jsonable(obj), indent=2) + "\n").encode())


def read_config(run_dir: str) -> dict[str, Any]:
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"no run folder at {run_dir}")
    if not os.path.exists(path):
        raise CheckpointError(f"{run_dir} is not a metarl run folder: it has no {CONFIG}")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    check_config_shape(config, path)
    return config


def saved_algorithm_config(run_dir: str) -> dict[str, Any] | None:
    """The `algorithm.config` of the run in `run_dir`, or None where there is none that reads
    (the host loop reports a bad folder itself, when it opens it)."""
    try:
        config = read_config(run_dir)
    except (CheckpointError, ConfigError):
        return None
    return config["algorithm"].get("config")


#: what every config.json holds, with the JSON type of each
REQUIRED = {"algorithm": dict, "family": dict, "seeds": int, "seed": int}


def check_config_shape(config: Any, path: str) -> None:
    """Raise CheckpointError unless `config` has the shape `run_config` writes."""
    bad = f"{path} is not a metarl run config"
    if not isinstance(config, dict):
        raise CheckpointError(f"{bad}: it holds a JSON {type(config).__name__ if config is not None else 'null'}, not an object")
    for key, kind in REQUIRED.items():
        if key not in config:
            raise CheckpointError(f"{bad}: it has no {key!r} field")
        if not isinstance(config[key], kind) or isinstance(config[key], bool):
            raise CheckpointError(f"{bad}: its {key!r} field is {config[key]!r}, not a JSON {kind.__name__}")
    for part in ("algorithm", "family"):
        name = config[part].get("name")
        if not isinstance(name, str):
            raise CheckpointError(f"{bad}: its {part!r} field has no name")
        if not isinstance(config[part].get("config" if part == "algorithm" else "options", {}), dict):
            raise CheckpointError(f"{bad}: its {part!r} settings are not a JSON object")


def has_results(run_dir: str) -> bool:
    """Whether a run folder holds anything a rerun from scratch would lose: a checkpoint, a line of
    metrics.jsonl or an evaluation."""
    from metarl.run.checkpoint import list_checkpoints

    if list_checkpoints(os.path.join(run_dir, CHECKPOINTS)):
        return True
    if read_jsonl(os.path.join(run_dir, METRICS)):
        return True
    eval_dir = os.path.join(run_dir, EVAL)
    return os.path.isdir(eval_dir) and any(not name.startswith(".") for name in os.listdir(eval_dir))


def append_jsonl(path: str, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to the OS (a killed run keeps every finished line)."""
    with open(path, "a") as f:
        f.write(json.dumps(jsonable(record), allow_nan=True) + "\n")
        f.flush()


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every complete line of a JSONL file (a torn last line from a crash is skipped)."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def truncate_jsonl(path: str, max_updates: int) -> int:
    """Keep only lines with `updates <= max_updates` (on resume, drop what the checkpoint lost).
    Returns the number of lines dropped."""
    if not os.path.exists(path):
        return 0
    lines = read_jsonl(path)
    keep = [r for r in lines if r.get("updates", 0) <= max_updates]
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    with os.fdopen(fd, "w") as f:
        for r in keep:
            f.write(json.dumps(r, allow_nan=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(lines) - len(keep)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
