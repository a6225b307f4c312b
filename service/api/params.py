"""Query parameters the API's routes share (time bounds): one parser, one 422 wording.

A time is unix seconds, RFC 3339, or relative to now: ``now``, ``15m``, ``24h``,
``7d``, ``now-7d``, ``now-90s`` (units ``s``, ``m``, ``h``, ``d``, ``w``; a bare
duration means that long ago).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from fastapi import HTTPException

from service.alerting.store import parse_time

MIN_TIME, MAX_TIME = 0.0, 253_402_300_799.0
"""Times are unix seconds between 1970 and the end of year 9999."""
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_AGO = re.compile(r"^(?:now-|-)?(\d{1,9})([smhdw])$", re.IGNORECASE)


def relative_time(value: str, now: float) -> float | None:
    """``now``, ``15m``, ``now-7d`` as unix seconds; ``None`` when ``value`` is not relative."""
    text = value.strip().lower()
    if text == "now":
        return now
    m = _AGO.match(text)
    if m is None:
        return None
    return now - int(m.group(1)) * UNITS[m.group(2)]


def query_time(value: str | None, name: str, *, clock: Callable[[], float] = time.time) -> float | None:
    """``value`` as unix seconds; a 422 names the parameter for anything not a finite time in range."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        relative = relative_time(value, clock())
        if relative is not None:
            seconds = relative
        else:
            try:
                seconds = parse_time(value)
            except (ValueError, OverflowError):
                raise HTTPException(status_code=422, detail=f"{name}: expected RFC 3339 time, unix seconds or a "
                                                            "relative time (15m, 24h, now-7d)") from None
    if not MIN_TIME <= seconds <= MAX_TIME:  # also false for NaN
        raise HTTPException(status_code=422, detail=f"{name}: time must lie between 1970 and 9999")
    return seconds
