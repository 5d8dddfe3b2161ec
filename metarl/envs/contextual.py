"""Contextual classic control (CARL-style): a task is one *context*, physical parameters scaled from
their defaults, with the training and evaluation context sets of the contextual-RL reference study
(../shared/reference/contextual_rl.md) built in.

    metarl.make("cartpole", factors="length")                    # pole length x U(0.2, 2.2), 100 contexts
    metarl.make("cartpole", factors="tau,gravity", contexts=50)  # two factors at once
    metarl.make("pendulum", factors="length", action_bins=5)     # discrete torques, for DQN
    metarl.make("mountaincar", factors="gravity=0.5:1.5")        # a range of one's own

Families and their factors (reference ranges, multipliers of the default):

    cartpole     tau, length, gravity (0.2, 2.2); also masscart, masspole, force_mag
    mountaincar  gravity (0.1, 2.2); also force, max_speed
    pendulum     length (0.5, 2.2); also gravity, mass, dt, max_torque, max_speed
    acrobot      link_length_1, link_length_2, link_mass_1, link_mass_2 (0.2, 2.2)

`factors` lists factor names (each with its reference range) or `NAME=LOW:HIGH` (a range of one's
own); several at once are sampled independently. Training: `contexts` contexts (100, as the
reference) drawn once from `context_seed`; a task sample is one of them, uniformly (0: a fresh
context for every task). Evaluation (`evaluation_tasks`): for one factor, `num` values (40)
linearly spaced over [LOW / 2, HIGH x 2] x the default, the other factors at their defaults, so
that both interpolation (inside the training range) and extrapolation are scored.

A context sets the physics, derived quantities included (CartPole's `total_mass` and
`polemass_length`, Acrobot's centres of mass); `update_derived=False` gives CARL 1.1.1's
behaviour, which sets the named parameter only. The task's `context` vector is each factor's
multiplier of its default (1 = the default physics), what an explicit-context agent reads.
Dynamics are gymnax's, checked step for step against Gymnasium's (tests/test_contextual.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from metarl.envs.base import is_discrete
from metarl.envs.gymnax_family import DERIVED, GymnaxFamily, parse_factors
from metarl.envs.registry import register
from metarl.errors import ConfigError, check, check_int


@dataclasses.dataclass(frozen=True)
class ContextualFamily(GymnaxFamily):
    """A gymnax classic-control environment with CARL-style contexts (see the module doc)."""

    #: factor name -> (gymnax parameter, reference range of its multiplier)
    FACTORS: ClassVar[dict[str, tuple[str, tuple[float, float]]]] = {}
    DEFAULT_FACTORS: ClassVar[str] = ""

    env_id: str = dataclasses.field(default="", init=False)
    factors: str = ""  #: comma-separated factor names (reference ranges) or NAME=LOW:HIGH ("": the family's default factor)
    contexts: int = 100  #: training contexts drawn once from context_seed (a task is one of them); 0: a fresh context per task
    context_seed: int = 0  #: the training contexts are drawn from PRNGKey(context_seed)
    update_derived: bool = True  #: recompute derived physics (CartPole's total_mass, polemass_length); False: CARL 1.1.1's behaviour
    action_bins: int = 0  #: > 0: a Box action space becomes this many evenly spaced discrete actions (Pendulum for DQN)

    def __post_init__(self):
        check(isinstance(self.factors, str), f"{self.name}: factors must be a string of names or NAME=LOW:HIGH, got {self.factors!r}")
        check_int(self.name, "contexts", self.contexts, low=0)
        check_int(self.name, "context_seed", self.context_seed, low=0)
        check_int(self.name, "action_bins", self.action_bins, low=0)
        check(isinstance(self.update_derived, bool), f"{self.name}: update_derived must be true or false")
        if self.action_bins:
            check(self.action_bins >= 2, f"{self.name}: action_bins must be 0 (Box actions) or >= 2, got {self.action_bins}", "action_bins")
            check(not is_discrete(self._box()), f"{self.name}: action_bins applies to Box actions; {self.env_id} has discrete actions", "action_bins")
        self.factor_ranges  # noqa: B018  (validates)

    # --- factors --------------------------------------------------------------------------------
    @property
    def factor_ranges(self) -> tuple[tuple[str, str, float, float], ...]:
        """(factor name, gymnax parameter, LOW, HIGH) for every factor, in the order given."""
        text = self.factors.strip() or self.DEFAULT_FACTORS
        out = []
        for part in [p.strip() for p in text.split(",") if p.strip()]:
            name, _, bounds = part.partition("=")
            name = name.strip()
            if name not in self.FACTORS:
                raise ConfigError(f"{self.name}: unknown factor {name!r} in factors; valid factors: {', '.join(self.FACTORS)}", "factors")
            param, (low, high) = self.FACTORS[name]
            if bounds:
                try:
                    low, high = (float(x) for x in bounds.split(":"))
                except ValueError:
                    raise ConfigError(f"{self.name}: factor {part!r} must read NAME or NAME=LOW:HIGH, e.g. {name}=0.5:2.0", "factors") from None
            check(0 < low <= high < float("inf"), f"{self.name}: factor {name} needs 0 < LOW <= HIGH, got {low}:{high}", "factors")
            if name in (n for n, *_ in out):
                raise ConfigError(f"{self.name}: factor {name!r} appears twice in factors", "factors")
            out.append((name, param, low, high))
        return tuple(out)

    @property
    def parsed_factors(self) -> tuple[tuple[str, float, float], ...]:
        spec = ",".join(f"{param}={low}:{high}" for _, param, low, high in self.factor_ranges)
        return parse_factors(spec, self.default_params, self.env_id)

    def _default(self, param: str) -> float:
        return float(getattr(self.default_params, param))

    # --- tasks ------------------------------------------------------------------------------------
    def training_tasks(self) -> Any:
        """The `contexts` training contexts, stacked (drawn from PRNGKey(context_seed))."""
        keys = jax.random.split(jax.random.PRNGKey(self.context_seed), max(self.contexts, 1))
        return jax.vmap(super().sample_task)(keys)

    def sample_task(self, key: jax.Array) -> Any:
        if self.contexts == 0:
            return super().sample_task(key)
        i = jax.random.randint(key, (), 0, self.contexts)
        return jax.tree.map(lambda x: x[i], self.training_tasks())

    def task_with(self, **values: float) -> Any:
        """The context whose named gymnax parameters have these values (absolute units; the others
        at their defaults, derived ones recomputed): every value must be positive."""
        for name, value in values.items():
            check(np.isfinite(value) and value > 0, f"{self.name}: {name} must be positive (a physical quantity), got {value}", name)
        return super().task_with(**values)

    def evaluation_tasks(self, factor: str | None = None, num: int = 40) -> tuple[np.ndarray, Any, np.ndarray]:
        """The evaluation contexts of one factor (default: the first): (multipliers [num], tasks
        stacked [num], whether each lies inside the training range [num]). The multipliers are
        linspace(LOW / 2, HIGH x 2, num); the other factors stay at their defaults."""
        check_int(self.name, "num", num, low=1)
        ranges = {name: (param, low, high) for name, param, low, high in self.factor_ranges}
        factor = factor or next(iter(ranges))
        if factor not in ranges:
            raise ConfigError(f"{self.name}: {factor!r} is not one of this family's factors ({', '.join(ranges)})")
        param, low, high = ranges[factor]
        multipliers = np.linspace(low / 2, high * 2, num)
        tasks = [self.task_with(**{param: float(m) * self._default(param)}) for m in multipliers]
        stacked = jax.tree.map(lambda *x: jnp.stack(x), *tasks)
        return multipliers, stacked, (multipliers >= low) & (multipliers <= high)

    def context(self, params: Any) -> jax.Array:
        """Each factor's multiplier of its default, in the order of `factors`."""
        values = [jnp.asarray(getattr(params, param), jnp.float32) / self._default(param) for _, param, _, _ in self.factor_ranges]
        return jnp.stack(values) if values else jnp.zeros((0,), jnp.float32)

    # --- discrete actions for a Box environment -------------------------------------------------
    def _box(self):
        return self.gymnax_env.action_space(self.default_params)

    def action_space(self, params: Any = None) -> Any:
        if self.action_bins:
            return spaces.Discrete(self.action_bins)
        return super().action_space(params)

    @property
    def num_actions(self) -> int:
        return self.action_bins if self.action_bins else super().num_actions

    def action_values(self) -> jax.Array:
        """The Box action of each discrete action [bins, *box shape]: evenly spaced over the box."""
        box = self._box()
        low = jnp.broadcast_to(jnp.asarray(box.low, jnp.float32), box.shape)
        high = jnp.broadcast_to(jnp.asarray(box.high, jnp.float32), box.shape)
        frac = jnp.linspace(0.0, 1.0, self.action_bins)
        return low + (high - low) * frac.reshape((-1,) + (1,) * low.ndim)

    def step(self, key, state, action, params):
        if self.action_bins:
            action = self.action_values()[action]
        return super().step(key, state, action, params)


def _register(name: str, env_id: str, factors: dict[str, tuple[str, tuple[float, float]]], default: str, doc: str):
    cls = dataclasses.make_dataclass(
        name.capitalize() + "Contexts",
        [("env_id", str, dataclasses.field(default=env_id, init=False))],
        bases=(ContextualFamily,),
        frozen=True,
        namespace={"name": name, "FACTORS": factors, "DEFAULT_FACTORS": default, "__doc__": doc, "__module__": __name__},
    )
    globals()[cls.__name__] = cls
    return register(cls)


_CARTPOLE = {"tau": ("tau", (0.2, 2.2)), "length": ("length", (0.2, 2.2)), "gravity": ("gravity", (0.2, 2.2)),
             "masscart": ("masscart", (0.2, 2.2)), "masspole": ("masspole", (0.2, 2.2)), "force_mag": ("force_mag", (0.2, 2.2))}
_register("cartpole", "CartPole-v1", _CARTPOLE, "length", "CartPole-v1 with contexts (tau, length, gravity, ...).")
_register("mountaincar", "MountainCar-v0", {"gravity": ("gravity", (0.1, 2.2)), "force": ("force", (0.1, 2.2)),
                                           "max_speed": ("max_speed", (0.1, 2.2))}, "gravity",
          "MountainCar-v0 with contexts (gravity, force, max_speed).")
_register("pendulum", "Pendulum-v1", {"length": ("l", (0.5, 2.2)), "gravity": ("g", (0.5, 2.2)), "mass": ("m", (0.5, 2.2)),
                                     "dt": ("dt", (0.5, 2.2)), "max_torque": ("max_torque", (0.5, 2.2)),
                                     "max_speed": ("max_speed", (0.5, 2.2))}, "length",
          "Pendulum-v1 with contexts (length, gravity, mass, ...); action_bins > 0 for discrete torques.")
_register("acrobot", "Acrobot-v1", {f"link_{q}_{i}": (f"link_{q}_{i}", (0.2, 2.2)) for q in ("length", "mass") for i in (1, 2)},
          "link_length_1", "Acrobot-v1 with contexts (link lengths and masses).")

assert set(DERIVED) <= {"CartPole-v1", "Acrobot-v1"}
