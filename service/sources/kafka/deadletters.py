"""The dead-letter topic: an unreadable message is kept there, with its metadata, before its
offset may be committed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from service import metrics
from service.config import KafkaSettings
from service.sources.base import Rejected
from service.sources.kafka.client import client_kwargs

log = logging.getLogger(__name__)

DLQ_HEADER_PREFIX = "pipesentry."


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
    kept = [(k, v or b"") for k, v in item.message.headers]
    return [*kept, *((DLQ_HEADER_PREFIX + k, v.encode()) for k, v in ours)]


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
