"""Small matching helpers shared by routes, silences, suppression and grouping."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from detectors.alert import Alert
from detectors.event import MISSING, get, values


def field_value(alert: Alert, path: str) -> Any:
    """A field's one value for grouping (:func:`detectors.event.get`), else a matched field's
    value; ``None`` when neither has it."""
    value = get(alert.event, path)
    if value is MISSING:
        return _matched(alert, path)
    return value


def field_values(alert: Alert, path: str) -> list[Any]:
    """Every non-null value of a field for matching (:func:`detectors.event.values`: any list
    element counts, as in Sigma), else the matched field's value."""
    found = [v for v in values(alert.event, path) if v is not None] if alert.event is not None else []
    if not found:
        matched = _matched(alert, path)
        if matched is not None:
            found.append(matched)
    return found


def _matched(alert: Alert, path: str) -> Any:
    for name, matched in alert.matched:
        if name == path:
            return matched
    return None


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
        texts = [as_text(v) for v in field_values(alert, path)] or [""]
        if not glob_any(options, texts):
            return False
    return True
