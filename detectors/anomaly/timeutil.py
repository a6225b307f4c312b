"""Durations in check files and event timestamps, both as float epoch seconds.

Why: checks run in event time, so every event's time must be read the same way
(ISO 8601 strings, epoch seconds or milliseconds) and bad values must be told
apart from missing ones so they can be counted as skips.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

EPOCH_MS_THRESHOLD = 1e11
"""Numbers above this are epoch milliseconds (1e11 s is the year 5138)."""
MAX_TS = 253402300799.0
"""9999-12-31T23:59:59Z: later times cannot be printed as ISO 8601 and are refused."""


def parse_duration(value: Any) -> float:
    """Seconds for ``"90s"``, ``"5m"``, ``"1h30m"``, ``"7d"``, ``"2w"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h30m, 7d)")
    else:
        raise ValueError(f"not a duration: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


class BadTimestamp(ValueError):
    """A timestamp value that is present but cannot be read."""


def parse_timestamp(value: Any) -> float:
    """Epoch seconds from epoch s/ms numbers (or numeric strings) or ISO 8601 strings.

    Naive ISO times are taken as UTC. Raises :class:`BadTimestamp`.
    """
    if isinstance(value, bool):
        raise BadTimestamp(f"boolean is not a timestamp: {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            ts = float(text)
        except ValueError:
            return _iso_seconds(text)
    else:
        raise BadTimestamp(f"{type(value).__name__} is not a timestamp")
    if not math.isfinite(ts) or ts < 0:
        raise BadTimestamp(f"timestamp out of range: {value!r}")
    if ts > EPOCH_MS_THRESHOLD:
        ts /= 1000.0
    if ts > MAX_TS:
        raise BadTimestamp(f"timestamp out of range: {value!r}")
    return ts


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


def iso(ts: float) -> str:
    """ISO 8601 UTC text with millisecond precision."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
