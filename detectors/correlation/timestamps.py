"""Event time for the correlation engine: epoch seconds from an event field.

The engine takes time as a parameter; this helper is what the CLI and the
service use to derive it, so both read timestamps the same way. Accepted:
epoch seconds or milliseconds (numbers or numeric strings; values above 1e11
are taken as milliseconds), ISO 8601 strings (``Z`` or an offset; no offset
means UTC) and ``datetime`` objects. Anything else is "no timestamp" (None),
which the engine counts as ``missing_timestamp`` for matching events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from detectors.correlation.fields import MISSING, get_field

DEFAULT_TIME_FIELDS: tuple[str, ...] = ("@timestamp", "timestamp", "time", "ts", "event.created", "UtcTime")
"""Tried in order when no field is configured."""

_MS_THRESHOLD = 1e11  # 1e11 s is the year 5138; 1e11 ms is 1973


def to_epoch(value: Any) -> float | None:
    """``value`` as epoch seconds, or None when it is not a timestamp."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return stamp.timestamp()
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return _iso(text)
    else:
        return None
    if not math.isfinite(number):
        return None
    return number / 1000.0 if abs(number) >= _MS_THRESHOLD else number


def _iso(text: str) -> float | None:
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def event_time(event: Mapping[str, Any], fields: Sequence[str] = DEFAULT_TIME_FIELDS) -> float | None:
    """Epoch seconds from the first of ``fields`` present in ``event`` that parses."""
    for name in fields:
        raw = get_field(event, name)
        if raw is not MISSING:
            parsed = to_epoch(raw)
            if parsed is not None:
                return parsed
    return None
