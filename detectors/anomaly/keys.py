"""Building per-check keys from event fields (read with :func:`detectors.event.get`).

Why: keys come from event content, which can be huge or nested; a key must be
small (state is held per key) and stable across restarts (it is persisted).
Values longer than ``MAX_KEY_CHARS`` are cut and suffixed with a hash of the
whole value, so distinct huge values stay distinct while memory stays bounded.
"""

from __future__ import annotations

from typing import Any

import orjson

from detectors.model import LogSource
from detectors.sketches import hash64

MAX_KEY_CHARS = 256
SOURCE_FIELD = "_source"

Key = tuple[str, ...]


def key_text(value: Any) -> tuple[str, bool]:
    """The key text of a field value and whether it was truncated."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    else:
        text = orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS).decode()
    if len(text) <= MAX_KEY_CHARS:
        return text, False
    return f"{text[:MAX_KEY_CHARS - 20]}…#{hash64(text):016x}", True


def source_text(logsource: LogSource | None) -> str:
    if logsource is None:
        return "-/-/-"
    return f"{logsource.product or '-'}/{logsource.category or '-'}/{logsource.service or '-'}"


def key_repr(fields: tuple[str, ...], key: Key) -> str:
    """Readable, stable text for a key (used in alert keys)."""
    if not fields:
        return "*"
    return ",".join(f"{f}={v}" for f, v in zip(fields, key, strict=True))
