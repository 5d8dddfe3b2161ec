"""The environment API: functional, jittable, vmappable; the task lives in `params`.

An environment object is a frozen dataclass holding only static, shape-setting configuration
(it is hashable, so it can be a static argument of `jax.jit`). Everything that varies between
tasks is in `params` (a pytree returned by `sample_task`), everything that varies within an
episode is in `state`.

Signatures (gymnax-compatible, five return values from `step`, no auto-reset; the trial in
`metarl.envs.trial` does the resetting):

    sample_task(key) -> params
    reset(key, params) -> (obs, state)
    step(key, state, action, params) -> (obs, state, reward, done, info)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from gymnax.environments import spaces

__all__ = ["Environment", "spaces"]


@dataclasses.dataclass(frozen=True)
class Environment:
    """Base class of every task family. Subclasses are frozen dataclasses whose fields are the
    family's options (the same names as the CLI flags) and validate them in `__post_init__`."""

    #: Registry name, e.g. "bandit"; set by each subclass.
    name: ClassVar[str] = ""
    #: Whether an episode always lasts exactly `max_steps_in_episode` steps.
    fixed_horizon: ClassVar[bool] = True

    # --- static shape information -------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        raise NotImplementedError

    @property
    def max_steps_in_episode(self) -> int:
        """Upper bound on an episode's length (a trial scans `episodes * max_steps_in_episode`)."""
        raise NotImplementedError

    @property
    def obs_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, self.obs_shape, jnp.float32)

    # --- the functional API -------------------------------------------------------------------
    def sample_task(self, key: jax.Array) -> Any:
        """One task of the family's distribution (vmap over keys for many)."""
        raise NotImplementedError

    def sample_tasks(self, key: jax.Array, num: int) -> Any:
        """`num` tasks stacked on a leading axis."""
        return jax.vmap(self.sample_task)(jax.random.split(key, num))

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        raise NotImplementedError

    def step(
        self, key: jax.Array, state: Any, action: jax.Array, params: Any
    ) -> tuple[jax.Array, Any, jax.Array, jax.Array, dict]:
        raise NotImplementedError

    # --- conveniences -------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The family's options as a JSON-able dict (what `make(name, **options)` rebuilds)."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options().items())
        return f"{self.name}({opts})"
