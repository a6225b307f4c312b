"""``--since 7d`` / ``--until 2026-12-01T00:00:00Z``: a hunt's time range, and the range query for it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from service.alerting.store import parse_time

_RELATIVE = re.compile(r"^\s*(\d{1,7})\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_TIME = 253_402_300_799.0
"""The end of year 9999: no range bound lies beyond it."""


def parse_when(text: str, now: float) -> float:
    """Unix seconds from a duration back from ``now`` (``90s``, ``30m``, ``12h``, ``7d``, ``2w``),
    an RFC 3339 time or unix seconds; ``ValueError`` says what is accepted."""
    match = _RELATIVE.match(text)
    if match:
        return now - int(match.group(1)) * _UNIT_S[match.group(2).lower()]
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_time(text.strip())
        except (ValueError, OverflowError):
            raise ValueError(f"{text!r}: expected a duration (7d, 12h, 30m, 90s, 2w), an RFC 3339 time"
                             " or unix seconds") from None
    if not 0 <= seconds <= MAX_TIME:
        raise ValueError(f"{text!r}: time must lie between 1970 and 9999")
    return seconds


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("the time range is empty: since must lie before until")

    def range_filter(self, field: str | None) -> dict[str, Any] | None:
        """The ``range`` clause on ``field`` (epoch milliseconds, so any date mapping reads it);
        ``None`` when there is no field or no bound."""
        if field is None or (self.since is None and self.until is None):
            return None
        bounds: dict[str, Any] = {"format": "epoch_millis"}
        if self.since is not None:
            bounds["gte"] = int(self.since * 1000)
        if self.until is not None:
            bounds["lt"] = int(self.until * 1000)
        return {"range": {field: bounds}}
