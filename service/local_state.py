"""Snapshots of the local scope: the stateful detectors fed by HTTP ingest, stdin and files.

Kafka partitions snapshot their own state together with their offsets
(``service.sources.kafka.source``). The local inputs have no offsets to agree with, so their
state is saved as it is, on a timer and once more at shutdown after the inputs
stopped, and restored before the inputs start. With ``state.scope: instance``
the Kafka records share this scope, so this is their only snapshot too (not
aligned with the committed offsets: see docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from service.detection import DETECTORS, Detector, saved_clock
from service.waits import stopped_within

log = logging.getLogger(__name__)

SCOPE = "local"


class LocalState:
    """Saves and restores the local scope of ``detector`` through a ``StateStore``."""

    def __init__(self, detector: Detector, store: Any) -> None:
        self.detector = detector
        self.store = store

    async def restore(self) -> bool:
        """Load the saved local state into the current engines; False when there is none usable."""
        if not self.detector.current.stateful:
            return False
        try:
            saved = {name: await self.store.load_async(SCOPE, name) for name in DETECTORS}
        except Exception:
            log.warning("cannot load local detector state; starting empty", exc_info=True)
            return False
        docs = {name: doc for name, doc in saved.items() if isinstance(doc, dict) and "snapshot" in doc}
        if not docs:
            return False
        clock = saved_clock(docs.values())
        self.detector.import_scope(None, {name: doc["snapshot"] for name, doc in docs.items()}, clock)
        log.info("local detector state restored", extra={"detectors": sorted(docs)})
        return True

    async def save(self) -> bool:
        """Write the local engines' snapshots now; False (logged) when it could not."""
        if not self.detector.current.stateful:
            return False
        exported = self.detector.export_scope(None)
        clock = self.detector.scope_clock(None)
        try:
            for name, snapshot in exported.items():
                await self.store.save_async(SCOPE, name, {"snapshot": snapshot,
                                                          "clock": list(clock) if clock else None})
        except Exception:
            log.warning("cannot save local detector state", exc_info=True)
            return False
        return bool(exported)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Save every ``interval_s`` until ``stop`` (the final save is the caller's, after the inputs stop)."""
        while not await stopped_within(stop, interval_s):
            await self.save()
