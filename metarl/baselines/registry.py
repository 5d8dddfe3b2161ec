"""Registry of classical in-context agents: which families each applies to, and tuned defaults.

`make(name, env, episodes, **hparams)` builds a baseline; hyperparameters not given take the
tuned default for the setting (`tuned_defaults`), else the class default."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from metarl.agents import Agent
from metarl.envs.base import Environment
from metarl.errors import ConfigError

#: name -> family -> class: one name ("greedy", "oracle") may have one class per family
_BASELINES: dict[str, dict[str, type[Agent]]] = {}
#: (name, family) -> function(env, episodes) -> dict of tuned hyperparameters for that setting
_TUNED: dict[tuple[str, str], Callable[[Environment, int], dict[str, Any]]] = {}


def register(*families: str, tuned: Callable[[Environment, int], dict[str, Any]] | None = None):
    """Class decorator: register a baseline for the given task families."""

    def deco(cls: type[Agent]) -> type[Agent]:
        for family in families:
            known = _BASELINES.setdefault(cls.name, {})
            if known.get(family, cls) is not cls:
                raise ValueError(f"baseline {cls.name!r} registered twice for {family!r}")
            known[family] = cls
            if tuned is not None:
                _TUNED[(cls.name, family)] = tuned
        return cls

    return deco


def names(family: str | None = None) -> list[str]:
    """Baselines applicable to `family` (all when None), in registration order."""
    return [n for n in _BASELINES if family is None or family in _BASELINES[n]]


def families(name: str) -> tuple[str, ...]:
    return tuple(_BASELINES[name])


def baseline_class(name: str, family: str) -> type[Agent]:
    if name not in _BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; valid names: {', '.join(names())}")
    if family not in _BASELINES[name]:
        raise ConfigError(
            f"baseline {name!r} does not apply to task family {family!r} (it applies to "
            f"{', '.join(_BASELINES[name])}); baselines for {family!r}: {', '.join(names(family)) or '(none)'}"
        )
    return _BASELINES[name][family]


def tuned_defaults(name: str, env: Environment, episodes: int) -> dict[str, Any]:
    """The tuned hyperparameters of baseline `name` for this setting ({} when untuned)."""
    fn = _TUNED.get((name, env.name))
    return dict(fn(env, episodes)) if fn is not None else {}


def make(name: str, env: Environment, episodes: int, **hparams: Any) -> Agent:
    """Build baseline `name` for `env` and trials of `episodes` episodes."""
    cls = baseline_class(name, env.name)
    valid = [f.name for f in dataclasses.fields(cls) if f.name not in ("env", "episodes")]
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ConfigError(
            f"baseline {name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"its hyperparameters are: {', '.join(valid) or '(none)'}"
        )
    kwargs = {**tuned_defaults(name, env, episodes), **hparams}
    return cls(env=env, episodes=episodes, **kwargs)
