"""Splitting the CPU into several JAX devices, by an explicit call.

`use_host_devices(n)` makes JAX's CPU backend start with n devices (JAX's `jax_num_cpu_devices`),
so that a data-parallel config (e.g. `RL2Config(devices=n)`) runs over n cores. It must come
before JAX's backend starts, that is before the first JAX computation of the process; gymnax runs
one when it is imported, so call it before using `metarl.make`, `metarl.algos` or
`metarl.baselines` (plain `import metarl` is fine: it imports those lazily):

    import metarl
    metarl.use_host_devices(2)
    algo = metarl.algos.make("rl2", metarl.make("bandit"), 10, devices=2)

On the command line: `metarl --host-devices 2 train rl2 bandit ... --devices 2`.
"""

from __future__ import annotations

from metarl.errors import ConfigError, check_int

__all__ = ["use_host_devices"]


def use_host_devices(n: int) -> None:
    """Start JAX's CPU backend with `n` devices. Raises ConfigError if the backend has already
    started with fewer (nothing to do if it has as many or more)."""
    check_int("use_host_devices", "n", n, low=1)
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # the backend is running: fine if it already has the devices
        have = len(jax.devices("cpu"))
        if have < n:
            raise ConfigError(
                f"cannot split the CPU into {n} devices: JAX already started with {have} (call "
                "metarl.use_host_devices before the first JAX computation, i.e. before metarl.make, "
                "metarl.algos or gymnax are used; on the command line, metarl --host-devices N COMMAND ...)"
            ) from None
