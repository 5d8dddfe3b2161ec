"""Errors a user can act on. Everything raised for bad input derives from `MetarlError`."""


class MetarlError(Exception):
    """Base class of every error metarl raises on purpose."""

    exit_code = 2  #: the command line's exit status for it (bad input)


class ConfigError(MetarlError, ValueError):
    """An invalid name, argument or configuration value; the message names it and what is allowed.
    `field` is the config field at fault, where there is one (the command line names its flag)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class CheckpointError(MetarlError, RuntimeError):
    """A checkpoint that is missing, corrupt, or does not match the run's configuration."""


def check(condition: bool, message: str, field: str | None = None) -> None:
    """Raise `ConfigError(message, field)` unless `condition` holds (used by config `__post_init__`s)."""
    if not condition:
        raise ConfigError(message, field)


def check_int(owner: str, field: str, value, low: int | None = None, high: int | None = None) -> None:
    """Validate an integer field: its type and the closed range [low, high] (either end optional)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}: {field} must be an integer, got {value!r}", field)
    if low is not None and value < low:
        raise ConfigError(f"{owner}: {field} must be >= {low}, got {value}", field)
    if high is not None and value > high:
        raise ConfigError(f"{owner}: {field} must be <= {high}, got {value}", field)


def check_float(
    owner: str,
    field: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Validate a real-valued field: a finite number in the range given (open or closed ends)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}: {field} must be a finite number, got {value!r}", field)
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"{owner}: {field} must be {'>' if low_open else '>='} {low}, got {value}", field)
    if high is not None and (value >= high if high_open else value > high):
        raise ConfigError(f"{owner}: {field} must be {'<' if high_open else '<='} {high}, got {value}", field)
