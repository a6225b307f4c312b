"""Query parameters the API's routes share (time bounds): one parser, one 422 wording."""

from __future__ import annotations

from fastapi import HTTPException

from service.alerting.store import parse_time

MIN_TIME, MAX_TIME = 0.0, 253_402_300_799.0
"""Times are unix seconds between 1970 and the end of year 9999."""


def query_time(value: str | None, name: str) -> float | None:
    """``value`` as unix seconds; a 422 names the parameter for anything not a finite time in range."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parse_time(value)
        except (ValueError, OverflowError):
            raise HTTPException(status_code=422,
                                detail=f"{name}: expected RFC 3339 time or unix seconds") from None
    if not MIN_TIME <= seconds <= MAX_TIME:  # also false for NaN
        raise HTTPException(status_code=422, detail=f"{name}: time must lie between 1970 and 9999")
    return seconds
