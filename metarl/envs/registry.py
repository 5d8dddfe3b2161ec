"""Registry of task families: `make(name, **options)` with clear errors for bad input."""

from __future__ import annotations

import dataclasses
from typing import Any

from metarl.envs.base import Environment
from metarl.errors import ConfigError

_FAMILIES: dict[str, type[Environment]] = {}


def register(cls: type[Environment]) -> type[Environment]:
    """Class decorator: add a task family under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no registry name")
    if cls.name in _FAMILIES and _FAMILIES[cls.name] is not cls:
        raise ValueError(f"task family {cls.name!r} registered twice")
    _FAMILIES[cls.name] = cls
    return cls


def names() -> list[str]:
    """Names of every registered task family, sorted."""
    return sorted(_FAMILIES)


def jitted_names() -> list[str]:
    """The families whose `step` runs under jit (every one but the host-stepped, e.g. lunarlander)."""
    return [n for n in names() if not _FAMILIES[n].host_stepped]


def family_class(name: str) -> type[Environment]:
    if name not in _FAMILIES:
        raise ConfigError(f"unknown task family {name!r}; valid names: {', '.join(names())}")
    return _FAMILIES[name]


def option_fields(name: str) -> list[dataclasses.Field]:
    """The options of a family (dataclass fields), in declaration order."""
    return [f for f in dataclasses.fields(family_class(name)) if f.init]


def make(name: str, **options: Any) -> Environment:
    """Build the task family `name` with its options, e.g. `make("bandit", arms=5)`.

    Raises `ConfigError` for an unknown name (listing the valid ones), an unknown option (listing
    the family's options) or an invalid value (naming the option and its allowed range)."""
    cls = family_class(name)
    valid = [f.name for f in option_fields(name)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"task family {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(valid) or '(none)'}"
        )
    return cls(**options)
