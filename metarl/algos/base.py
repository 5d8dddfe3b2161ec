"""The algorithm interface and registry.

An algorithm is built from a task family, the number of episodes in a trial and a config (a
frozen, validated dataclass whose defaults reproduce the reference run). It exposes pure,
jittable functions; the host loop in `metarl.run` vmaps them over seeds, scans `update` in
chunks and owns all I/O (logging, checkpoints, evaluation):

    init(key) -> train_state                  # a pytree of arrays only
    update(train_state) -> (train_state, metrics)   # metrics: dict of float32 scalars
    agent() -> metarl.agents.Agent             # the in-context agent the evaluator scores
    agent_params(train_state) -> params        # what that agent's `act` takes as params
    steps_per_update: int                      # environment steps consumed by one update
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from metarl.agents import Agent
from metarl.envs.base import Environment
from metarl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Algorithm:
    name: ClassVar[str] = ""
    Config: ClassVar[type] = type(None)  # each algorithm sets its config dataclass
    presets: ClassVar[dict[str, Any]] = {}  #: named configs (`--preset NAME`), each a `Config`

    env: Environment
    episodes: int
    config: Any

    @property
    def steps_per_update(self) -> int:
        raise NotImplementedError

    def init(self, key) -> Any:
        raise NotImplementedError

    def update(self, train_state: Any) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def agent(self) -> Agent:
        raise NotImplementedError

    def agent_params(self, train_state: Any) -> Any:
        raise NotImplementedError


_ALGOS: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    _ALGOS[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_ALGOS)


def algorithm_class(name: str) -> type[Algorithm]:
    if name not in _ALGOS:
        raise ConfigError(f"unknown algorithm {name!r}; valid names: {', '.join(names()) or '(none yet)'}")
    return _ALGOS[name]


def make(name: str, env: Environment, episodes: int, **config: Any) -> Algorithm:
    """Build algorithm `name` on `env` with trials of `episodes` episodes; `config` overrides
    fields of the algorithm's config dataclass (unknown fields raise ConfigError)."""
    cls = algorithm_class(name)
    valid = [f.name for f in dataclasses.fields(cls.Config)]
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise ConfigError(
            f"algorithm {name!r} has no option {', '.join(map(repr, unknown))}; its options are: {', '.join(valid)}"
        )
    return cls(env=env, episodes=episodes, config=cls.Config(**config))
