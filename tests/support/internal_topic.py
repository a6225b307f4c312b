"""``state.scope: keyed`` without a broker: the internal topic as a list of messages per partition
(a batch's records packed per partition as stage 1 packs them, read back through stage 2's
decoder), stage 1's batches and the watermarks of its owners."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

from detectors.model import Origin
from service.decoders import build_decoder
from service.detection import Detector
from service.keyed.records import DECODER, Watermark, decode_lines, pack, partition_for, split_row
from service.sources.base import InputSpec, Item, decode_batch

INTERNAL = "state"
PARTITIONS = 3


class Message(NamedTuple):
    """The fields of aiokafka's ``ConsumerRecord`` that :func:`decode_batch` reads."""

    value: bytes
    offset: int
    timestamp: int = 0
    headers: tuple[Any, ...] = ()
    key: bytes | None = None


STAGE2 = InputSpec(f"kafka:{INTERNAL}", build_decoder(DECODER, {}), None, ())
"""How stage 2 reads the internal topic (``service/keyed/wiring.py``)."""


class Topic:
    """The internal topic: messages appended to a partition."""

    def __init__(self, partitions: int = PARTITIONS) -> None:
        self.partitions: list[list[bytes]] = [[] for _ in range(partitions)]

    def send(self, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        if partition is None:
            assert key is not None
            partition = partition_for(key, len(self.partitions))
        self.partitions[partition].append(value)

    def send_records(self, records: Sequence[Any]) -> None:
        """A batch's records as stage 1 sends them: per partition of their keys, packed in order."""
        lines: dict[int, list[bytes]] = {}
        for record in records:
            lines.setdefault(partition_for(record.key(), len(self.partitions)), []).append(record.encode())
        for partition, batch in lines.items():
            for message in pack(batch):
                self.send(message, partition=partition)

    def records(self) -> list[tuple[int, bytes]]:
        """Every record (a line of a message) with its partition, in order."""
        return [(p, line) for p, values in enumerate(self.partitions) for value in values
                for line in value.split(b"\n")]

    def items(self, start: list[int]) -> list[Item]:
        """What stage 2 reads after ``start`` (moved on to the end)."""
        decoded = None
        for p, values in enumerate(self.partitions):
            messages = [Message(values[offset], offset) for offset in range(start[p], len(values))]
            decoded = decode_batch(cast(Any, messages), STAGE2, decoded, partition=(INTERNAL, p))
            start[p] = len(values)
        assert decoded is not None and not decoded.rejected, decoded
        return decoded.items

    def read(self, partition: int, start: list[int], limit: int) -> list[Item]:
        """At most ``limit`` messages of one partition after ``start`` (moved on past them)."""
        values = self.partitions[partition]
        end = min(len(values), start[partition] + limit)
        messages = [Message(values[offset], offset) for offset in range(start[partition], end)]
        start[partition] = end
        decoded = decode_batch(cast(Any, messages), STAGE2, None, partition=(INTERNAL, partition))
        assert not decoded.rejected, decoded
        return decoded.items

    def line_items(self, start: list[int]) -> list[Item]:
        """:meth:`items` with an item per record (a line of a message, keyed by its index when the
        message holds several), as stage 2 read the internal topic before it read messages whole."""
        out: list[Item] = []
        for p, values in enumerate(self.partitions):
            for offset in range(start[p], len(values)):
                docs = decode_lines(values[offset])
                if len(docs) == 1:
                    out.append(Item(docs[0], (INTERNAL, p, offset), None, (), 0.0))
                else:
                    out.extend(Item(doc, Origin("kafka", INTERNAL, p, offset, str(index)), None, (), 0.0)
                               for index, doc in enumerate(docs))
            start[p] = len(values)
        return out

    def copy(self) -> Topic:
        twin = Topic(len(self.partitions))
        twin.partitions = [list(values) for values in self.partitions]
        return twin


def stage1(detector: Detector, items: list[Item], topic: Topic, producer: str = "a", *, now: float = 0.0,
           topic_name: str = "auth", inputs: int = 4) -> list[Any]:
    """One batch through stage 1, its records sent, then its watermark (the batch's progress)."""
    with detector.exclusive():
        alerts = detector.process(items, now=now)
        records, progress = detector.take_records()
    topic.send_records(records)
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


def chain_mark(topic: Topic, producer: str, progress: dict[tuple[str, int], float]) -> None:
    """Stage 2's watermark to every internal partition, as its producer builds it from the chain
    marks :meth:`~service.keyed.stage2.KeyedDetector.take_records` gave: level 0 as rows of the
    internal topic, the higher levels as chain rows."""
    rows, chain = [], []
    for row, ts in sorted(progress.items()):
        (_, partition), level = split_row(row)
        if level:
            chain.append((partition, level, ts))
        else:
            rows.append((INTERNAL, partition, ts))
    data = Watermark(producer, tuple(rows), ((INTERNAL, len(topic.partitions)),), (), tuple(chain)).encode()
    for p in range(len(topic.partitions)):
        topic.send(data, partition=p)


def stage2(detector: Any, topic: Topic, start: list[int], *, now: float = 0.0, rounds: int = 10,
           read: Callable[[Topic, list[int]], list[Item]] = Topic.items) -> list[Any]:
    """Stage 2 over what the internal topic holds, as its consumer and producer would: read, send
    the chained records it raises and its chain marks, read again, until nothing new comes.
    ``read``: how stage 2 reads the topic (:meth:`Topic.items`, or :meth:`Topic.line_items`)."""
    alerts: list[Any] = []
    sent: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        items = read(topic, start)
        if not items:
            return alerts
        alerts += detector.process(items, now=now)
        records, progress = detector.take_records()
        topic.send_records(records)
        marks = {row: ts for row, ts in progress.items() if ts > sent.get(row, float("-inf"))}
        if marks:  # the producer's timer sends the marks that moved
            sent.update(marks)
            chain_mark(topic, "stage2", sent)
    raise AssertionError(f"stage 2 still busy after {rounds} rounds")
