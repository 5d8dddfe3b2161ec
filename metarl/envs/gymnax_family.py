"""Any gymnax environment as a task family: a task is the environment's `EnvParams` with named
parameters sampled as multiples of their defaults (CARL's contexts: `length=0.2:2.2` draws the
pole length as U(0.2, 2.2) x 0.5 m).

    metarl.make("gymnax", env_id="CartPole-v1", factors="length=0.2:2.2,gravity=0.2:2.2")

`factors` is a comma-separated list of `NAME=LOW:HIGH` (a real-valued field of the environment's
`EnvParams`, and the range of the multiplier of its default); an unknown name, an integer field or
a bad range is a `ConfigError` that lists the valid names. The task's `context` is the sampled
parameters' values, in the order given.

A factor sets the physics, derived quantities included: CartPole's `total_mass` and
`polemass_length` are stored as separate fields in gymnax, so they are recomputed from the sampled
`masspole`, `masscart` and `length` (`update_derived=True`). CARL 1.1.1 sets the named field
only, which leaves its `length` and `masspole` contexts partly inert; `update_derived=False`
reproduces that, to compare with published CARL results.

Steps follow gymnax 1.x: `step_env` gives termination, the time limit (`max_steps_in_episode`) is
a truncation. Episodes end early (`fixed_horizon = False`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from metarl.envs.base import Environment, is_discrete
from metarl.envs.registry import register
from metarl.errors import ConfigError, check


def _cartpole_derived(p):
    return p.replace(total_mass=p.masspole + p.masscart, polemass_length=p.masspole * p.length)


def _acrobot_derived(p):  # the links' centres of mass sit at half their lengths
    return p.replace(link_com_pos_1=0.5 * p.link_length_1, link_com_pos_2=0.5 * p.link_length_2)


#: env_id -> (params -> params with the quantities derived from sampled ones recomputed)
DERIVED: dict[str, Callable[[Any], Any]] = {"CartPole-v1": _cartpole_derived, "Acrobot-v1": _acrobot_derived}


@functools.lru_cache(maxsize=None)
def _make(env_id: str):
    import gymnax

    if env_id not in gymnax.registered_envs:
        raise ConfigError(f"unknown gymnax environment {env_id!r}; valid ids: {', '.join(gymnax.registered_envs)}")
    # cached for the process: its default params must be concrete arrays even when the first call
    # comes from inside a trace (a jitted sample_tasks), not that trace's tracers
    with jax.ensure_compile_time_eval():
        return gymnax.make(env_id)


def parse_factors(text: str, default_params: Any, env_id: str) -> tuple[tuple[str, float, float], ...]:
    """'a=0.5:2,b=1:1.5' -> (("a", 0.5, 2.0), ("b", 1.0, 1.5)), checked against the params."""
    fields = {f.name: getattr(default_params, f.name) for f in dataclasses.fields(default_params)}
    real = [n for n, v in fields.items() if isinstance(v, float) or (hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.floating))]
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, _, bounds = part.partition("=")
        name = name.strip()
        if name not in fields:
            raise ConfigError(f"gymnax {env_id}: unknown parameter {name!r} in factors; its real-valued parameters are: {', '.join(real)}")
        if name not in real:
            raise ConfigError(f"gymnax {env_id}: parameter {name!r} is not real-valued; factors scale one of: {', '.join(real)}")
        try:
            low, high = (float(x) for x in bounds.split(":"))
        except ValueError:
            raise ConfigError(f"gymnax {env_id}: factor {part!r} must read NAME=LOW:HIGH, e.g. {name}=0.5:2.0") from None
        check(0 <= low <= high and high < float("inf"), f"gymnax {env_id}: factor {name} needs 0 <= LOW <= HIGH, got {low}:{high}")
        if name in (n for n, _, _ in out):
            raise ConfigError(f"gymnax {env_id}: parameter {name!r} appears twice in factors")
        out.append((name, low, high))
    return tuple(out)


@register
@dataclasses.dataclass(frozen=True)
class GymnaxFamily(Environment):
    """A gymnax environment whose `EnvParams` are sampled per task (see the module doc)."""

    name = "gymnax"
    fixed_horizon = False
    env_id: str = "CartPole-v1"  #: a gymnax environment id (gymnax.registered_envs)
    factors: str = ""  #: NAME=LOW:HIGH,...: each parameter is U(LOW, HIGH) x its default ("": the defaults)
    update_derived: bool = True  #: recompute derived physics (CartPole's total_mass, polemass_length); False: CARL 1.1.1's behaviour

    def __post_init__(self):
        check(isinstance(self.env_id, str), f"gymnax: env_id must be a string, got {self.env_id!r}")
        check(isinstance(self.factors, str), f"gymnax: factors must be a string NAME=LOW:HIGH,..., got {self.factors!r}")
        check(isinstance(self.update_derived, bool), f"gymnax: update_derived must be true or false, got {self.update_derived!r}")
        self.parsed_factors  # noqa: B018  (validates)

    # --- the gymnax environment ---------------------------------------------------------------
    @property
    def gymnax_env(self):
        return _make(self.env_id)[0]

    @property
    def default_params(self):
        return _make(self.env_id)[1]

    @property
    def parsed_factors(self) -> tuple[tuple[str, float, float], ...]:
        return parse_factors(self.factors, self.default_params, self.env_id)

    # --- shapes -------------------------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        space = self.action_space()
        if not is_discrete(space):
            raise ConfigError(f"gymnax {self.env_id} has continuous (Box) actions: it has no num_actions")
        return int(space.n)

    @property
    def max_steps_in_episode(self) -> int:
        return int(self.default_params.max_steps_in_episode)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.gymnax_env.observation_space(self.default_params).shape)

    def action_space(self, params: Any = None) -> Any:
        return self.gymnax_env.action_space(self.default_params if params is None else params)

    def observation_space(self, params: Any = None) -> Any:
        return self.gymnax_env.observation_space(self.default_params if params is None else params)

    # --- the functional API -------------------------------------------------------------------
    def sample_task(self, key: jax.Array) -> Any:
        params = self.default_params
        factors = self.parsed_factors
        if not factors:
            return jax.tree.map(jnp.asarray, params)
        scales = jax.random.uniform(key, (len(factors),), jnp.float32, 0.0, 1.0)
        values = {
            name: jnp.float32(getattr(params, name)) * (low + (high - low) * scales[i]) for i, (name, low, high) in enumerate(factors)
        }
        params = jax.tree.map(jnp.asarray, params.replace(**values))
        if self.update_derived and self.env_id in DERIVED:
            params = DERIVED[self.env_id](params)
        return params

    def task_with(self, **values: float) -> Any:
        """The task whose named parameters have these values (the others at their defaults, the
        derived ones recomputed per `update_derived`): e.g. an evaluation context."""
        names = [f.name for f in dataclasses.fields(self.default_params)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(f"gymnax {self.env_id}: unknown parameter(s) {', '.join(unknown)}; its parameters: {', '.join(names)}")
        params = jax.tree.map(jnp.asarray, self.default_params.replace(**{k: jnp.float32(v) for k, v in values.items()}))
        if self.update_derived and self.env_id in DERIVED:
            params = DERIVED[self.env_id](params)
        return params

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        obs, state = self.gymnax_env.reset_env(key, params)
        return jnp.asarray(obs, jnp.float32), state

    def step(self, key, state, action, params):
        obs, state, reward, terminated, _ = self.gymnax_env.step_env(key, state, action, params)
        truncated = self.gymnax_env.is_truncated(state, params)
        return jnp.asarray(obs, jnp.float32), state, jnp.asarray(reward, jnp.float32), jnp.asarray(terminated, bool), truncated, {}

    def context(self, params: Any) -> jax.Array:
        """The sampled parameters' values, in the order of `factors` ([0] without factors)."""
        values = [jnp.asarray(getattr(params, name), jnp.float32) for name, _, _ in self.parsed_factors]
        return jnp.stack(values) if values else jnp.zeros((0,), jnp.float32)
