"""LunarLander with CARL-style gravity contexts: Gymnasium's Box2D LunarLander-v3 (discrete, 4
actions), stepped from the host (the `box2d` extra: `pip install 'metarl[box2d]'`).

    metarl.make("lunarlander", factors="gravity")          # gravity x U(0.1, 2.2) of 10 m/s^2, 100 contexts
    metarl train dqn lunarlander --factors gravity          # the host-stepped DQN (metarl.algos.host)

Box2D's physics cannot run inside a jitted JAX function, so this family is *host-stepped*
(`host_stepped = True`): its episodes run in Gymnasium environments that `make_gym` builds, one per
stream, and the learner's jitted parts (acting, the replay buffer and the gradient steps) are fed
from the host (`metarl.algos.host`). `reset` gives a placeholder observation of the right shape
(so a learner's state can be laid out); `step` is an error inside a jitted rollout.

A task is one context: `LunarParams(gravity)`, the magnitude of the downward gravity in m/s^2
(Gymnasium's default 10). Gymnasium's constructor accepts gravity in (-12, 0) only; the reference
study's range (x 0.1 to 2.2, evaluation up to x 4.4 = 44 m/s^2) lies outside it, so the context is
set on the environment's `gravity` attribute, which `reset` reads when it builds the Box2D world
(CARL sets the world's gravity the same way). The `context` vector is the multiplier of the
default. Episodes: at most `max_steps_in_episode` (1000, LunarLander-v3's time limit: a truncation);
landing at rest, crashing or leaving the screen terminate, as in Gymnasium.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metarl.envs.base import Environment
from metarl.envs.contextual import ContextualFamily
from metarl.envs.registry import register
from metarl.errors import ConfigError, check, check_int

DEFAULT_GRAVITY = 10.0  #: Gymnasium LunarLander's gravity magnitude (m/s^2)


@struct.dataclass
class LunarParams:
    gravity: jax.Array  #: float32, the magnitude of the downward gravity (m/s^2)


def _box2d_lander():
    try:
        from gymnasium.envs.box2d.lunar_lander import LunarLander
    except ImportError as error:
        raise ConfigError("lunarlander needs Gymnasium's Box2D environments: pip install 'metarl[box2d]' "
                          f"(box2d and pygame; {error})") from None
    return LunarLander


@register
@dataclasses.dataclass(frozen=True)
class LunarLanderContexts(Environment):
    """Gymnasium's LunarLander-v3 with gravity contexts, host-stepped (see the module doc)."""

    name: ClassVar[str] = "lunarlander"
    fixed_horizon: ClassVar[bool] = False
    host_stepped: ClassVar[bool] = True
    #: factor name -> (parameter, reference range of its multiplier)
    FACTORS: ClassVar[dict[str, tuple[str, tuple[float, float]]]] = {"gravity": ("gravity", (0.1, 2.2))}
    DEFAULT_FACTORS: ClassVar[str] = "gravity"

    factors: str = ""  #: "gravity" (the reference range x U(0.1, 2.2)) or gravity=LOW:HIGH ("": gravity)
    contexts: int = 100  #: training contexts drawn once from context_seed; 0: a fresh context per task
    context_seed: int = 0  #: the training contexts are drawn from PRNGKey(context_seed)
    max_steps: int = 1000  #: the episode's time limit (a truncation; LunarLander-v3's 1000)

    def __post_init__(self):
        check(isinstance(self.factors, str), f"{self.name}: factors must be a string, e.g. gravity or gravity=0.5:1.5")
        check_int(self.name, "contexts", self.contexts, low=0)
        check_int(self.name, "context_seed", self.context_seed, low=0)
        check_int(self.name, "max_steps", self.max_steps, low=1)
        self.factor_ranges  # noqa: B018  (validates)

    factor_ranges = ContextualFamily.factor_ranges  # the same parsing and errors as the classic-control families

    # --- shapes -------------------------------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        return 4  # noop, left engine, main engine, right engine

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (8,)  # x, y, vx, vy, angle, angular velocity, left leg contact, right leg contact

    @property
    def max_steps_in_episode(self) -> int:
        return self.max_steps

    # --- tasks ------------------------------------------------------------------------------------
    def _range(self) -> tuple[float, float]:
        (_, _, low, high), = self.factor_ranges
        return low, high

    def _fresh(self, key: jax.Array) -> LunarParams:
        low, high = self._range()
        return LunarParams(gravity=DEFAULT_GRAVITY * jax.random.uniform(key, (), jnp.float32, low, high))

    def training_tasks(self) -> LunarParams:
        keys = jax.random.split(jax.random.PRNGKey(self.context_seed), max(self.contexts, 1))
        return jax.vmap(self._fresh)(keys)

    def sample_task(self, key: jax.Array) -> LunarParams:
        if self.contexts == 0:
            return self._fresh(key)
        i = jax.random.randint(key, (), 0, self.contexts)
        return jax.tree.map(lambda x: x[i], self.training_tasks())

    def task_with(self, gravity: float) -> LunarParams:
        """The context of this gravity magnitude (m/s^2, positive)."""
        check(np.isfinite(gravity) and gravity > 0, f"{self.name}: gravity must be positive (a magnitude, m/s^2), got {gravity}", "gravity")
        return LunarParams(gravity=jnp.float32(gravity))

    def evaluation_tasks(self, factor: str | None = None, num: int = 40) -> tuple[np.ndarray, Any, np.ndarray]:
        """(multipliers linspace(LOW / 2, HIGH x 2, num), the tasks stacked, inside the training range)."""
        check_int(self.name, "num", num, low=1)
        if factor not in (None, "gravity"):
            raise ConfigError(f"{self.name}: {factor!r} is not one of this family's factors (gravity)")
        low, high = self._range()
        multipliers = np.linspace(low / 2, high * 2, num)
        tasks = LunarParams(gravity=jnp.asarray(DEFAULT_GRAVITY * multipliers, jnp.float32))
        return multipliers, tasks, (multipliers >= low) & (multipliers <= high)

    def context(self, params: LunarParams) -> jax.Array:
        return (jnp.asarray(params.gravity, jnp.float32) / DEFAULT_GRAVITY)[None]

    # --- the host side ------------------------------------------------------------------------------
    def make_gym(self) -> Any:
        """A Gymnasium LunarLander (no wrappers: the time limit is `max_steps`, counted by the
        host loop); give it a context with `set_context` before each reset."""
        return _box2d_lander()()

    @staticmethod
    def set_context(gym_env: Any, task: LunarParams) -> None:
        """Task `task`'s context for the next `reset` (which builds the Box2D world with it)."""
        gym_env.gravity = -float(task.gravity)

    # --- the jitted API: shapes only ----------------------------------------------------------------
    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        """A placeholder: zeros of the observation's shape (the episodes run on the host)."""
        return jnp.zeros(self.obs_shape, jnp.float32), jnp.zeros((), jnp.int32)

    def step(self, key, state, action, params):
        raise ConfigError(f"{self.name} is stepped from the host (Box2D): train it with DQN (metarl train dqn {self.name}, "
                          "metarl.algos.host) and evaluate with its host evaluation; it has no jitted step")
