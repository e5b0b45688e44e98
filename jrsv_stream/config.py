"""Strict config loading shared by every config of the project: frozen dataclasses built
from YAML/JSON dicts, where unknown keys, missing required keys and values of the wrong type
are errors that name the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration file or dict does not match its dataclass (unknown or bad keys)."""


def config_from_dict(cls: type, d: Any, where: str = "") -> Any:
    """Build a (nested) frozen dataclass from a dict, strictly: unknown keys, missing
    required keys and values of the wrong type are :class:`ConfigError`.

    Supports fields typed as dataclasses, ``int``, ``float`` (ints accepted), ``str``,
    ``bool``, ``X | None`` and ``tuple[X, ...]`` (lists accepted).
    """
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown keys {unknown} (allowed: {sorted(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        if f.name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: required key missing")
            continue
        kwargs[f.name] = _coerce(hints[f.name], d[f.name], key)
    return cls(**kwargs)


def _coerce(tp: Any, v: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, v, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, v, key)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {v!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], x, f"{key}[{i}]") for i, x in enumerate(v))
        if len(args) != len(v):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(v)}")
        return tuple(_coerce(a, x, f"{key}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{key}: expected true/false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{key}: expected an integer, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{key}: expected a string, got {v!r}")
        return v
    raise ConfigError(f"{key}: unsupported config type {tp}")
