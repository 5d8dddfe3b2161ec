"""metarl: meta-reinforcement learning in JAX.

`import metarl` is light: the task families (`metarl.make`, `Trial`, `TimeStep`) and subpackages
load on first use, so `metarl.use_host_devices(n)` can still split the CPU into n JAX devices for
data-parallel configs (see `metarl.devices`). It changes one thing in the process: it adds
`--xla_cpu_enable_concurrency_optimized_scheduler=false` to `XLA_FLAGS` (unless that flag is
already there). With jaxlib 0.10's CPU scheduler on, a vmapped-over-seeds DREAM update (a
program with recurrent scans inside PPO epochs) deadlocks: every XLA thread waits and the
process sits at 0% CPU. The flag is read when JAX's backend starts, so import metarl before
the first JAX computation (or set the flag yourself).
"""

import os as _os

_XLA_WORKAROUND = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " " + _XLA_WORKAROUND).strip()

from metarl.devices import use_host_devices  # noqa: E402
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
