"""Per-partition detector state of the Kafka loop: periodic snapshots, handover and takeover.

A snapshot of a partition's engines is only useful together with the offset it
is consistent with: it must hold exactly the records before that offset, or a
restart would count records twice (state beyond the committed offset) or never
(state behind it, without a replay). :class:`PartitionState` keeps that
property: a busy partition's state is captured synchronously right after a
batch is detected and written only once that batch's end offset is committed;
an idle partition's state is written after a commit, tagged with it. On
assignment a snapshot behind the committed offset is restored and the partition
rewound to it, so the records in between are read (and counted) once more.

With ``state.scope: instance`` nothing here applies: Kafka records share the
local scope, which ``LocalState`` snapshots on its timer and at shutdown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from service.detection import DETECTORS, Detector, saved_clock, scope_name
from service.sources.kafka import OffsetTracker, commit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """A partition's detector state exactly as of ``offset`` (every record before it applied, none after)."""

    offset: int
    snapshots: dict[str, Any]
    clock: tuple[float, float] | None

    def documents(self) -> dict[str, dict[str, Any]]:
        return {name: {"offset": self.offset, "snapshot": snapshot,
                       "clock": list(self.clock) if self.clock is not None else None}
                for name, snapshot in self.snapshots.items()}


class PartitionState:
    """Saves and restores the engines of assigned partitions through a ``StateStore`` (or does nothing)."""

    def __init__(self, detector: Detector, store: Any | None, tracker: OffsetTracker, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.detector = detector
        self.store = store
        self.tracker = tracker
        self.interval_s = interval_s
        self._clock = clock
        self._due_at: dict[TopicPartition, float] = {}

    @property
    def active(self) -> bool:
        """Per-partition snapshots are taken; never with ``state.scope: instance`` (``LocalState`` saves it)."""
        return self.store is not None and self.detector.current.stateful and self.detector.per_partition

    def due(self, tp: TopicPartition) -> bool:
        """True (and rescheduled) when ``tp``'s periodic snapshot is due."""
        now = self._clock()
        due = self._due_at.setdefault(tp, now + self.interval_s)
        if now < due:
            return False
        self._due_at[tp] = now + self.interval_s
        return True

    def capture(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, Snapshot]:
        """State of the batch's partitions whose snapshot is due, as of the batch's end offsets.

        Called synchronously right after detection, before any later record is applied
        (``export_scope`` copies: the engines go on while the batch waits for the router).
        """
        if not self.active:
            return {}
        out: dict[TopicPartition, Snapshot] = {}
        for tp, offset in offsets.items():
            if self.due(tp) and (snap := self._snapshot(tp, offset)) is not None:
                out[tp] = snap
        return out

    def _snapshot(self, tp: TopicPartition, offset: int) -> Snapshot | None:
        """``tp``'s engines now, tagged with ``offset``; None when it has no state."""
        key = (tp.topic, tp.partition)
        exported = self.detector.export_scope(key)
        return Snapshot(offset, exported, self.detector.scope_clock(key)) if exported else None

    async def persist(self, consumer: Any, captured: dict[TopicPartition, Snapshot],
                      leaving: set[TopicPartition]) -> None:
        """Commit the captured offsets now, then save each snapshot whose offset Kafka confirmed.

        Called by the submitter right after it acknowledged the batch, so no later batch
        of the partition is acknowledged in between: the commit is exactly the snapshot's offset.
        """
        wanted = [tp for tp in captured if tp in self.tracker.assigned and tp not in leaving]
        if consumer is None or not wanted:
            return
        await commit(consumer, self.tracker, wanted)
        for tp in wanted:
            snap = captured[tp]
            if self.tracker.committed.get(tp) == snap.offset:
                await self.save(tp, snap)
            else:
                self._due_at[tp] = self._clock()  # not committed: try again with the next batch

    async def snapshot_idle(self, processed: dict[TopicPartition, int], leaving: set[TopicPartition]) -> None:
        """Snapshot due partitions with nothing in flight (their state is exactly the committed offset)."""
        if not self.active:
            return
        for tp in list(self.tracker.assigned):
            committed = self.tracker.committed.get(tp)
            if committed is None or tp in leaving or processed.get(tp, committed) != committed:
                continue
            if self.due(tp) and (snap := self._snapshot(tp, committed)) is not None:
                await self.save(tp, snap)

    async def save(self, tp: TopicPartition, snap: Snapshot) -> bool:
        scope = scope_name((tp.topic, tp.partition))
        if self.store is None:
            return False
        try:
            for name, document in snap.documents().items():
                await self.store.save_async(scope, name, document)
        except Exception:
            log.warning("cannot save detector state", exc_info=True, extra={"scope": scope})
            return False
        return True

    async def hand_over(self, tp: TopicPartition, processed: int | None) -> None:
        """Save a leaving partition's state tagged with its committed offset, then drop it from memory.

        Saved only when everything processed is committed; otherwise the next owner restores
        an older snapshot (or starts empty) rather than count re-read records twice.
        """
        if not self.detector.per_partition:
            self._due_at.pop(tp, None)
            return  # instance scope: the state stays with this instance, nothing belongs to the partition
        offset = self.tracker.committed.get(tp)
        snap = None
        if self.store is not None and offset is not None and processed in (None, offset):
            snap = self._snapshot(tp, offset)
        self.detector.drop_scope((tp.topic, tp.partition))
        self._due_at.pop(tp, None)
        if snap is not None:
            await self.save(tp, snap)

    async def take_over(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Restore the saved state of newly assigned partitions, replaying what it does not include.

        A snapshot tagged with offset O holds exactly the records before O. When the
        committed offset C is past O (a crash after later commits), the partition is
        rewound to O, so the records O..C-1 are read again: the state counts each
        record once, and their alerts come again with the same ids. A snapshot past C,
        or without a commit, is not used (the partition starts empty).
        """
        store = self.store
        if store is None or not self.detector.current.stateful or not self.detector.per_partition:
            return  # instance scope: no per-partition state to restore, nothing is rewound
        for tp in partitions:
            scope = scope_name((tp.topic, tp.partition))
            try:
                committed = await consumer.committed(tp)
                saved = {name: await store.load_async(scope, name) for name in DETECTORS}
            except Exception:
                log.warning("cannot load detector state; starting empty", exc_info=True, extra={"scope": scope})
                continue
            offsets = {doc.get("offset") for doc in saved.values() if isinstance(doc, dict) and "snapshot" in doc}
            candidates = [o for o in offsets if type(o) is int and committed is not None and 0 <= o <= committed]
            if not candidates:
                if any(doc is not None for doc in saved.values()):
                    log.info("saved detector state is ahead of the committed offset or unusable; starting empty",
                             extra={"scope": scope, "committed": committed})
                continue
            offset = max(candidates)
            docs = {name: doc for name, doc in saved.items()
                    if isinstance(doc, dict) and doc.get("offset") == offset and "snapshot" in doc}
            self.detector.import_scope((tp.topic, tp.partition), {n: d["snapshot"] for n, d in docs.items()},
                                       saved_clock(docs.values()))
            if offset < committed:
                consumer.seek(tp, offset)  # replay what the snapshot does not hold
            log.info("detector state restored", extra={"scope": scope, "offset": offset, "committed": committed,
                                                       "replayed": committed - offset, "detectors": sorted(docs)})
