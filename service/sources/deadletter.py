"""Dead letters of push inputs (HTTP, stdin, files): one JSON line per rejected message.

Kafka rejects go to the dead-letter topic (``service.sources.kafka``); the
other inputs have no broker, so their rejects land in
``<data_dir>/dead-letters.ndjson`` with the original bytes (base64), where
they came from and why, and are counted like the Kafka ones.

The file is private (0600 in a 0700 directory, ``service.fileperms``) and, with redaction on,
holds the message with its secrets replaced by markers (``service.redaction``): a replay of it
re-detects everything but the secrets' exact values.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import orjson

from service import metrics
from service.fileperms import private_append
from service.redaction import Redaction
from service.sources.base import Rejected


def _record(item: Rejected, now: float, redaction: Redaction | None) -> bytes:
    origin = item.message.origin
    value, error = item.message.value or b"", item.error[:1000]
    if redaction is not None and redaction.enabled:
        value, error = redaction.raw(value), redaction.text(error)
    return orjson.dumps({
        "time": now,
        "input": origin.input,
        "origin": origin.token(),
        "reason": item.reason,
        "error": error,
        "value_b64": base64.b64encode(value).decode(),
    }) + b"\n"


class FileDeadLetters:
    """Appends rejects to one NDJSON file; the write is flushed before ``send`` returns."""

    def __init__(self, path: Path, source: str = "file", *, redaction: Redaction | None = None) -> None:
        self.path = path
        self._source = source
        self._redaction = redaction

    def _append(self, data: bytes) -> None:
        private_append(self.path, data)

    async def send(self, rejected: Sequence[Rejected]) -> None:
        if not rejected:
            return
        try:  # records are encoded in the thread too: 100,000 rejects would hold the event loop
            inputs = await asyncio.to_thread(self._write, rejected, time.time())
        except OSError:
            metrics.DEAD_LETTER_FAILURES.labels(self._source).inc(len(rejected))
            raise
        for name, count in inputs.items():
            metrics.DEAD_LETTERS.labels(name).inc(count)

    def _write(self, rejected: Sequence[Rejected], now: float) -> Counter[str]:
        """Append the records of ``rejected``; how many came from each input."""
        self._append(b"".join(_record(item, now, self._redaction) for item in rejected))
        return Counter(item.message.origin.input for item in rejected)
