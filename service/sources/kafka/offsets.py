"""Offsets and rebalances: the at-least-once contract of the Kafka input.

* :class:`OffsetTracker` only ever moves a partition's commit point to the
  offset *after* a message whose alerts the router has accepted, in order;
* :class:`Rebalance` drains in-flight work and commits before partitions are
  given away, so the next owner starts exactly where this one finished.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from service import metrics

log = logging.getLogger(__name__)


class OffsetTracker:
    """Next offset to commit per partition, moved only by acknowledged batches.

    ``acked`` holds the offset after the last message whose alerts were
    accepted; ``held`` the offset of the oldest record such a message left
    waiting in the detector (stage 2's reorder buffer), which the commit must
    not pass; ``committed`` what Kafka last confirmed. Partitions not assigned
    any more are dropped, so a late acknowledgement cannot commit on a
    partition another instance now owns.
    """

    def __init__(self) -> None:
        self.acked: dict[TopicPartition, int] = {}
        self.held: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.assigned: set[TopicPartition] = set()
        self.metadata: dict[TopicPartition, str] = {}
        """Offset metadata committed with a partition's offsets (who wrote them: see ``PartitionState``)."""
        self.gate: Callable[[dict[TopicPartition, int]], Awaitable[dict[TopicPartition, int]]] | None = None
        """Filters the offsets about to be committed (a partition whose state is not saved yet waits)."""

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self.assigned.update(partitions)

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.assigned.discard(tp)
            self.acked.pop(tp, None)
            self.held.pop(tp, None)
            self.committed.pop(tp, None)
            self.metadata.pop(tp, None)

    def ack(self, offsets: dict[TopicPartition, int], held: dict[TopicPartition, int] | None = None) -> None:
        """A batch is accepted: ``offsets`` after its last message per partition, ``held`` the
        oldest offset it left waiting per partition (none: nothing waits)."""
        for tp, next_offset in offsets.items():
            if tp in self.assigned and next_offset > self.acked.get(tp, -1):
                self.acked[tp] = next_offset
                floor = held.get(tp) if held else None
                if floor is None:
                    self.held.pop(tp, None)
                else:
                    self.held[tp] = floor

    def target(self, tp: TopicPartition) -> int | None:
        """Where ``tp`` may be committed: its acknowledged offset, no further than its held one."""
        acked = self.acked.get(tp)
        held = self.held.get(tp)
        return acked if acked is None or held is None else min(acked, held)

    def pending(self, only: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Offsets that may be committed and are not yet (optionally restricted to ``only``)."""
        wanted = set(only) if only is not None else None
        out: dict[TopicPartition, int] = {}
        for tp in self.acked:
            if wanted is None or tp in wanted:
                off = self.target(tp)
                if off is not None and off != self.committed.get(tp):
                    out[tp] = off
        return out

    def confirm(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, off in offsets.items():
            if tp in self.assigned:
                self.committed[tp] = off


async def commit(consumer: Any, tracker: OffsetTracker, only: Iterable[TopicPartition] | None = None) -> bool:
    """Commit acknowledged offsets; False (and counted) when Kafka refuses. Never raises."""
    offsets = tracker.pending(only)
    if offsets and tracker.gate is not None:
        held = len(offsets)
        offsets = await tracker.gate(offsets)
        if len(offsets) < held and not offsets:
            return False
    if not offsets:
        return True
    try:
        await consumer.commit({tp: OffsetAndMetadata(off, tracker.metadata.get(tp, ""))
                               for tp, off in offsets.items()})
    except Exception as exc:
        metrics.KAFKA_COMMITS.labels("failed").inc()
        log.warning("offset commit failed; it is retried", extra={"error": f"{type(exc).__name__}: {exc}"})
        return False
    tracker.confirm(offsets)
    metrics.KAFKA_COMMITS.labels("ok").inc()
    return True


async def committed_with_metadata(consumer: Any, tp: TopicPartition) -> tuple[int | None, str | None]:
    """The group's committed offset of ``tp`` and the metadata string committed with it.

    ``AIOKafkaConsumer.committed`` returns the offset only; the metadata comes from its
    group coordinator. A consumer without one (another aiokafka version) gives the offset
    and None: the metadata is unknown (logged).
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not callable(getattr(coordinator, "fetch_committed_offsets", None)):
        log.warning("cannot read the offset commit metadata with this aiokafka; snapshot writers are not checked")
        return await consumer.committed(tp), None
    found = (await coordinator.fetch_committed_offsets([tp])).get(tp)
    if found is None or found.offset < 0:
        return None, ""
    return found.offset, found.metadata or ""


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Drain and commit before partitions leave; reset bookkeeping when they arrive."""

    def __init__(self, tracker: OffsetTracker, drain: Callable[[set[TopicPartition]], Awaitable[None]],
                 get_consumer: Callable[[], Any], on_change: Callable[[set[TopicPartition]], None],
                 handover: Callable[[list[TopicPartition]], Awaitable[None]] | None = None,
                 takeover: Callable[[list[TopicPartition]], Awaitable[None]] | None = None) -> None:
        self._tracker = tracker
        self._drain = drain
        self._consumer = get_consumer
        self._on_change = on_change
        self._handover = handover
        self._takeover = takeover

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        revoked = list(revoked)
        if revoked:
            await self._drain(set(revoked))
            await commit(self._consumer(), self._tracker, revoked)
            if self._handover is not None:
                await self._handover(revoked)
            self._tracker.revoke(revoked)
            log.info("partitions revoked", extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in revoked]})
        self._on_change(set(self._tracker.assigned))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._tracker.assign(assigned)
        if self._takeover is not None and assigned:
            await self._takeover(list(assigned))
        log.info("partitions assigned", extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in assigned]})
        self._on_change(set(self._tracker.assigned))
