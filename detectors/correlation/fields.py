"""Normalising group-by and value fields (read with :func:`detectors.event.get`) into keys.

Group-key values compare case-insensitively for strings, like Sigma's default
string matching (``ADMIN`` and ``admin`` are one user); the alert shows the
value as the event that fired spelled it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


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
