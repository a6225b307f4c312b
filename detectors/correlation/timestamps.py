"""Event time for the correlation engine: epoch seconds from an event field.

The engine takes time as a parameter; this helper is what the CLI uses to derive
it, with the shared parser of :mod:`detectors.timestamps`. A value that is not
a readable timestamp is "no timestamp" (None), which the engine counts as
``missing_timestamp`` for matching events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from detectors.correlation.fields import MISSING, get_field
from detectors.timestamps import to_epoch

__all__ = ["DEFAULT_TIME_FIELDS", "event_time", "to_epoch"]

DEFAULT_TIME_FIELDS: tuple[str, ...] = ("@timestamp", "timestamp", "time", "ts", "event.created", "UtcTime")
"""Tried in order when no field is configured."""

def event_time(event: Mapping[str, Any], fields: Sequence[str] = DEFAULT_TIME_FIELDS) -> float | None:
    """Epoch seconds from the first of ``fields`` present in ``event`` that parses."""
    for name in fields:
        raw = get_field(event, name)
        if raw is not MISSING:
            parsed = to_epoch(raw)
            if parsed is not None:
                return parsed
    return None
