"""The environment API: functional, jittable, vmappable; the task lives in `params`.

An environment object is a frozen dataclass holding only static, shape-setting configuration
(it is hashable, so it can be a static argument of `jax.jit`). Everything that varies between
tasks is in `params` (a pytree returned by `sample_task`), everything that varies within an
episode is in `state`.

Signatures (gymnax 1.x's, without auto-reset; the trial in `metarl.envs.trial` does the resetting):

    sample_task(key) -> params
    reset(key, params) -> (obs, state)
    step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)
    context(params) -> [context_size] float32    # what an agent allowed to see the task may read

`terminated`: the episode reached an end after which nothing follows (a learner does not
bootstrap through it); `truncated`: it was cut off by a time limit (a learner bootstraps through
it). A family's `horizon` that merely stops the episode after H steps, with the state carrying on
meaning, is a truncation (gymnax's `max_steps_in_episode`); a one-pull bandit episode terminates.

Actions take their shape and dtype from `action_space(params)`: `Discrete(n)` actions are int32
scalars, `Box` actions float32 arrays of the box's shape (`action_spec`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from metarl.errors import ConfigError, check_int

__all__ = ["Environment", "action_spec", "is_discrete", "spaces"]


def is_discrete(space: Any) -> bool:
    """Whether `space` is a gymnax `Discrete` space (else a `Box`)."""
    return isinstance(space, spaces.Discrete)


def action_spec(space: Any) -> tuple[tuple[int, ...], Any]:
    """(shape, dtype) of one action of `space`: ((), int32) for Discrete, (box shape, float32) for Box."""
    if is_discrete(space):
        return (), jnp.int32
    if isinstance(space, spaces.Box):
        return tuple(space.shape), jnp.float32
    raise ConfigError(f"unsupported action space {type(space).__name__}; metarl supports Discrete and Box")


@dataclasses.dataclass(frozen=True)
class Environment:
    """Base class of every task family. Subclasses are frozen dataclasses whose fields are the
    family's options (the same names as the CLI flags) and validate them in `__post_init__`."""

    #: Registry name, e.g. "bandit"; set by each subclass.
    name: ClassVar[str] = ""
    #: Whether an episode always lasts exactly `max_steps_in_episode` steps.
    fixed_horizon: ClassVar[bool] = True
    #: Whether episodes run on the host (Gymnasium, Box2D) rather than in a jitted `step`
    #: (`metarl.algos.host` trains and evaluates such a family).
    host_stepped: ClassVar[bool] = False

    # --- static shape information -------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        """Number of actions of a Discrete action space."""
        raise NotImplementedError

    @property
    def max_steps_in_episode(self) -> int:
        """Upper bound on an episode's length (a trial scans `episodes * max_steps_in_episode`)."""
        raise NotImplementedError

    @property
    def obs_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def action_space(self, params: Any = None) -> Any:
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, self.obs_shape, jnp.float32)

    @property
    def discrete(self) -> bool:
        """Whether actions are Discrete (int32 scalars); else Box (float32 vectors)."""
        return is_discrete(self.action_space())

    @property
    def action_shape(self) -> tuple[int, ...]:
        return action_spec(self.action_space())[0]

    @property
    def action_dtype(self) -> Any:
        return action_spec(self.action_space())[1]

    @property
    def action_size(self) -> int:
        """Width of an action's features: the number of actions (one-hot) or the Box's size."""
        return self.num_actions if self.discrete else int(np.prod(self.action_shape, dtype=int))

    # --- the functional API -------------------------------------------------------------------
    def sample_task(self, key: jax.Array) -> Any:
        """One task of the family's distribution (vmap over keys for many)."""
        raise NotImplementedError

    def sample_tasks(self, key: jax.Array, num: int) -> Any:
        """`num` tasks stacked on a leading axis (one compiled program per family and `num`, the family
        hashable as everywhere it is compiled: op by op, each operation compiles on its first call)."""
        check_int(f"{self.name}.sample_tasks", "num", num, low=1)
        return _sample_tasks(self, key, num)

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        raise NotImplementedError

    def step(
        self, key: jax.Array, state: Any, action: jax.Array, params: Any
    ) -> tuple[jax.Array, Any, jax.Array, jax.Array, jax.Array, dict]:
        raise NotImplementedError

    def reset_episode(self, key: jax.Array, params: Any, episode_index: jax.Array) -> tuple[jax.Array, Any]:
        """The start of episode `episode_index` of a trial (the trial's resets call it). Default:
        `reset`; a two-phase family (DREAM's) starts its exploration episode (0) and its
        exploitation episodes (>= 1) differently."""
        return self.reset(key, params)

    def context(self, params: Any) -> jax.Array:
        """The task's parameters as a flat float32 vector: what an explicit-context agent, or a
        decoder's training target, may read. Default: every leaf of `params`, flattened and
        concatenated; families override it with what their reference system calls the context
        (physical factors, a task id). Empty ([0]) for a family whose tasks have no parameters."""
        leaves = [jnp.ravel(jnp.asarray(x, jnp.float32)) for x in jax.tree.leaves(params)]
        return jnp.concatenate(leaves) if leaves else jnp.zeros((0,), jnp.float32)

    @property
    def context_size(self) -> int:
        shape = jax.eval_shape(lambda key: self.context(self.sample_task(key)), jax.random.PRNGKey(0)).shape
        return int(shape[0])

    # --- checks -------------------------------------------------------------------------------
    def check_tasks(self, tasks: Any, owner: str = "tasks") -> int:
        """Check that `tasks` is a batch of this family's tasks (a params pytree stacked on axis 0,
        every leaf shaped and typed like `sample_task`'s); returns the number of tasks. Raises
        `ConfigError` naming the first leaf that does not match."""
        want = jax.eval_shape(self.sample_task, jax.random.PRNGKey(0))
        want_leaves, want_tree = jax.tree.flatten(want)
        try:
            leaves, tree = jax.tree.flatten(tasks)
        except Exception as error:  # noqa: BLE001  (anything that is not a pytree)
            raise ConfigError(f"{owner}: not a batch of {self.describe()} tasks ({error})") from None
        if tree != want_tree:
            raise ConfigError(
                f"{owner}: not a batch of {self.describe()} tasks: expected the structure {want_tree}, got {tree}"
            )
        if not leaves:
            raise ConfigError(f"{owner}: the tasks are empty")
        num = None
        for i, (leaf, ref) in enumerate(zip(leaves, want_leaves)):
            shape = tuple(getattr(leaf, "shape", ()))
            if len(shape) != len(ref.shape) + 1 or shape[1:] != tuple(ref.shape):
                raise ConfigError(
                    f"{owner}: leaf {i} of the tasks has shape {shape}, but {self.describe()} tasks stacked on a "
                    f"leading axis have shape (num_tasks, {', '.join(map(str, ref.shape))}{',' if len(ref.shape) == 1 else ''})"
                )
            if num is None:
                num = shape[0]
            elif shape[0] != num:
                raise ConfigError(f"{owner}: every leaf of the tasks must have the same leading (task) axis, got {num} and {shape[0]}")
        if num == 0:
            raise ConfigError(f"{owner}: the tasks are empty")
        return int(num)

    # --- conveniences -------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The family's options as a JSON-able dict (what `make(name, **options)` rebuilds): its
        constructor's fields (a field fixed by the family, `init=False`, is not an option)."""
        values = dataclasses.asdict(self)
        return {f.name: values[f.name] for f in dataclasses.fields(self) if f.init}

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options().items())
        return f"{self.name}({opts})"


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample_tasks(env: Environment, key: jax.Array, num: int) -> Any:
    return jax.vmap(env.sample_task)(jax.random.split(key, num))
