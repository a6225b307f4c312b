"""Record sink writing alert documents into the local SQLite store (upsert by id)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from pydantic import model_validator

from .base import Outcome
from .registry import SinkContext, register_sink
from .settings import SinkSettings

if TYPE_CHECKING:
    from ..store import AlertStore  # the router opens it; loading the settings models does not need SQLite


class StoreSinkSettings(SinkSettings):
    type: Literal["store"] = "store"

    @model_validator(mode="after")
    def _always_redacted(self) -> StoreSinkSettings:
        if not self.redact:
            raise ValueError("the store sink cannot opt out of redaction: the API serves what it holds")
        return self


class StoreSink:
    kind = "record"

    def __init__(self, store: AlertStore, name: str = "store") -> None:
        self.name = name
        self.store = store

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def deliver(self, records: list[dict[str, Any]]) -> Outcome:
        good: list[dict[str, Any]] = []
        rejected: list[tuple[dict[str, Any], str]] = []
        for r in records:
            try:
                r["event"]["id"], r["rule"]["id"], r["@timestamp"]
                good.append(r)
            except (KeyError, TypeError):
                rejected.append((r, "not an alert document"))
        await asyncio.to_thread(self.store.upsert, good)
        return Outcome(done=len(records), rejected=rejected)


def build(settings: StoreSinkSettings, context: SinkContext) -> StoreSink:
    return StoreSink(context.store, settings.name)


register_sink("store", StoreSinkSettings, build)
