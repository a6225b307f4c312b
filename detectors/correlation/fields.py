"""Reading group-by and value fields from events, and normalising them into keys.

Lookup order for a field name ``a.b``: the flat key ``"a.b"``, then the nested
path ``a`` -> ``b`` (any mix of flat and nested segments), then the same
case-insensitively (the Sigma engine treats field names case-insensitively).
The fast path is one ``dict.get``.

Group-key values compare case-insensitively for strings, like Sigma's default
string matching (``ADMIN`` and ``admin`` are one user); the alert shows the
value as the event that fired spelled it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MISSING: Any = object()
"""Sentinel: the field is absent, null, or an empty list."""

_MAX_DEPTH = 16


def get_field(event: Mapping[str, Any], name: str) -> Any:
    """The field's value, or :data:`MISSING`. A list yields its first element."""
    value = event.get(name, MISSING)
    if value is MISSING:
        value = _nested(event, name, 0)
        if value is MISSING:
            value = _nested_folded(event, name.lower(), 0)
    if isinstance(value, list | tuple):
        value = value[0] if value else MISSING
    if value is None:
        return MISSING
    return value


def _nested(obj: Mapping[str, Any], path: str, depth: int) -> Any:
    if path in obj:
        return obj[path]
    if depth >= _MAX_DEPTH:
        return MISSING
    dot = path.find(".")
    while dot != -1:
        head = obj.get(path[:dot], MISSING)
        if isinstance(head, Mapping):
            found = _nested(head, path[dot + 1:], depth + 1)
            if found is not MISSING:
                return found
        dot = path.find(".", dot + 1)
    return MISSING


def _nested_folded(obj: Mapping[str, Any], path: str, depth: int) -> Any:
    """Case-insensitive variant of :func:`_nested` (``path`` already lower-cased)."""
    if depth >= _MAX_DEPTH:
        return MISSING
    for key, value in obj.items():
        lowered = str(key).lower()
        if lowered == path:
            return value
        if path.startswith(lowered + ".") and isinstance(value, Mapping):
            found = _nested_folded(value, path[len(lowered) + 1:], depth + 1)
            if found is not MISSING:
                return found
    return MISSING


def key_part(value: Any) -> Any:
    """A hashable, JSON-friendly normal form of one group or distinct value."""
    if type(value) is str:
        return value.lower()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # NaN != NaN would make every NaN a new group
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return repr(sorted((str(k), key_part(v)) for k, v in value.items()))
    return str(value).lower()


def as_number(value: Any) -> float | None:
    """Numbers and numeric strings as float; anything else (bools, junk, inf/nan) is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
