"""Dead letters of push inputs (HTTP, stdin, files): one JSON line per rejected message.

Kafka rejects go to the dead-letter topic (``service.sources.kafka``); the
other inputs have no broker, so their rejects land in
``<data_dir>/dead-letters.ndjson`` with the original bytes (base64), where
they came from and why, and are counted like the Kafka ones.
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
from service.sources.base import Rejected


def _record(item: Rejected, now: float) -> bytes:
    origin = item.message.origin
    return orjson.dumps({
        "time": now,
        "input": origin.input,
        "origin": origin.token(),
        "reason": item.reason,
        "error": item.error[:1000],
        "value_b64": base64.b64encode(item.message.value or b"").decode(),
    }) + b"\n"


class FileDeadLetters:
    """Appends rejects to one NDJSON file; the write is flushed before ``send`` returns."""

    def __init__(self, path: Path, source: str = "file") -> None:
        self.path = path
        self._source = source

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(data)

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
        self._append(b"".join(_record(item, now) for item in rejected))
        return Counter(item.message.origin.input for item in rejected)
