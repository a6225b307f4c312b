"""Produce the demo corpus to Kafka: one topic per source, in event-time order.

A running ``pipesentry run`` that consumes these topics (see :func:`topics_config`) then
detects the same stories as ``pipesentry demo`` does offline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from service.demo.sources import BY_NAME, SOURCES, GeneratedEvent

Progress = Callable[[int, int], None]


async def produce(events: Sequence[GeneratedEvent], client: dict[str, Any], *,
                  progress: Progress | None = None, linger_every: int = 500) -> Counter[str]:
    """Send every event to its source's topic; returns the count per topic.

    ``client`` is aiokafka connection keyword arguments (bootstrap servers, security).
    Waits for every send to be acknowledged before returning.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client, acks="all", enable_idempotence=True, linger_ms=20)
    await producer.start()
    sent: Counter[str] = Counter()
    try:
        pending = []
        for index, item in enumerate(events):
            topic = BY_NAME[item.source].topic
            value = orjson.dumps(item.event)
            key = f"{item.source}/{index}".encode()
            pending.append(await producer.send(topic, value=value, key=key, timestamp_ms=int(item.ts * 1000)))
            sent[topic] += 1
            if len(pending) >= linger_every:
                for fut in pending:
                    await fut
                pending.clear()
                if progress is not None:
                    progress(index + 1, len(events))
        for fut in pending:
            await fut
        if progress is not None:
            progress(len(events), len(events))
    finally:
        await producer.stop()
    return sent


def topics_config() -> dict[str, Any]:
    """The ``kafka.topics`` settings mapping each demo topic to its log source, decoder and time field."""
    out: dict[str, Any] = {}
    for source in SOURCES:
        ls = source.logsource.as_dict()
        entry: dict[str, Any] = {"logsource": ls, "decoder": "json"}
        if source.time_field:
            entry["timestamp_field"] = source.time_field
        out[source.topic] = entry
    return out
