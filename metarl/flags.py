"""Command-line value types shared by the config dataclasses (light: no JAX computation, so the
command line can read its global options before JAX starts)."""

from __future__ import annotations

import tyro

__all__ = ["NamesFlag", "names_list"]


def names_list(text: str) -> tuple[str, ...] | None:
    """'a,b' -> ('a', 'b'); 'none' -> () (no names); 'all' -> None (every one that applies)."""
    if text.strip().lower() == "all":
        return None
    if text.strip().lower() == "none":
        return ()
    return tuple(n.strip() for n in text.split(",") if n.strip())


#: a comma-separated list of names on the command line (`--eval-baselines random,ucb1`)
NamesFlag = tyro.constructors.PrimitiveConstructorSpec(
    nargs=1,
    metavar="A,B,...",
    instance_from_str=lambda args: names_list(args[0]),
    is_instance=lambda value: value is None or isinstance(value, tuple),
    str_from_instance=lambda value: ["all" if value is None else (",".join(value) or "none")],
)
