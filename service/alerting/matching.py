"""Small matching helpers shared by routes, silences, suppression and grouping."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from detectors.alert import Alert

_MISSING = object()


def lookup(event: Mapping[str, Any] | None, path: str) -> Any:
    """Value at a dotted path; a flat key containing dots wins over nesting.
    Returns ``None`` when absent."""
    if event is None:
        return None
    value = event.get(path, _MISSING)
    if value is not _MISSING:
        return value
    current: Any = event
    for part in path.split("."):
        if type(current) is not dict and not isinstance(current, Mapping):
            return None
        current = current.get(part, _MISSING)
        if current is _MISSING:
            return None
    return current


def field_value(alert: Alert, path: str) -> Any:
    """A field for matching: the event's value, else a matched field's value."""
    value = lookup(alert.event, path)
    if value is None:
        for name, matched in alert.matched:
            if name == path:
                return matched
    return value


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern.lower()))


def glob_any(patterns: Iterable[str], values: Iterable[str]) -> bool:
    """True if any value matches any pattern (``*``/``?`` globs, case-insensitive)."""
    values = [v.lower() for v in values]
    for pattern in patterns:
        if "*" in pattern or "?" in pattern or "[" in pattern:
            rx = _glob(pattern)
            if any(rx.fullmatch(v) for v in values):
                return True
        elif pattern.lower() in values:
            return True
    return False


def fields_match(alert: Alert, wanted: Mapping[str, str | list[str]]) -> bool:
    for path, expected in wanted.items():
        options = [expected] if isinstance(expected, str) else expected
        value = field_value(alert, path)
        texts = [as_text(v) for v in value] if isinstance(value, list) else [as_text(value)]
        if not glob_any(options, texts):
            return False
    return True
