"""Event field lookup: lower-cased dotted paths over nested and dotted keys.

A rule field ``a.b.c`` matches the nested path, a flat key ``"a.b.c"`` and any
mix (``{"a.b": {"c": 1}}``): the event is flattened once into
``path -> [values]`` where the path joins keys with dots. A list contributes
each element (Elasticsearch semantics: the field matches when any element
does). Intermediate objects are kept too, so ``exists`` sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Flat = dict[str, list[Any]]

MAX_DEPTH = 32
"""Deeper nesting is not descended into (hostile input must not exhaust the stack)."""


def flatten(event: Mapping[str, Any]) -> Flat:
    out: Flat = {}
    _walk(event, "", out, 0)
    return out


_SCALARS = frozenset((str, int, float, bool, type(None)))


_NAMES: dict[Any, str] = {}
"""Lower-cased field names seen so far (bounded): saves a ``lower()`` per key per event."""


def _walk(obj: Mapping[str, Any], prefix: str, out: Flat, depth: int) -> None:
    names = _NAMES
    for key, value in obj.items():
        name = names.get(key) if type(key) is str else None
        if name is None:
            name = key.lower() if type(key) is str else str(key).lower()
            if type(key) is str and len(names) < 65536:
                names[key] = name
        path = f"{prefix}.{name}" if prefix else name
        if type(value) in _SCALARS:
            bucket = out.get(path)
            if bucket is None:
                out[path] = [value]
            else:
                bucket.append(value)
        else:
            _add(path, value, out, depth)


def _add(path: str, value: Any, out: Flat, depth: int) -> None:
    if isinstance(value, list | tuple):
        bucket = out.get(path)
        if bucket is None:
            out[path] = []
        if depth < MAX_DEPTH:
            for element in value:
                _add(path, element, out, depth + 1)
        return
    bucket = out.get(path)
    if bucket is None:
        out[path] = [value]
    else:
        bucket.append(value)
    if isinstance(value, Mapping) and depth < MAX_DEPTH:
        _walk(value, path, out, depth + 1)


def event_strings(flat: Flat) -> list[str]:
    """Every string value of the event (any depth): the domain of keyword search."""
    return [v for values in flat.values() for v in values if type(v) is str]
