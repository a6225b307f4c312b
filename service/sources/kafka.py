"""Kafka plumbing for the runtime: client settings, offset bookkeeping, rebalances, dead letters.

The consume loop itself lives in ``service.runtime``; this module holds the
pieces that encode the at-least-once contract:

* :class:`OffsetTracker` only ever moves a partition's commit point to the
  offset *after* a message whose alerts the router has accepted, in order;
* :class:`Rebalance` drains in-flight work and commits before partitions are
  given away, so the next owner starts exactly where this one finished;
* :class:`DeadLetterWriter` keeps an unreadable message with its metadata in a
  topic before its offset may be committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import OffsetAndMetadata

from service import metrics
from service.config import KafkaSettings
from service.sources.base import Rejected

log = logging.getLogger(__name__)

DLQ_HEADER_PREFIX = "pipesentry."


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security settings shared by the consumer and the dead-letter producer."""
    sec = settings.security
    kwargs: dict[str, Any] = {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "client_id": settings.client_id,
        "security_protocol": sec.protocol,
    }
    if sec.protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(
            cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None,
            certfile=str(sec.ssl_certfile) if sec.ssl_certfile else None,
            keyfile=str(sec.ssl_keyfile) if sec.ssl_keyfile else None,
            password=sec.ssl_key_password.get_secret_value() if sec.ssl_key_password else None,
        )
        context.check_hostname = sec.ssl_check_hostname
        kwargs["ssl_context"] = context
    if sec.protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = sec.sasl_mechanism
        kwargs["sasl_plain_username"] = sec.sasl_username
        kwargs["sasl_plain_password"] = sec.sasl_password.get_secret_value() if sec.sasl_password else None
    return kwargs


def consumer_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Everything ``AIOKafkaConsumer`` needs; auto-commit is off, commits are ours."""
    return {
        **client_kwargs(settings),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "fetch_max_bytes": settings.fetch_max_bytes,
        "max_partition_fetch_bytes": settings.max_partition_fetch_bytes,
        "retry_backoff_ms": 250,
    }


class OffsetTracker:
    """Next offset to commit per partition, moved only by acknowledged batches.

    ``acked`` holds the offset after the last message whose alerts were
    accepted; ``committed`` what Kafka last confirmed. Partitions not assigned
    any more are dropped, so a late acknowledgement cannot commit on a
    partition another instance now owns.
    """

    def __init__(self) -> None:
        self.acked: dict[TopicPartition, int] = {}
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
            self.committed.pop(tp, None)
            self.metadata.pop(tp, None)

    def ack(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, next_offset in offsets.items():
            if tp in self.assigned and next_offset > self.acked.get(tp, -1):
                self.acked[tp] = next_offset

    def pending(self, only: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Acknowledged offsets not yet committed (optionally restricted to ``only``)."""
        wanted = set(only) if only is not None else None
        return {tp: off for tp, off in self.acked.items()
                if off != self.committed.get(tp) and (wanted is None or tp in wanted)}

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


def dead_letter_headers(item: Rejected) -> list[tuple[str, bytes]]:
    origin = item.message.origin
    ours = [
        ("source_topic", str(origin.topic or "")),
        ("source_partition", str(origin.partition if origin.partition is not None else "")),
        ("source_offset", str(origin.offset if origin.offset is not None else "")),
        ("source_timestamp_ms", str(int(item.message.fallback_time * 1000))),
        ("reason", item.reason),
        ("error", item.error[:1000]),
    ]
    return [*item.message.headers, *((DLQ_HEADER_PREFIX + k, v.encode()) for k, v in ours)]


class DeadLetterWriter:
    """Writes rejected messages to the dead-letter topic; ``send`` returns once Kafka has them."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._topic = settings.dead_letter_topic
        self._producer: AIOKafkaProducer | None = None

    @property
    def enabled(self) -> bool:
        return self._topic is not None

    async def start(self) -> None:
        if self._topic is None or self._producer is not None:
            return
        producer = AIOKafkaProducer(**client_kwargs(self._settings), acks="all", enable_idempotence=True,
                                    max_request_size=max(self._settings.max_message_bytes * 2, 1_048_576))
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, rejected: Sequence[Rejected]) -> None:
        """Write every message or raise; callers retry and do not commit past them meanwhile."""
        if not rejected:
            return
        if self._topic is None:
            for item in rejected:
                log.warning("message rejected (no dead_letter_topic configured)",
                            extra={"origin": item.message.origin.token(), "reason": item.reason,
                                   "error": item.error[:300]})
            return
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        futures = [await producer.send(self._topic, value=item.message.value, key=item.message.key,
                                       headers=dead_letter_headers(item)) for item in rejected]
        try:
            await asyncio.gather(*futures)
        except Exception:
            metrics.DEAD_LETTER_FAILURES.labels("kafka").inc(len(rejected))
            raise
        metrics.DEAD_LETTERS.labels("kafka").inc(len(rejected))
