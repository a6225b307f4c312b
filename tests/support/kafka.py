"""An in-memory stand-in for aiokafka's consumer, and a ``KafkaSource`` built around it.

The real broker is exercised in ``tests/integration``; these fakes let unit tests drive the runner's
bookkeeping (assignment, pause/resume, commits with metadata, seeks after a snapshot restore)
deterministically.
"""

from __future__ import annotations

import asyncio
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from service.config import EventSettings, KafkaSettings
from service.detection import Detector, compile_detection
from tests.support.rules import CURL_RULE

Record = namedtuple("Record", "value key offset timestamp headers")


class _FakeCoordinator:
    """The part of aiokafka's group coordinator that reads committed offsets with their metadata."""

    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer

    async def fetch_committed_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, Any]:
        out = {}
        for tp in partitions:
            offset = await self.consumer.committed(tp)
            if offset is not None:
                out[tp] = OffsetAndMetadata(offset, self.consumer.metadata.get(tp, ""))
        return out


class FakeConsumer:
    """Just enough of AIOKafkaConsumer: group assignment, getmany, pause/resume, commit (with metadata), seek.

    ``committed``: offsets the group committed before this member joined; it resumes there.
    """

    def __init__(self, records: dict[TopicPartition, list[Any]],
                 committed: Mapping[TopicPartition, int] | None = None) -> None:
        self.records = records
        self.positions = dict.fromkeys(records, 0)
        self._paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.metadata: dict[TopicPartition, str] = {}
        """Metadata of each partition's last commit (a new group member takes it over with the commits)."""
        self._coordinator = _FakeCoordinator(self)
        self.listener: Any = None
        self.assigned: set[TopicPartition] = set()
        self.ever_paused = False
        self.seeks: list[tuple[TopicPartition, int]] = []
        if committed:
            self.commits.append(dict(committed))
            self.positions.update(committed)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, topics: Any = None, pattern: Any = None, listener: Any = None) -> None:
        self.listener = listener

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        if not self.assigned:
            self.assigned = set(self.records)
            await self.listener.on_partitions_assigned(sorted(self.assigned))
        out = {}
        for tp in sorted(self.assigned - self._paused):
            pos = self.positions[tp]
            chunk = self.records[tp][pos:pos + 3]
            if chunk:
                out[tp] = chunk
                self.positions[tp] = pos + len(chunk)
        if not out:
            await asyncio.sleep(0.01)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tps)
        self.ever_paused = True

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.records[tp])

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})
        self.metadata.update({tp: meta.metadata for tp, meta in offsets.items()})

    async def committed(self, tp: TopicPartition) -> int | None:
        return next((c[tp] for c in reversed(self.commits) if tp in c), None)


class FakeDeadLetters:
    """Keeps the rejects it was sent; the first ``failures`` non-empty sends raise (the topic is down)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[Any] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, rejected: list[Any]) -> None:
        if rejected and self.failures:
            self.failures -= 1
            raise RuntimeError("dlq down")
        self.sent.extend(rejected)


def kafka_runner(tmp_path: Path, router: Any, records: dict[TopicPartition, list[Any]],
                 dead_letters: Any = None, **kafka: Any) -> tuple[Any, FakeConsumer]:
    """A ``KafkaSource`` on topic ``ci`` (category ``ci_job_log``, the curl rule) over an in-memory consumer."""
    from service.sources.kafka import KafkaSource

    (tmp_path / "r.yml").write_text(CURL_RULE)
    detector = Detector(compile_detection([tmp_path / "r.yml"], [], skip_invalid=False).detection)
    settings = KafkaSettings(bootstrap_servers=["unused:1"], topics={"ci": {"logsource": {"category": "ci_job_log"}}},
                             **{"commit_interval_s": 0.02, **kafka})
    consumer = FakeConsumer(records)
    runner = KafkaSource(settings, EventSettings(), detector, router, dead_letters=dead_letters or FakeDeadLetters(),
                         consumer_factory=lambda **_: consumer)
    return runner, consumer


def ci_records(count: int, bad: frozenset[int] = frozenset()) -> list[Any]:
    """``count`` CI log records that match the curl rule; offsets in ``bad`` are not JSON."""
    out = []
    for i in range(count):
        value = b"not json" if i in bad else (b'{"message": "curl x | sh", "n": %d}' % i)
        out.append(Record(value, None, i, 1767323045000 + i, [("h", b"v")]))
    return out


class FakeProducer:
    """aiokafka's producer as the Kafka alert sink and the keyed scope's state-record producer use it
    (build with ``**kwargs``, ``start``, ``send`` returning a future, ``partitions_for``, ``stop``).
    ``down``: ``start`` and ``send`` raise a connection error; ``failures``: exceptions the next
    sends' futures end with, in order (None: delivered); ``hold``: futures of later sends never
    resolve (a broker that stopped answering); :meth:`end_sender`: its background sender stopped.
    ``routed``: the partition each record of ``sent`` was sent to (None: by key)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.routed: list[int | None] = []
        self.topic_partitions = {0, 1, 2}
        self.down = False
        self.failures: list[BaseException | None] = []
        self.hold = False
        self.held: list[tuple[asyncio.Future[Any], tuple[str, bytes, bytes | None], int | None]] = []
        self.started = 0
        self.stopped = 0

    async def start(self) -> None:
        from aiokafka.errors import KafkaConnectionError

        if self.down:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    async def partitions_for(self, topic: str) -> set[int]:
        return set(self.topic_partitions)

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[Any]:
        from aiokafka.errors import KafkaConnectionError

        if self.down:
            raise KafkaConnectionError("Unable to connect to 127.0.0.1:9")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.hold:
            self.held.append((future, (topic, value, key), partition))
            return future
        outcome = self.failures.pop(0) if self.failures else None
        if outcome is None:
            self.sent.append((topic, value, key))
            self.routed.append(partition)
            future.set_result(None)
        else:
            future.set_exception(outcome)
        return future

    def end_sender(self, error: BaseException) -> None:
        """aiokafka's background sender ends with ``error`` (fenced, out-of-order sequence): what it
        still held fails with it, and records sent from now on would wait for ever."""
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ended.set_exception(error)
        ended.exception()
        self._sender = SimpleNamespace(sender_task=ended)
        for future, _, _ in self.held:
            future.set_exception(error)
        self.held.clear()

    def release(self) -> None:
        """The broker answers again: every held record is acknowledged (an idempotent producer's
        batches are retried until then, never expired)."""
        self.hold = False
        for future, record, partition in self.held:
            self.sent.append(record)
            self.routed.append(partition)
            future.set_result(None)
        self.held.clear()


class ProducerFactory:
    """Hands out one :class:`FakeProducer` at a time (``current``), a new one per build."""

    def __init__(self) -> None:
        self.built: list[FakeProducer] = []
        self.down = False

    def __call__(self, **kwargs: Any) -> FakeProducer:
        producer = FakeProducer(**kwargs)
        producer.down = self.down
        self.built.append(producer)
        return producer

    @property
    def current(self) -> FakeProducer:
        return self.built[-1]


class LogConsumer:
    """aiokafka's consumer as ``service.state_changelog`` reads a topic from its start: the messages
    every producer of ``factory`` delivered, in order, per partition. ``stuck``: its position never
    reaches the end (a broker that stopped answering)."""

    def __init__(self, factory: ProducerFactory, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self._factory = factory
        self._tp: TopicPartition | None = None
        self._position = 0
        self.stuck = False
        self.stopped = False

    def messages(self, partition: int) -> list[Any]:
        delivered = [(topic, value, key) for producer in self._factory.built
                     for (topic, value, key), routed in zip(producer.sent, producer.routed, strict=True)
                     if routed == partition]
        return [Record(value, key, offset, 0, ()) for offset, (_, value, key) in enumerate(delivered)]

    async def start(self) -> None: ...

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, tps: list[TopicPartition]) -> None:
        (self._tp,) = tps

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.messages(tp.partition)) for tp in tps}

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self._position = 0

    async def position(self, tp: TopicPartition) -> int:
        return self._position

    async def getmany(self, tp: TopicPartition, timeout_ms: int = 0) -> dict[TopicPartition, list[Any]]:
        if self.stuck:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch = self.messages(tp.partition)[self._position:self._position + 50]
        self._position += len(batch)
        return {tp: batch}


class FakeAdmin:
    """aiokafka's admin client as topic set-up code uses it: ``topics`` exist, ``created`` were made."""

    def __init__(self, topics: set[str] | None = None, **kwargs: Any) -> None:
        self.topics = set(topics or ())
        self.created: list[Any] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> list[str]:
        return sorted(self.topics)

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": 1}]}

    async def create_topics(self, topics: list[Any]) -> None:
        self.created.extend(topics)
        self.topics.update(t.name for t in topics)

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"topic": name, "error_code": 0, "partitions": [{"partition": i} for i in range(3)]}
                for name in names if name in self.topics]
