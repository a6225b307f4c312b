"""Alerts on stdout, one JSON line each: readable summary by default, or the whole document."""

from __future__ import annotations

import sys
from typing import IO, Any, Literal

import orjson

from .base import Outcome
from .registry import SinkContext, register_sink
from .settings import SinkSettings


class StdoutSinkSettings(SinkSettings):
    type: Literal["stdout"] = "stdout"
    durable: bool = False
    full: bool = False
    """Print the whole document instead of the readable summary."""


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    ps = doc.get("pipesentry", {})
    rule = doc.get("rule", {})
    out: dict[str, Any] = {
        "@timestamp": doc.get("@timestamp"),
        "alert_id": ps.get("alert_id"),
        "level": ps.get("level"),
        "rule": {"id": rule.get("id"), "name": rule.get("name"), "author": rule.get("author")},
        "source": ps.get("origin", {}).get("token"),
        "matched": {m["field"]: m["value"] for m in ps.get("matched", [])},
    }
    if ps.get("suppressed_count"):
        out["suppressed_count"] = ps["suppressed_count"]
    if "threat" in doc:
        out["attack"] = doc["threat"].get("technique", {}).get("id", [])
    return out


class StdoutSink:
    kind = "record"

    def __init__(self, name: str = "stdout", *, full: bool = False, stream: IO[bytes] | None = None) -> None:
        self.name = name
        self.full = full
        self._stream = stream

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        stream = self._stream or sys.stdout.buffer
        stream.flush()

    async def deliver(self, records: list[dict[str, Any]]) -> Outcome:
        stream = self._stream or sys.stdout.buffer
        lines = b"".join(orjson.dumps(r if self.full else summary(r)) + b"\n" for r in records)
        stream.write(lines)
        stream.flush()
        return Outcome(done=len(records))


def build(settings: StdoutSinkSettings, context: SinkContext) -> StdoutSink:
    return StdoutSink(settings.name, full=settings.full)


register_sink("stdout", StdoutSinkSettings, build)
