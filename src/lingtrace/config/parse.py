"""A config dataclass from a mapping: unknown keys refused, values coerced to the field types
(``a,b`` strings to lists, ``k=v`` strings to mappings, ``yes``/``no`` to booleans)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from lingtrace.errors import LingtraceError


def from_dict(cls, d: dict[str, Any], prefix: str):
    if not isinstance(d, dict):
        raise LingtraceError(f"config section {prefix or '<root>'} must be a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        key = sorted(unknown)[0]
        raise LingtraceError(
            f"unknown config key {prefix + key!r}", f"valid keys under {prefix or '<root>'}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = from_dict(tp, d[f.name], f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = coerce(d[f.name], tp, prefix + f.name)
    return cls(**kwargs)


def coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list | tuple):
            raise LingtraceError(f"config key {key!r} must be a list, got {value!r}")
        return [coerce(v, args[0], key) for v in value]
    if origin is dict:
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("{") else dict(kv.split("=", 1) for kv in value.split(",") if kv)
        if not isinstance(value, dict):
            raise LingtraceError(f"config key {key!r} must be a mapping, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise LingtraceError(f"config key {key!r} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise LingtraceError(f"config key {key!r} must be a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError) as e:
            raise LingtraceError(f"config key {key!r} must be {tp.__name__}, got {value!r}") from e
        if tp is int and isinstance(value, float) and not float(value).is_integer():
            raise LingtraceError(f"config key {key!r} must be an integer, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, dict | list):
            raise LingtraceError(f"config key {key!r} must be a string, got {value!r}")
        return str(value)
    return value
