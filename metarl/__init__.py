"""metarl: meta-reinforcement learning in JAX.

`import metarl` is light and changes nothing in the process: the task families (`metarl.make`,
`Trial`, `TimeStep`) and subpackages load on first use, so `metarl.use_host_devices(n)` can still
split the CPU into n JAX devices for data-parallel configs (see `metarl.devices`).
"""

from metarl.devices import use_host_devices
from metarl.errors import CheckpointError, ConfigError, MetarlError

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
