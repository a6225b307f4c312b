"""Detector snapshots of Kafka partitions kept in a compacted Kafka topic (``state.snapshots: kafka``).

Why: a partition's correlation windows and anomaly baselines must follow it to whichever
instance owns it next. On a per-instance volume (the Helm chart's persistence mode) they cannot,
and a shared volume is often not available; the broker every instance already talks to is. This is
the changelog of Kafka Streams' state stores, at the granularity pipesentry already snapshots:
one document per partition scope, saved at the same points and under the same commit rules
(``service.partition_state``), so the takeover logic is exactly that of a shared volume.

Layout of the changelog topic (``cleanup.policy=compact``): all messages of one scope go to one
partition (CRC-32 of the scope), so a load reads one partition. A snapshot of ``n`` bytes is
written as chunks keyed ``<scope>|<detector>|<generation>|<i>`` (at most ``chunk_bytes`` each, so
any snapshot fits the broker's message size), then a head keyed ``<scope>|<detector>`` naming the
generation, the chunk count, the size and the SHA-256. The head goes out only after every chunk is
acknowledged, so a crash mid-save leaves the previous head and its chunks intact (chunk keys carry
the generation: a new save never overwrites an old chunk). After the head is acknowledged, the
chunks of the previous generation and of saves cut off since are deleted with tombstones. A load reads the partition from its
start to its end, keeps the latest head of the key and the chunks of that generation, and checks
size and digest; a snapshot that cannot be assembled is logged, counted and treated as absent
(the partition starts empty at its committed offset, as after a lost volume).

Scopes that are not Kafka partitions (``local``: HTTP, stdin and file inputs, and ``instance``
scope) belong to one instance and stay in its ``data_dir/state`` through the wrapped
:class:`~service.state_store.StateStore`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from service import metrics
from service.config import KafkaSettings
from service.errors import RetriableError
from service.kafka_producers import ProducerSlot, describe
from service.sources.kafka.client import client_kwargs
from service.state_store import StateStore

log = logging.getLogger(__name__)

HEAD_FORMAT = "pipesentry.changelog/1"
KAFKA_SCOPE = "kafka:"
"""Scopes of Kafka partitions (``service.detection.scope_name``): the ones kept in the changelog."""
CHUNK_BYTES = 512 * 1024
LOAD_TIMEOUT_S = 120.0
"""A load that has not reached the partition's end by then fails (the takeover counts an error)."""
TOPIC_CONFIGS = {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}
"""Compaction must run: the active segment is never compacted, and by default it rolls weekly."""


class ChangelogError(RetriableError):
    """The changelog could not be written or read (retriable: the broker may come back)."""


@dataclass(frozen=True)
class Head:
    """What a head message names: the generation whose chunks make the snapshot."""

    generation: str
    parts: int
    size: int
    sha256: str

    def encode(self) -> bytes:
        return orjson.dumps({"format": HEAD_FORMAT, "generation": self.generation, "parts": self.parts,
                             "bytes": self.size, "sha256": self.sha256})

    @classmethod
    def decode(cls, value: bytes) -> Head:
        doc = orjson.loads(value)
        if not isinstance(doc, dict) or doc.get("format") != HEAD_FORMAT:
            raise ValueError("not a changelog head")
        generation, parts, size, digest = doc.get("generation"), doc.get("parts"), doc.get("bytes"), doc.get("sha256")
        if not (isinstance(generation, str) and type(parts) is int and parts >= 1 and type(size) is int
                and size >= 0 and isinstance(digest, str)):
            raise ValueError("malformed changelog head")
        return cls(generation, parts, size, digest)


def head_key(scope: str, detector: str) -> str:
    return f"{scope}|{detector}"


def chunk_key(scope: str, detector: str, generation: str, index: int) -> str:
    return f"{scope}|{detector}|{generation}|{index}"


def partition_of(scope: str, partitions: int) -> int:
    """The changelog partition of ``scope`` (every message of a scope goes there)."""
    return zlib.crc32(scope.encode()) % partitions


class Assembler:
    """Folds a changelog partition, message by message, into one key's latest snapshot.

    Keeps only the latest head and the chunks that may still belong to it (a chunk older than
    the latest head belongs to an earlier generation unless it is that head's): memory stays
    bounded by about two snapshots however long the uncompacted tail is.
    """

    def __init__(self, scope: str, detector: str) -> None:
        self.scope, self.detector = scope, detector
        self.key = head_key(scope, detector)
        self.prefix = self.key + "|"
        self.head: Head | None = None
        self.chunks: dict[tuple[str, int], bytes] = {}
        self.stale: set[str] = set()
        """Chunk keys written before the latest head for another generation: deletable."""
        self.damaged = False

    def add(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        text = key.decode("utf-8", "replace")
        if text == self.key:
            if value is None:
                self.head = None  # deleted
            else:
                try:
                    self.head = Head.decode(value)
                    self.damaged = False
                except ValueError:
                    self.head, self.damaged = None, True
            generation = self.head.generation if self.head is not None else None
            for chunk in [c for c in self.chunks if c[0] != generation]:
                del self.chunks[chunk]
                self.stale.add(chunk_key(self.scope, self.detector, *chunk))
        elif text.startswith(self.prefix):
            generation, _, index = text[len(self.prefix):].rpartition("|")
            if not generation or not index.isdigit():
                return
            self.stale.discard(text)
            if value is None:
                self.chunks.pop((generation, int(index)), None)
            else:
                self.chunks[(generation, int(index))] = value

    def snapshot(self) -> bytes | None:
        """The latest snapshot's bytes; None when there is none. Raises ``ValueError`` when the latest
        head's chunks are missing or do not match it."""
        if self.damaged:
            raise ValueError("the latest head is malformed")
        head = self.head
        if head is None:
            return None
        try:
            data = b"".join(self.chunks[(head.generation, i)] for i in range(head.parts))
        except KeyError:
            raise ValueError(f"chunks of generation {head.generation} missing") from None
        if len(data) != head.size or hashlib.sha256(data).hexdigest() != head.sha256:
            raise ValueError(f"generation {head.generation} does not match its head (size or SHA-256)")
        return data


class ChangelogStore:
    """``save_async``/``load_async`` of :class:`StateStore`, Kafka partition scopes kept in ``topic``."""

    def __init__(self, local: StateStore, kafka: KafkaSettings, topic: str, partitions: int, *,
                 producer_factory: Callable[..., Any] = AIOKafkaProducer,
                 consumer_factory: Callable[..., Any] = AIOKafkaConsumer,
                 admin_factory: Callable[..., Any] | None = None, chunk_bytes: int = CHUNK_BYTES,
                 load_timeout_s: float = LOAD_TIMEOUT_S) -> None:
        self.local = local
        self.topic = topic
        self.partitions = partitions
        """Partitions to create the topic with when it does not exist (an existing topic keeps its own)."""
        self._kafka = kafka
        self._consumer_factory = consumer_factory
        self._admin_factory = admin_factory
        self._chunk_bytes = max(1, min(chunk_bytes, kafka.max_message_bytes // 2))
        self._load_timeout_s = load_timeout_s
        self._slot = ProducerSlot("state_changelog", lambda: producer_factory(
            **client_kwargs(kafka), acks="all", enable_idempotence=True,
            max_request_size=max(1_048_576, 2 * self._chunk_bytes)), self._partitions, topic=topic)
        self._count: int | None = None
        """The topic's partition count, read once it exists."""
        self._written: dict[str, list[tuple[str, int]]] = {}
        """Per head key: generations (and chunk counts) this instance wrote or loaded that a later head
        makes garbage: the last completed one, and any cut off since. Deleted after the next head."""
        self._saving: dict[str, asyncio.Lock] = {}
        """One save of a key at a time: its head must follow its own chunks, and its tombstones the head before."""

    @staticmethod
    def replicated(scope: str) -> bool:
        return scope.startswith(KAFKA_SCOPE)

    # ---- the StateStore interface the detectors' state code uses

    async def save_async(self, scope: str, detector: str, snapshot: Mapping[str, Any]) -> None:
        if not self.replicated(scope):
            await self.local.save_async(scope, detector, snapshot)
            return
        try:
            data, digest = await asyncio.to_thread(_encode, snapshot)  # large states: not on the event loop
        except TypeError as exc:
            raise ValueError(f"snapshot for {scope}/{detector} is not JSON-serialisable: {exc}") from exc
        try:
            async with self._saving.setdefault(head_key(scope, detector), asyncio.Lock()):
                await self._save(scope, detector, data, digest)
        except ChangelogError:
            raise
        except Exception as exc:
            raise ChangelogError(f"cannot save state {scope}/{detector} to topic {self.topic}: {describe(exc)}") from exc

    async def load_async(self, scope: str, detector: str) -> dict[str, Any] | None:
        if not self.replicated(scope):
            return await self.local.load_async(scope, detector)
        try:
            assembler = await asyncio.wait_for(self._read(scope, detector), self._load_timeout_s)
        except TimeoutError:
            raise ChangelogError(f"cannot load state {scope}/{detector}: topic {self.topic} not read to its end "
                                 f"within {self._load_timeout_s:g} s") from None
        except ChangelogError:
            raise
        except Exception as exc:
            raise ChangelogError(f"cannot load state {scope}/{detector} from topic {self.topic}: "
                                 f"{describe(exc)}") from exc
        try:
            document = await asyncio.to_thread(_document, assembler)
        except (ValueError, orjson.JSONDecodeError) as exc:
            metrics.STATE_CHANGELOG_UNREADABLE.inc()
            log.warning("state snapshot in the changelog unreadable; starting fresh",
                        extra={"scope": scope, "detector": detector, "topic": self.topic, "error": str(exc)})
            return None
        if assembler.head is not None:
            self._written[assembler.key] = [(assembler.head.generation, assembler.head.parts)]
        if assembler.stale:
            await self._delete(scope, sorted(assembler.stale))
        return document

    async def stop(self) -> None:
        await self._slot.stop()

    # ---- Kafka

    async def _save(self, scope: str, detector: str, data: bytes, digest: str) -> None:
        producer = await self._slot.get()
        partition = partition_of(scope, await self._partitions())
        generation = secrets.token_hex(8)
        step = self._chunk_bytes
        parts = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
        key = head_key(scope, detector)
        try:
            chunks = [await producer.send(self.topic, part, key=chunk_key(scope, detector, generation, i).encode(),
                                          partition=partition) for i, part in enumerate(parts)]
            await asyncio.gather(*chunks)
            head = Head(generation, len(parts), len(data), digest)
            await (await producer.send(self.topic, head.encode(), key=key.encode(), partition=partition))
        except Exception as exc:
            self._written.setdefault(key, []).append((generation, len(parts)))  # some chunks may have landed
            await self._slot.failed(producer, exc)
            raise
        garbage = self._written.get(key, [])
        if garbage and not await self._delete(scope, [chunk_key(scope, detector, old, i) for old, count in garbage
                                                      for i in range(count)]):
            self._written[key] = [*garbage, (generation, len(parts))]  # tried again after the next head
        else:
            self._written[key] = [(generation, len(parts))]

    async def _delete(self, scope: str, keys: list[str]) -> bool:
        """Tombstones for chunks no head names any more; False when they could not all be sent (garbage
        left behind, never a snapshot lost: no head names them)."""
        try:
            producer = await self._slot.get()
            partition = partition_of(scope, await self._partitions())
            sent = [await producer.send(self.topic, None, key=key.encode(), partition=partition) for key in keys]
            await asyncio.gather(*sent)
            return True
        except Exception as exc:
            log.warning("state changelog: old chunks not deleted", extra={"topic": self.topic, "scope": scope,
                                                                         "error": describe(exc)})
            return False

    async def _read(self, scope: str, detector: str) -> Assembler:
        assembler = Assembler(scope, detector)
        consumer = self._consumer_factory(**client_kwargs(self._kafka), group_id=None, enable_auto_commit=False,
                                          auto_offset_reset="earliest",
                                          max_partition_fetch_bytes=max(self._kafka.max_partition_fetch_bytes,
                                                                        2 * self._chunk_bytes))
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, partition_of(scope, await self._partitions()))
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            await consumer.seek_to_beginning(tp)
            while await consumer.position(tp) < end:
                batches = await consumer.getmany(tp, timeout_ms=500)
                for message in batches.get(tp, ()):
                    if message.offset < end:
                        assembler.add(message.key, message.value)
        finally:
            await consumer.stop()
        return assembler

    async def _partitions(self) -> int:
        """The topic's partition count (read once), creating the compacted topic if it does not exist."""
        if self._count is None:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = (self._admin_factory or AIOKafkaAdminClient)(**client_kwargs(self._kafka))
            await admin.start()
            try:
                if self.topic not in set(await admin.list_topics()):
                    await self._create(admin)
                for _ in range(50):  # a topic just created may take a moment to show its partitions
                    described = await admin.describe_topics([self.topic])
                    found = [t for t in described if t.get("topic") == self.topic and not t.get("error_code")]
                    if found and found[0].get("partitions"):
                        self._count = len(found[0]["partitions"])
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise ChangelogError(f"topic {self.topic} not found")
            finally:
                await admin.close()
        return self._count

    async def _create(self, admin: Any) -> None:
        from aiokafka.admin import NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        brokers = (await admin.describe_cluster()).get("brokers") or []
        replication = max(1, min(3, len(brokers)))
        try:
            await admin.create_topics([NewTopic(self.topic, self.partitions, replication_factor=replication,
                                                topic_configs=TOPIC_CONFIGS)])
        except TopicAlreadyExistsError:
            return
        log.info("state changelog topic created", extra={"topic": self.topic, "partitions": self.partitions,
                                                          "replication": replication})


def _encode(snapshot: Mapping[str, Any]) -> tuple[bytes, str]:
    """A snapshot's bytes and their SHA-256 (the head's), in one trip to a worker thread."""
    data = orjson.dumps(snapshot)
    return data, hashlib.sha256(data).hexdigest()


def _document(assembler: Assembler) -> dict[str, Any] | None:
    """The assembled snapshot parsed (``ValueError`` when it is damaged or not a JSON object)."""
    data = assembler.snapshot()
    document = orjson.loads(data) if data is not None else None
    if document is not None and not isinstance(document, dict):
        raise ValueError(f"top level is {type(document).__name__}, not an object")
    return document
