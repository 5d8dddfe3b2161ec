"""metarl: meta-reinforcement learning in JAX.

`import metarl` is light: the task families (`metarl.make`, `Trial`, `TimeStep`) load on first use,
so `metarl.use_host_devices(n)` can still split the CPU into n JAX devices for data-parallel
configs (see `metarl.devices`). The one thing this import does to the process is a workaround in
XLA_FLAGS (below), which must precede JAX's backend.
"""

import os as _os


def _xla_cpu_scheduler_flag() -> None:
    """Turn off XLA CPU's concurrency-optimised scheduler (before JAX starts its backend): with it,
    some programs deadlock at run time on jax 0.10 (e.g. PPO's init vmapped over 3 or more seeds
    never returns; tests/test_ppo.py runs that case). An explicit setting in XLA_FLAGS wins."""
    flag = "--xla_cpu_enable_concurrency_optimized_scheduler"
    flags = _os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        _os.environ["XLA_FLAGS"] = f"{flags} {flag}=false".strip()


_xla_cpu_scheduler_flag()

from metarl.devices import use_host_devices  # noqa: E402  (after XLA_FLAGS is final)
from metarl.errors import CheckpointError, ConfigError, MetarlError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "MetarlError", "TimeStep", "Trial", "make", "use_host_devices", "__version__"]

_LAZY = {"make": "metarl.envs", "Trial": "metarl.envs", "TimeStep": "metarl.envs"}


def __getattr__(name):
    """`metarl.make`, `metarl.Trial`, `metarl.TimeStep` and the subpackages, imported on first use
    (importing the families imports gymnax, which starts JAX's backend)."""
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in ("algos", "baselines", "envs", "eval", "agents", "nets", "ops", "run", "cli", "rollout"):
        return importlib.import_module(f"metarl.{name}")
    raise AttributeError(f"module 'metarl' has no attribute {name!r}")
