"""A sink that accepts everything and keeps nothing (benchmarks, dry runs)."""

from __future__ import annotations

from typing import Any

from .base import Outcome


class NullSink:
    kind = "record"

    def __init__(self, name: str = "null") -> None:
        self.name = name
        self.delivered = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def deliver(self, records: list[dict[str, Any]]) -> Outcome:
        self.delivered += len(records)
        return Outcome(done=len(records))
