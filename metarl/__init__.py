"""metarl: meta-reinforcement learning in JAX.

Environment variable `METARL_HOST_DEVICES=N` (read here, before JAX starts its CPU backend): split
the CPU into N JAX devices (XLA's `--xla_force_host_platform_device_count=N`), so that an algorithm
configured with `devices=N` (e.g. `RL2Config(devices=2)`, `metarl train rl2 ... --devices 2`) runs
data-parallel over N cores. It only takes effect if JAX's backend has not started yet in this
process, i.e. set it in the shell (or in `os.environ` before the first JAX computation).
"""

import os as _os


def _host_devices_flag() -> None:
    """Add `--xla_force_host_platform_device_count` to XLA_FLAGS from METARL_HOST_DEVICES."""
    value = _os.environ.get("METARL_HOST_DEVICES", "").strip()
    if not value:
        return
    from metarl.errors import ConfigError

    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"METARL_HOST_DEVICES must be a positive integer, got {value!r}")
    flags = _os.environ.get("XLA_FLAGS", "")
    if "--xla_force_host_platform_device_count" not in flags:  # an explicit XLA flag wins
        _os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={int(value)}".strip()


_host_devices_flag()


def _xla_cpu_scheduler_flag() -> None:
    """Turn off XLA CPU's concurrency-optimised scheduler (before JAX starts its backend): with it,
    some programs deadlock at run time on jax 0.10 (e.g. PPO's init vmapped over 3 or more seeds
    never returns; tests/test_ppo.py runs that case). An explicit setting in XLA_FLAGS wins."""
    flag = "--xla_cpu_enable_concurrency_optimized_scheduler"
    flags = _os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        _os.environ["XLA_FLAGS"] = f"{flags} {flag}=false".strip()


_xla_cpu_scheduler_flag()

from metarl.envs import Trial, TimeStep, make  # noqa: E402  (after XLA_FLAGS is final)
from metarl.errors import CheckpointError, ConfigError, MetarlError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "MetarlError", "TimeStep", "Trial", "make", "__version__"]
