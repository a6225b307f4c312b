"""``state.scope: keyed`` without a broker: the internal topic as a list per partition (records
hashed by key as Kafka's partitioner would), stage 1's batches and the watermarks of its owners."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import orjson

from detectors.model import Origin
from service.detection import Detector
from service.keyed.records import Watermark
from service.sources.base import Item

INTERNAL = "state"
PARTITIONS = 3


class Topic:
    """The internal topic: records appended to the partition their key hashes to."""

    def __init__(self, partitions: int = PARTITIONS) -> None:
        self.partitions: list[list[bytes]] = [[] for _ in range(partitions)]

    def send(self, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        if partition is None:
            assert key is not None
            partition = zlib.crc32(key) % len(self.partitions)
        self.partitions[partition].append(value)

    def items(self, start: list[int]) -> list[Item]:
        """What stage 2 reads after ``start`` (moved on to the end)."""
        out = []
        for p, values in enumerate(self.partitions):
            for offset in range(start[p], len(values)):
                out.append(Item(orjson.loads(values[offset]), Origin("kafka", INTERNAL, p, offset), None, (), 0.0))
            start[p] = len(values)
        return out


def stage1(detector: Detector, items: list[Item], topic: Topic, producer: str = "a", *, now: float = 0.0,
           topic_name: str = "auth", inputs: int = 4) -> list[Any]:
    """One batch through stage 1, its records sent, then its watermark (the batch's progress)."""
    with detector.exclusive():
        alerts = detector.process(items, now=now)
        records, progress = detector.take_records()
    for record in records:
        topic.send(record.encode(), key=record.key())
    mark(topic, producer, {tp[1]: ts for tp, ts in progress.items()}, inputs, topic_name)
    return alerts


def mark(topic: Topic, producer: str, progress: dict[int, float], inputs: int = 4, topic_name: str = "auth",
         idle: Sequence[tuple[str, int]] = ()) -> None:
    """A watermark of ``producer`` (input partition -> mark; ``idle`` input partitions) to every
    internal partition."""
    data = Watermark(producer, tuple((topic_name, p, ts) for p, ts in sorted(progress.items())),
                     ((topic_name, inputs),), tuple(idle)).encode()
    for p in range(len(topic.partitions)):
        topic.send(data, partition=p)


def stage2(detector: Any, topic: Topic, start: list[int], *, now: float = 0.0, rounds: int = 10) -> list[Any]:
    """Stage 2 over what the internal topic holds, as its consumer and producer would: read, send
    the chained records it raises and its chain marks, read again, until nothing new comes."""
    alerts: list[Any] = []
    sent: dict[int, float] = {}
    for _ in range(rounds):
        items = topic.items(start)
        if not items:
            return alerts
        alerts += detector.process(items, now=now)
        records, progress = detector.take_records()
        for record in records:
            topic.send(record.encode(), key=record.key())
        marks = {tp[1]: ts for tp, ts in progress.items() if ts > sent.get(tp[1], float("-inf"))}
        if marks:  # the producer's timer sends the marks that moved
            sent.update(marks)
            mark(topic, "stage2", dict(sent), len(topic.partitions), INTERNAL)
    raise AssertionError(f"stage 2 still busy after {rounds} rounds")
