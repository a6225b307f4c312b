"""Event timestamps as float epoch seconds: the one parser every detector and input uses.

Stateful detectors run in event time, so an event's time must be read the same
way everywhere. Accepted: epoch seconds or milliseconds (numbers or numeric
strings; values above 1e11 are milliseconds), ISO 8601 strings (``Z`` or an
offset; no offset means UTC) and ``datetime`` objects. Times before 1970 or
after the year 9999 are refused.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from detectors.errors import DetectorError

EPOCH_MS_THRESHOLD = 1e11
"""Numbers above this are epoch milliseconds (1e11 s is the year 5138; 1e11 ms is 1973)."""
MAX_TS = 253402300799.0
"""9999-12-31T23:59:59Z: later times cannot be printed as ISO 8601 and are refused."""


class BadTimestamp(DetectorError, ValueError):
    """A timestamp value that is present but cannot be read."""


def parse_timestamp(value: Any) -> float:
    """Epoch seconds from ``value``; raises :class:`BadTimestamp` saying why not."""
    if isinstance(value, bool) or value is None:
        raise BadTimestamp(f"{value!r} is not a timestamp")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) >= 10 and text[4] == "-":  # ISO 8601 first: cheaper than a failed float()
            return _iso_seconds(text)
        try:
            ts = float(text)
        except ValueError:
            return _iso_seconds(text)
    elif isinstance(value, datetime):
        ts = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()
    else:
        raise BadTimestamp(f"{type(value).__name__} is not a timestamp")
    if not math.isfinite(ts) or ts < 0:
        raise BadTimestamp(f"timestamp out of range: {value!r}")
    if ts > EPOCH_MS_THRESHOLD:
        ts /= 1000.0
    if ts > MAX_TS:
        raise BadTimestamp(f"timestamp out of range: {value!r}")
    return ts


def to_epoch(value: Any) -> float | None:
    """Epoch seconds from ``value``, or None when it is not a readable timestamp."""
    try:
        return parse_timestamp(value)
    except BadTimestamp:
        return None


def _iso_seconds(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise BadTimestamp(f"unparseable timestamp {text[:64]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ts = parsed.timestamp()
    if ts < 0:
        raise BadTimestamp(f"timestamp before 1970: {text[:64]!r}")
    return ts
