"""Stage 1 of ``state.scope: keyed``: send a batch's state records (and, on a timer, this
instance's watermark) to the internal topic with an idempotent ``acks=all`` producer, the records
of one internal partition packed several to a message (:func:`~service.keyed.records.pack`).

:meth:`StateRecordProducer.send` returns once Kafka acknowledged every record of the batch; the
pipeline core calls it before the batch's alerts go to the router, so an input offset is never
committed before the state records of the events before it are durable (docs/scaling.md).

The watermark lists the progress of each input partition this instance owns: the newest event
time whose records were acknowledged, moved on by the wall time since then while the partition
has nothing left to read (as the heartbeat moves a quiet scope). A partition read to its end
without a record yet is listed as idle: it does not hold stage 2 back (the wall clock says nothing
about the event time of what may come, a replay of old logs for one); one still being read
before its first batch is left out, and holds stage 2 back. With it go the input topics' partition counts, so stage 2
knows every input partition that must have spoken. It goes to every partition of the internal
topic through the same producer, after the records it covers, so it never overtakes them.

A producer that can never send again (fenced, an out-of-order sequence, an unknown producer id, its
sender stopped: :mod:`service.kafka_producers`) is dropped as soon as a send fails that way, and the next send
builds a new one (logged, ``pipesentry_kafka_producer_replacements_total{producer="keyed"}``). The
failed send still raises: the pipeline core retries the batch's submit, which sends every record of
the batch again on the new producer, and its input offsets are not committed meanwhile. Records
the old producer had written already come twice; stage 2 drops them as replays.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from service import metrics
from service.config import KafkaSettings, StateSettings
from service.kafka_producers import ProducerSlot
from service.keyed.records import (
    PACK_BYTES,
    AnomalyRecord,
    RecordTooLarge,
    StateRecord,
    Watermark,
    pack,
    partition_for,
    split_row,
)
from service.sources.kafka.client import client_kwargs
from service.waits import stopped_within

log = logging.getLogger(__name__)

Partition = tuple[str, int]
PARTITION_CACHE = 65_536
"""Record keys whose internal partition :class:`StateRecordProducer` remembers."""


@dataclass
class InputView:
    """What the input source knows of its partitions when a watermark is due."""

    owned: set[Partition] = field(default_factory=set)
    busy: set[Partition] = field(default_factory=set)
    """Owned partitions with records left to read."""
    caught_up: set[Partition] = field(default_factory=set)
    """Owned partitions read to their end."""
    counts: dict[str, int] = field(default_factory=dict)
    """Partition count of every subscribed input topic."""


async def _no_view() -> InputView:
    return InputView()


def _route(record: StateRecord | AnomalyRecord) -> Hashable:
    """What the record's Kafka key is made of, as a cache key cheaper than the key itself: the id
    and group when the group holds only texts (the usual case: equal routes, equal keys), else the
    key (``True == 1`` as a dict key, not as a Kafka key)."""
    group = record.group
    for part in group:
        if type(part) is not str:
            return record.key()
    return (record[0], group)


class StateRecordProducer:
    """The internal topic's producer; ``owned``/``busy`` tell it the input partitions this
    instance holds and those with records left to read (the Kafka source's view)."""

    def __init__(self, kafka: KafkaSettings, state: StateSettings, instance_id: str, *,
                 producer_factory: Callable[..., Any] = AIOKafkaProducer,
                 clock: Callable[[], float] = time.time, chain: bool = False) -> None:
        self.topic = state.keyed_topic
        self.partitions = state.keyed_partitions
        self.interval_s = state.keyed_watermark_interval_s
        self.producer_id = f"{instance_id}#{secrets.token_hex(4)}"
        self.chain = chain
        """Stage 2's producer of chained records: its marks are its internal partitions' releases,
        never moved on by the wall clock, and no partition is reported idle (docs/scaling.md)."""
        self._kafka = kafka
        self._clock = clock
        self._running = False
        """Between :meth:`start` (or a first send) and :meth:`stop`: a dropped producer is rebuilt."""
        self.slot = ProducerSlot("keyed_chain" if chain else "keyed",
                                 lambda: producer_factory(**client_kwargs(kafka), acks="all", enable_idempotence=True),
                                 self._topic_ready, topic=self.topic)
        """The producer (the submit step and the watermark timer both send on it)."""
        self._prepared = False
        self._progress: dict[Partition, tuple[float, float]] = {}
        """Per input partition: newest event time acknowledged, and the wall time it was."""
        self._unsent: set[Partition] = set()
        """Input partitions of a batch whose records are not acknowledged yet (being sent, or failed
        and waiting for the retry): the wall clock does not move their marks on, nor are they idle."""
        self.view: Callable[[], Awaitable[InputView]] = _no_view
        """Set by the input :class:`~service.sources.kafka.KafkaSource`."""
        self._partitions: dict[Hashable, int] = {}
        self._pack_bytes = min(PACK_BYTES, kafka.max_message_bytes)
        """Stage 2 refuses a message over ``kafka.max_message_bytes`` (its consumer's settings are these)."""
        self._partition_count = 0

    async def prepare(self, stop: asyncio.Event, backoff_s: float = 0.5, max_backoff_s: float = 30.0) -> bool:
        """Create the internal topic when ``keyed_partitions`` asks for it, retrying until done or
        ``stop`` (False). Stage 2 subscribes only after this: a consumer subscribed to a topic that
        does not exist yet would only see it at its next metadata refresh, minutes later."""
        while not self._prepared:
            try:
                if self.partitions is not None:
                    await self._ensure_topic(self.partitions)
                self._prepared = True
            except Exception as exc:
                log.warning("keyed scope: cannot check the internal topic; retrying",
                            extra={"topic": self.topic, "error": f"{type(exc).__name__}: {exc}"})
                if await stopped_within(stop, backoff_s):
                    return False
                backoff_s = min(backoff_s * 2, max_backoff_s)
        return True

    async def start(self) -> None:
        self._running = True
        await self.slot.get()

    async def _topic_ready(self) -> None:
        if not self._prepared and self.partitions is not None:
            await self._ensure_topic(self.partitions)
            self._prepared = True

    async def stop(self) -> None:
        self._running = False
        await self.slot.stop()

    async def send(self, records: Sequence[Any], progress: dict[Partition, float]) -> None:
        """Write every record or raise (the caller retries; nothing is committed meanwhile).

        The batch's records go to their keys' partitions packed into as few messages as
        :data:`~service.keyed.records.PACK_BYTES` allows, in batch order: a key's records keep
        their order (one partition, one idempotent producer, messages sent one after another)."""
        if records:
            self._unsent.update(progress)
            self._running = True
            producer = await self.slot.get()
            try:
                await self._send_records(producer, records)
            except Exception as exc:
                await self.slot.failed(producer, exc)
                raise
        self._unsent.difference_update(progress)
        now = self._clock()
        for tp, ts in progress.items():
            known = self._progress.get(tp)
            if known is None or ts > known[0]:
                self._progress[tp] = (ts, now)

    async def _send_records(self, producer: Any, records: Sequence[Any]) -> None:
        partitions = sorted(await producer.partitions_for(self.topic) or ())
        if not partitions:
            raise RuntimeError(f"internal topic {self.topic!r} has no partitions")
        lines: dict[int, list[bytes]] = {}
        count = 0
        for record in records:
            assert isinstance(record, StateRecord | AnomalyRecord)
            try:
                data = record.encode()
            except RecordTooLarge:
                detector = "correlation" if isinstance(record, StateRecord) else "anomaly"
                metrics.EVENTS_SKIPPED.labels(detector, "oversize_state_record").inc()
                continue
            partition = partitions[self._partition(record, len(partitions))]
            lines.setdefault(partition, []).append(data)
            count += 1
        futures = [_watched(await producer.send(self.topic, value=message, partition=partition))
                   for partition, batch in lines.items() for message in pack(batch, self._pack_bytes)]
        await asyncio.gather(*futures)
        metrics.KEYED_STATE_RECORDS.labels("sent").inc(count)

    def _partition(self, record: StateRecord | AnomalyRecord, count: int) -> int:
        """:func:`~service.keyed.records.partition_for` of the record's key, remembered per key
        (group keys repeat, and murmur2 is pure Python; see :func:`_route`); forgotten when the
        partition count changes or the cache is full."""
        if count != self._partition_count or len(self._partitions) >= PARTITION_CACHE:
            self._partitions.clear()
            self._partition_count = count
        route = _route(record)
        index = self._partitions.get(route)
        if index is None:
            index = self._partitions[route] = partition_for(record.key(), count)
        return index

    def watermark(self, view: InputView, now: float) -> Watermark:
        """This instance's progress per owned input partition (see the module docstring); stage 2's
        producer also lists the chain marks of the higher levels of its internal partitions
        (:func:`~service.keyed.records.level_row`)."""
        chain: list[tuple[int, int, float]] = []
        for tp in list(self._progress):
            owner, level = split_row(tp)
            if owner not in view.owned:
                del self._progress[tp]  # revoked: its next owner speaks for it
            elif level:
                chain.append((owner[1], level, self._progress[tp][0]))
        self._unsent &= view.owned
        rows: list[tuple[str, int, float]] = []
        idle: list[Partition] = []
        for tp in sorted(view.owned):
            known = self._progress.get(tp)
            if known is not None:
                ts, wall = known
                held = tp in view.busy or tp in self._unsent or self.chain
                rows.append((*tp, ts if held else ts + max(0.0, now - wall)))
            elif tp in view.caught_up and tp not in self._unsent and not self.chain:
                idle.append(tp)
        return Watermark(self.producer_id, tuple(r for r in rows if math.isfinite(r[2])),
                         tuple(sorted(view.counts.items())), tuple(idle),
                         tuple(sorted(r for r in chain if math.isfinite(r[2]))))

    async def send_watermark(self) -> bool:
        """This instance's watermark to every partition of the internal topic; False if it has none."""
        if not self._running:
            return False
        mark = self.watermark(await self.view(), self._clock())
        if not mark.progress and not mark.idle:
            return False
        producer = await self.slot.get()  # rebuilt here too when dropped: quiet inputs still need marks
        try:
            partitions = await producer.partitions_for(self.topic)
            data = mark.encode()
            futures = [_watched(await producer.send(self.topic, value=data, partition=p))
                       for p in sorted(partitions or ())]
            await asyncio.gather(*futures)
        except Exception as exc:
            await self.slot.failed(producer, exc)
            raise
        metrics.KEYED_STATE_RECORDS.labels("watermark").inc(len(futures))
        return True

    async def run_watermarks(self, stop: asyncio.Event) -> None:
        """Every ``keyed_watermark_interval_s`` until ``stop``: send the watermark (failures retried next time)."""
        while not await stopped_within(stop, self.interval_s):
            try:
                await self.send_watermark()
            except Exception as exc:
                log.warning("keyed scope: watermark not sent", extra={"error": f"{type(exc).__name__}: {exc}"})

    async def _ensure_topic(self, partitions: int) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        admin = AIOKafkaAdminClient(**client_kwargs(self._kafka))
        await admin.start()
        try:
            if self.topic in set(await admin.list_topics()):
                return
            brokers = (await admin.describe_cluster()).get("brokers") or []
            replication = max(1, min(3, len(brokers)))
            try:
                await admin.create_topics([NewTopic(self.topic, partitions, replication_factor=replication)])
            except TopicAlreadyExistsError:
                return
            if self.topic not in set(await admin.list_topics()):
                log.warning("keyed scope: could not create the internal topic; create it yourself",
                            extra={"topic": self.topic, "partitions": partitions})
                return
            log.info("keyed scope: internal topic created",
                     extra={"topic": self.topic, "partitions": partitions, "replication": replication})
        finally:
            await admin.close()


def _watched(future: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """``future``, whose error is retrieved even when nobody awaits it any more (a send that failed
    earlier stops the wait): not an "exception was never retrieved" line per record."""
    future.add_done_callback(_retrieved)
    return future


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
