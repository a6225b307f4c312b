"""A sink that accepts everything and keeps nothing (benchmarks, dry runs)."""

from __future__ import annotations

from typing import Any, Literal

from .base import Outcome
from .registry import SinkContext, register_sink
from .settings import SinkSettings


class NullSinkSettings(SinkSettings):
    type: Literal["null"] = "null"
    durable: bool = False


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


def build(settings: NullSinkSettings, context: SinkContext) -> NullSink:
    return NullSink(settings.name)


register_sink("null", NullSinkSettings, build)
