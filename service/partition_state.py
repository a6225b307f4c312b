"""Per-partition detector state of the Kafka loop: periodic snapshots, handover and takeover.

A snapshot of a partition's engines is only useful together with the offset it
is consistent with: it must hold exactly the records before that offset, or a
restart would count records twice (state beyond the committed offset) or never
(state behind it, without a replay). :class:`PartitionState` keeps two rules:

* **no commit without a snapshot behind it.** Before this instance commits any
  offset of a partition it owns, a snapshot of that partition, written by this
  ownership and tagged with an offset at or before the commit, is on disk: the
  *base* (the restored state, or the empty state at the first offset read) is
  written by the commit gate (:meth:`gate`) right before the first commit. A
  later snapshot is written only once Kafka confirmed its very offset. So after
  a crash at any point the committed offset C has a snapshot O <= C, and the
  next owner restores it and rewinds to O: the records O..C-1 are read (and
  counted) once more, their alerts come again with the same ids.
* **a snapshot is used only with the commits of its own lineage.** Every commit
  carries the owner's *writer* (instance and a token drawn at each assignment)
  in the Kafka offset metadata, and every snapshot records the writer that
  saved it. On assignment a snapshot is restored only when the committed offset
  was written by the same writer: otherwise another member processed the
  partition since (a per-instance data dir), rewinding would raise its alerts
  and pages again, and the partition starts empty at the committed offset.

A detector that **holds records** it read but has not applied yet (stage 2 of
``state.scope: keyed``: its reorder buffer, :attr:`Detector.holds_records`) commits a
partition no further than the oldest of them (:meth:`PartitionState.held`), so a
next owner without this instance's snapshot reads them again. Its state can then be
ahead of the committed offset: a snapshot of its lineage tagged past the commit is
restored, and the partition continues at the snapshot's offset (the records between
are in it, their alerts accepted before it was saved).

A partition's snapshot is one document for all its detectors (``partition.json``,
one atomic write); per-detector files of older versions are still read.

With ``state.scope: instance`` nothing here applies: Kafka records share the
local scope, which ``LocalState`` snapshots on its timer and at shutdown.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from service import metrics
from service.detection import DETECTORS, Detector, saved_clock, scope_name
from service.sources.kafka import OffsetTracker, commit, committed_with_metadata

log = logging.getLogger(__name__)

STATE_FILE = "partition"
"""The state store's detector name of a partition's one-file snapshot (every detector, one offset)."""
STATE_FORMAT = "pipesentry.partition-state/1"
WRITER_PREFIX = "pipesentry/1 "
"""Offset metadata of our commits: this prefix, then the writer (``<instance>#<token>``)."""


def default_instance_id() -> str:
    """Host name (the pod name on Kubernetes) and process id: tells the writers of a group apart in logs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def writer_of(metadata: str | None) -> str | None:
    """The writer recorded in a commit's metadata ("" for commits made by other tools or older versions;
    None when the metadata could not be read)."""
    if metadata is None:
        return None
    if metadata.startswith(WRITER_PREFIX):
        return metadata[len(WRITER_PREFIX):]
    return ""


@dataclass(frozen=True)
class Snapshot:
    """A partition's detector state exactly as of ``offset`` (every record before it applied, none after).

    A detector mapped to None had no state yet (an empty base).
    """

    offset: int
    snapshots: dict[str, Any]
    clock: tuple[float, float] | None
    accepts: tuple[str, ...] = ()
    """Earlier writers whose commits this state is also consistent with (a base restored from them)."""

    def document(self, writer: str) -> dict[str, Any]:
        """One document for all detectors, written atomically: never one detector's state at another offset."""
        return {"format": STATE_FORMAT, "offset": self.offset, "writer": writer, "accepts": [writer, *self.accepts],
                "clock": list(self.clock) if self.clock is not None else None, "detectors": self.snapshots}


async def load_documents(store: Any, scope: str) -> dict[str, dict[str, Any]]:
    """A scope's saved state as one document per detector (``offset``, ``snapshot``, ``writer``...).

    Reads the one-file snapshot (``partition.json``); a scope without one may still have the
    per-detector files older versions wrote (``correlation.json``, ``anomaly.json``).
    """
    combined = await store.load_async(scope, STATE_FILE)
    if isinstance(combined, dict) and isinstance(combined.get("detectors"), dict):
        shared = {k: v for k, v in combined.items() if k not in ("detectors", "format")}
        return {name: {**shared, "snapshot": snapshot} for name, snapshot in combined["detectors"].items()
                if name in DETECTORS}
    legacy = {name: await store.load_async(scope, name) for name in DETECTORS}
    return {name: doc for name, doc in legacy.items() if isinstance(doc, dict)}


def _matches(doc: dict[str, Any], writer: str | None) -> bool:
    """True when ``doc`` was saved by ``writer``'s lineage (documents of older versions: by writer "");
    always when the committed writer is unknown (None)."""
    if writer is None:
        return True
    accepts = doc.get("accepts")
    if isinstance(accepts, list):
        return writer in accepts
    return (doc.get("writer") or "") == writer


class PartitionState:
    """Saves and restores the engines of assigned partitions through a ``StateStore`` (or does nothing)."""

    def __init__(self, detector: Detector, store: Any | None, tracker: OffsetTracker, interval_s: float,
                 clock: Callable[[], float] = time.monotonic, instance_id: str | None = None) -> None:
        self.detector = detector
        self.store = store
        self.tracker = tracker
        self.interval_s = interval_s
        self.instance_id = instance_id or default_instance_id()
        self._clock = clock
        self._due_at: dict[TopicPartition, float] = {}
        self._writer: dict[TopicPartition, str] = {}
        self._base: dict[TopicPartition, Snapshot] = {}
        """State a partition started from (restored or empty), to be saved before its first commit."""
        self._based: set[TopicPartition] = set()
        """Partitions with a snapshot of the current writer on disk: their commits may go ahead."""
        tracker.gate = self.gate

    @property
    def active(self) -> bool:
        """Per-partition snapshots are taken; never with ``state.scope: instance`` (``LocalState`` saves it)."""
        return self.store is not None and self.detector.snapshots_partitions

    def writer(self, tp: TopicPartition) -> str:
        """This ownership's writer of ``tp`` (drawn on first use; again at each assignment)."""
        writer = self._writer.get(tp)
        if writer is None:
            writer = self._writer[tp] = f"{self.instance_id}#{secrets.token_hex(6)}"
            self.tracker.metadata[tp] = WRITER_PREFIX + writer
        return writer

    def due(self, tp: TopicPartition) -> bool:
        """True (and rescheduled) when ``tp``'s periodic snapshot is due."""
        now = self._clock()
        due = self._due_at.setdefault(tp, now + self.interval_s)
        if now < due:
            return False
        self._due_at[tp] = now + self.interval_s
        return True

    def observe(self, tp: TopicPartition, first_offset: int) -> None:
        """A batch of ``tp`` starting at ``first_offset`` is about to be detected.

        A partition that restored nothing starts empty at the first offset it reads: that is its base.
        While snapshots are off (no stateful detector) the base follows the reads, so detectors
        loaded later start from an empty state at a recent offset.
        """
        if tp in self._based or (self.active and tp in self._base):
            return
        current = self.detector.current
        names = [name for name, engine in zip(DETECTORS, (current.correlation, current.anomaly), strict=True)
                 if engine is not None]
        self._base[tp] = Snapshot(first_offset, dict.fromkeys(names), None)

    async def gate(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The offsets that may be committed now: a partition's first commit waits until its base is saved."""
        if not self.active:
            return offsets
        allowed: dict[TopicPartition, int] = {}
        ahead = self.detector.holds_records  # a restored base may be past the (held) commit
        for tp, offset in offsets.items():
            base = self._base.get(tp)
            if tp not in self._based and base is not None and (base.offset <= offset or ahead) \
                    and await self.save(tp, base):
                self._based.add(tp)
                self._base.pop(tp, None)
            if tp in self._based:
                allowed[tp] = offset
            else:
                metrics.PARTITION_STATE_COMMITS_HELD.inc()
                log.warning("offset commit held: the partition's base state is not saved yet",
                            extra={"scope": scope_name((tp.topic, tp.partition)), "offset": offset})
        return allowed

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

    def held(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Per partition of a batch just detected, the offset of the oldest record it left waiting in
        the detector: the batch's commit goes no further (see :meth:`OffsetTracker.ack`).

        Taken right after detection, as :meth:`capture`: a record a later batch releases still holds
        this one's commit, since that later batch's alerts are not accepted yet.
        """
        if not self.detector.holds_records:
            return {}
        floor = self.detector.commit_floor
        return {tp: held for tp in offsets if (held := floor((tp.topic, tp.partition))) is not None}

    def _settled(self, tp: TopicPartition, processed: int | None) -> int | None:
        """The offset ``tp``'s state is exactly at, when it may be saved: every record processed is
        acknowledged and the commit that allows is confirmed; else None."""
        committed = self.tracker.committed.get(tp)
        if committed is None:
            return None
        acked = self.tracker.acked.get(tp, committed)
        if processed not in (None, acked) or self.tracker.pending([tp]):
            return None
        return acked

    def _snapshot(self, tp: TopicPartition, offset: int) -> Snapshot | None:
        """``tp``'s engines now, tagged with ``offset``; None when it has no state."""
        key = (tp.topic, tp.partition)
        exported = self.detector.export_scope(key)
        return Snapshot(offset, exported, self.detector.scope_clock(key)) if exported else None

    async def persist(self, consumer: Any, captured: dict[TopicPartition, Snapshot],
                      leaving: set[TopicPartition]) -> None:
        """Commit the captured offsets now, then save each snapshot whose commit Kafka confirmed.

        Called by the submitter right after it acknowledged the batch, so no later batch
        of the partition is acknowledged in between: the commit is exactly the snapshot's offset
        (or, while records wait in the detector, the oldest one's: :meth:`held`).
        """
        wanted = [tp for tp in captured if tp in self.tracker.assigned and tp not in leaving]
        if consumer is None or not wanted:
            return
        await commit(consumer, self.tracker, wanted)
        for tp in wanted:
            snap = captured[tp]
            if self.tracker.acked.get(tp) == snap.offset and not self.tracker.pending([tp]):
                await self.save(tp, snap)
            else:
                self._due_at[tp] = self._clock()  # not committed: try again with the next batch

    async def snapshot_idle(self, processed: dict[TopicPartition, int], leaving: set[TopicPartition]) -> None:
        """Snapshot due partitions with nothing in flight (their state is exactly the acknowledged
        offset, committed as far as it may be)."""
        if not self.active:
            return
        for tp in list(self.tracker.assigned):
            offset = self._settled(tp, processed.get(tp))
            if offset is None or tp in leaving:
                continue
            if self.due(tp) and (snap := self._snapshot(tp, offset)) is not None:
                await self.save(tp, snap)

    async def save(self, tp: TopicPartition, snap: Snapshot) -> bool:
        scope = scope_name((tp.topic, tp.partition))
        if self.store is None:
            return False
        writer = self.writer(tp)
        try:
            await self.store.save_async(scope, STATE_FILE, snap.document(writer))
        except Exception:
            metrics.PARTITION_STATE_SAVES.labels("failed").inc()
            log.warning("cannot save detector state", exc_info=True, extra={"scope": scope})
            return False
        metrics.PARTITION_STATE_SAVES.labels("ok").inc()
        return True

    def _forget(self, tp: TopicPartition) -> None:
        self._due_at.pop(tp, None)
        self._writer.pop(tp, None)
        self._base.pop(tp, None)
        self._based.discard(tp)
        self.tracker.metadata.pop(tp, None)

    async def hand_over(self, tp: TopicPartition, processed: int | None) -> None:
        """Save a leaving partition's state tagged with its processed offset, then drop it from memory.

        Saved only when everything processed is committed (as far as the records waiting in the
        detector allow); otherwise the next owner restores an older snapshot (or starts empty)
        rather than count re-read records twice.
        """
        if not self.detector.per_partition:
            self._forget(tp)
            return  # instance scope: the state stays with this instance, nothing belongs to the partition
        offset = self._settled(tp, processed)
        snap = None
        if self.active and offset is not None and tp in self._based:
            snap = self._snapshot(tp, offset)
        self.detector.drop_scope((tp.topic, tp.partition))
        if snap is not None:
            await self.save(tp, snap)
        self._forget(tp)

    async def take_over(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Restore the saved state of newly assigned partitions, replaying what it does not include.

        Each partition gets a new writer. A snapshot tagged with offset O holds exactly
        the records before O; it is used when the committed offset C was written by the
        snapshot's lineage and O <= C: the partition is rewound to O, so the records
        O..C-1 are read again (counted once, their alerts again with the same ids).
        Otherwise the partition starts empty at C (a snapshot of another lineage is
        stale: another member has processed the partition since). A detector that holds
        records also restores its lineage's snapshot with O > C and continues at O.
        """
        for tp in partitions:
            self._forget(tp)
            self.writer(tp)
        if not self.active:
            return  # instance scope: no per-partition state to restore, nothing is rewound
        store = self.store
        assert store is not None
        for tp in partitions:
            key = (tp.topic, tp.partition)
            scope = scope_name(key)
            self.detector.drop_scope(key)
            try:
                committed, metadata = await committed_with_metadata(consumer, tp)
                saved = await load_documents(store, scope)
            except Exception:
                metrics.PARTITION_STATE_TAKEOVERS.labels("error").inc()
                log.warning("cannot load detector state; starting empty", exc_info=True, extra={"scope": scope})
                continue
            committer = writer_of(metadata)
            docs = [doc for doc in saved.values() if isinstance(doc, dict) and "snapshot" in doc]
            ours = [doc for doc in docs if _matches(doc, committer)]
            offsets = {doc.get("offset") for doc in ours}
            ahead = self.detector.holds_records
            candidates = [o for o in offsets if type(o) is int and committed is not None
                          and o >= 0 and (o <= committed or ahead)]
            if not candidates:
                outcome = "none" if not docs else "stale" if not ours else "ahead"
                metrics.PARTITION_STATE_TAKEOVERS.labels(outcome).inc()
                if docs:
                    log.warning("saved detector state not used; the partition starts empty at the committed offset",
                                extra={"scope": scope, "committed": committed, "reason": outcome,
                                       "committed_by": committer or None,
                                       "saved_by": sorted({str(doc.get("writer") or "") for doc in docs})})
                continue
            offset = max(candidates)
            chosen = {name: doc for name, doc in saved.items()
                      if isinstance(doc, dict) and doc in ours and doc.get("offset") == offset}
            clock = saved_clock(chosen.values())
            self.detector.import_scope(key, {n: d["snapshot"] for n, d in chosen.items()}, clock)
            exported = self.detector.export_scope(key)
            names = {name for name, engine in zip(DETECTORS, (self.detector.current.correlation,
                                                               self.detector.current.anomaly), strict=True)
                     if engine is not None}
            accepts = (committer,) if committer is not None else ()
            self._base[tp] = Snapshot(offset, {**dict.fromkeys(names), **exported}, clock, accepts)
            assert committed is not None
            if offset != committed:
                consumer.seek(tp, offset)  # replay what the snapshot does not hold, or skip what it does
            metrics.PARTITION_STATE_TAKEOVERS.labels("restored").inc()
            log.info("detector state restored", extra={"scope": scope, "offset": offset, "committed": committed,
                                                       "replayed": max(committed - offset, 0), "detectors": sorted(chosen)})
