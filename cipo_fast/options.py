"""Config fields that document and check themselves.

Every run configuration is a frozen dataclass whose fields are declared with `opt(default, help, ...)`:
the help text (with its source, where a default comes from another project or a paper) becomes the
`--help` of the command line, and the bounds (`ge`, `gt`, `le`, `lt`) are checked by `check_fields`
from the dataclass's `__post_init__`, together with the rule that every float is finite. A bad value is
a `ValueError` naming the option (`--max-grad-norm: expected > 0, got -1.0`), raised before a run writes
anything.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def opt(default=dataclasses.MISSING, help: str = "", **bounds):
    """A dataclass field with `--help` text and optional bounds (`ge=0`, `gt=0`, `lt=0.5`, ...).
    `default` may be a callable via `factory=` for mutable defaults."""
    unknown = set(bounds) - set(BOUNDS) - {"choices", "factory"}
    assert not unknown, f"opt(): unknown keys {unknown}"
    factory = bounds.pop("factory", None)
    metadata = {"help": help, **bounds}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _numbers(value) -> list:
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return []


def check_fields(obj) -> None:
    """Types, finiteness, bounds and choices of every field of a config dataclass instance."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        _check_type(f.name, value, hints[f.name])
        for v in _numbers(value):
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{flag(f.name)}: expected a finite number, got {v}")
            for key, sign in BOUNDS.items():
                bound = f.metadata.get(key)
                if bound is None:
                    continue
                ok = {"ge": v >= bound, "gt": v > bound, "le": v <= bound, "lt": v < bound}[key]
                if not ok:
                    raise ValueError(f"{flag(f.name)}: expected {sign} {bound}, got {v}")
        choices = f.metadata.get("choices")
        if choices is not None and value is not None:  # None: an Optional field left unset (type-checked)
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if v not in choices:
                    raise ValueError(
                        f"{flag(f.name)}: expected one of {', '.join(map(str, choices))}, got {v!r}"
                    )


def _check_type(name: str, value, hint) -> None:
    """Scalars only (str, int, float, bool, Literal, their Optional, tuples of them); nested configs pass."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{flag(name)}: expected one of {', '.join(map(str, args))}, got {value!r}")
        return
    if origin is tuple:
        if not isinstance(value, tuple):
            raise ValueError(f"{flag(name)}: expected a list of values, got {value!r}")
        for v in value:
            _check_type(name, v, args[0])
        return
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint in (str, bool):
        ok = isinstance(value, hint)
    else:
        return
    if not ok:
        raise ValueError(f"{flag(name)}: expected {hint.__name__}, got {value!r}")
