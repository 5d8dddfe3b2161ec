"""Registry of classical in-context agents: which families each applies to, and tuned defaults.

`make(name, env, episodes, **hparams)` builds a baseline; hyperparameters not given take the
tuned default for the setting (`tuned_defaults`), else the class default."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from metarl.agents import Agent
from metarl.envs.base import Environment
from metarl.errors import ConfigError

_BASELINES: dict[str, type[Agent]] = {}
_FAMILIES: dict[str, tuple[str, ...]] = {}
#: name -> function(env, episodes) -> dict of tuned hyperparameters for that setting
_TUNED: dict[str, Callable[[Environment, int], dict[str, Any]]] = {}


def register(*families: str, tuned: Callable[[Environment, int], dict[str, Any]] | None = None):
    """Class decorator: register a baseline for the given task families."""

    def deco(cls: type[Agent]) -> type[Agent]:
        if cls.name in _BASELINES and _BASELINES[cls.name] is not cls:
            raise ValueError(f"baseline {cls.name!r} registered twice")
        _BASELINES[cls.name] = cls
        _FAMILIES[cls.name] = tuple(families)
        if tuned is not None:
            _TUNED[cls.name] = tuned
        return cls

    return deco


def names(family: str | None = None) -> list[str]:
    """Baselines applicable to `family` (all when None), in registration order."""
    return [n for n in _BASELINES if family is None or family in _FAMILIES[n]]


def families(name: str) -> tuple[str, ...]:
    return _FAMILIES[name]


def tuned_defaults(name: str, env: Environment, episodes: int) -> dict[str, Any]:
    return dict(_TUNED[name](env, episodes)) if name in _TUNED else {}


def make(name: str, env: Environment, episodes: int, **hparams: Any) -> Agent:
    """Build baseline `name` for `env` and trials of `episodes` episodes."""
    if name not in _BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; valid names: {', '.join(names())}")
    if env.name not in _FAMILIES[name]:
        raise ConfigError(
            f"baseline {name!r} does not apply to task family {env.name!r} (it applies to "
            f"{', '.join(_FAMILIES[name])}); baselines for {env.name!r}: {', '.join(names(env.name)) or '(none)'}"
        )
    cls = _BASELINES[name]
    valid = [f.name for f in dataclasses.fields(cls) if f.name not in ("env", "episodes")]
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ConfigError(
            f"baseline {name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"its hyperparameters are: {', '.join(valid) or '(none)'}"
        )
    kwargs = {**tuned_defaults(name, env, episodes), **hparams}
    return cls(env=env, episodes=episodes, **kwargs)
