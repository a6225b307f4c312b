"""The state changelog (``state.snapshots: kafka``) over an in-memory topic: what a load returns
after any sequence of saves, including saves cut off between their messages (a crash or a broker
going away), damaged messages and stuck reads. The real broker: tests/integration/test_state_changelog.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config import KafkaSettings, Settings
from service.metrics import REGISTRY
from service.state_changelog import ChangelogError, ChangelogStore, head_key, partition_of
from service.state_store import StateStore
from tests.support.kafka import FakeAdmin, LogConsumer, ProducerFactory

SCOPE = "kafka:auth:1"
KAFKA = KafkaSettings(bootstrap_servers=["127.0.0.1:9"], topics={"auth": {}}, group_id="g")


class Topic:
    """One changelog topic: the producers every store built and a consumer over what they delivered."""

    def __init__(self) -> None:
        self.producers = ProducerFactory()
        self.admin = FakeAdmin()
        self.consumers: list[LogConsumer] = []
        self.stuck = False

    def consumer(self, **kwargs: Any) -> LogConsumer:
        consumer = LogConsumer(self.producers, **kwargs)
        consumer.stuck = self.stuck
        self.consumers.append(consumer)
        return consumer

    def store(self, root: Path, chunk_bytes: int = 16, **kwargs: Any) -> ChangelogStore:
        return ChangelogStore(StateStore(root), KAFKA, "changelog", 3, producer_factory=self.producers,
                              consumer_factory=self.consumer, admin_factory=lambda **_: self.admin,
                              chunk_bytes=chunk_bytes, **kwargs)

    def messages(self, scope: str = SCOPE) -> list[Any]:
        return self.consumer().messages(partition_of(scope, 3))


def doc(n: int, size: int = 40) -> dict[str, Any]:
    return {"offset": n, "detectors": {"correlation": {"windows": "x" * size}}}


def unreadable() -> float:
    return REGISTRY.get_sample_value("pipesentry_state_changelog_unreadable_total") or 0.0


async def test_a_snapshot_round_trips_in_chunks_and_a_fresh_store_reads_it(tmp_path):
    topic = Topic()
    await topic.store(tmp_path / "a").save_async(SCOPE, "partition", doc(7, 100))
    chunks = [m for m in topic.messages() if m.key != head_key(SCOPE, "partition").encode()]
    assert len(chunks) >= 3  # 100+ bytes in 16-byte chunks
    assert await topic.store(tmp_path / "b").load_async(SCOPE, "partition") == doc(7, 100)
    assert topic.admin.created[0].topic_configs["cleanup.policy"] == "compact"


async def test_the_local_scope_stays_in_the_data_dir(tmp_path):
    topic = Topic()
    store = topic.store(tmp_path)
    await store.save_async("local", "anomaly", {"snapshot": 1})
    assert topic.producers.built == []
    assert (tmp_path / "local" / "anomaly.json").exists()
    assert await store.load_async("local", "anomaly") == {"snapshot": 1}


async def test_a_scope_without_a_snapshot_loads_none(tmp_path):
    topic = Topic()
    await topic.store(tmp_path).save_async("kafka:auth:0", "partition", doc(1))
    assert await topic.store(tmp_path / "b").load_async(SCOPE, "partition") is None


async def test_a_new_save_deletes_the_previous_generations_chunks(tmp_path):
    topic = Topic()
    store = topic.store(tmp_path)
    await store.save_async(SCOPE, "partition", doc(1))
    first = {m.key for m in topic.messages() if m.value is not None and m.key.count(b"|") == 3}
    await store.save_async(SCOPE, "partition", doc(2))
    deleted = {m.key for m in topic.messages() if m.value is None}
    assert first and deleted == first
    assert await topic.store(tmp_path / "b").load_async(SCOPE, "partition") == doc(2)


def stray_chunks(topic: Topic) -> list[bytes]:
    """Chunk keys still live in the topic (their last message is not a tombstone) that the head does not name."""
    live = {m.key: m.value for m in topic.messages()}
    head = live.get(head_key(SCOPE, "partition").encode())
    current = head_key(SCOPE, "partition").encode() + b"|" + orjson.loads(head)["generation"].encode() + b"|"
    return [k for k, v in live.items() if v is not None and k.count(b"|") == 3 and not k.startswith(current)]


async def test_chunks_of_a_save_cut_off_before_its_head_are_deleted_after_the_next_head(tmp_path):
    topic = Topic()
    store = topic.store(tmp_path)
    await store.save_async(SCOPE, "partition", doc(1))
    topic.producers.current.failures = [None, KafkaConnectionError("broker gone")]  # chunk 0 lands, chunk 1 fails
    with pytest.raises(ChangelogError, match="broker gone"):
        await store.save_async(SCOPE, "partition", doc(2))
    assert stray_chunks(topic)  # the cut-off generation's first chunk
    await store.save_async(SCOPE, "partition", doc(3))
    assert stray_chunks(topic) == []
    assert await topic.store(tmp_path / "b").load_async(SCOPE, "partition") == doc(3)


async def test_a_next_owner_deletes_chunks_its_predecessor_left_behind(tmp_path):
    topic = Topic()
    store = topic.store(tmp_path)
    await store.save_async(SCOPE, "partition", doc(1))
    topic.producers.current.failures = [None, KafkaConnectionError("broker gone")]
    with pytest.raises(ChangelogError):
        await store.save_async(SCOPE, "partition", doc(2))
    store._written.clear()  # the predecessor dies before its next save: nobody remembers the garbage
    await store.save_async(SCOPE, "partition", doc(3))
    assert stray_chunks(topic)
    assert await topic.store(tmp_path / "b").load_async(SCOPE, "partition") == doc(3)
    assert stray_chunks(topic) == []


async def test_damaged_chunks_are_counted_and_load_as_no_snapshot(tmp_path, caplog):
    topic = Topic()
    await topic.store(tmp_path).save_async(SCOPE, "partition", doc(1, 100))
    producer = topic.producers.current
    index = next(i for i, (_, _, key) in enumerate(producer.sent) if key and key.count(b"|") == 3)
    topic_name, value, key = producer.sent[index]
    producer.sent[index] = (topic_name, value[:-1] + b"#", key)
    before = unreadable()
    assert await topic.store(tmp_path / "b").load_async(SCOPE, "partition") is None
    assert unreadable() == before + 1
    assert "unreadable" in caplog.text


async def test_a_load_that_cannot_reach_the_end_fails_within_its_bound(tmp_path):
    topic = Topic()
    await topic.store(tmp_path).save_async(SCOPE, "partition", doc(1))
    topic.stuck = True
    with pytest.raises(ChangelogError, match="not read to its end"):
        await topic.store(tmp_path / "b", load_timeout_s=0.3).load_async(SCOPE, "partition")
    assert topic.consumers[-1].stopped


async def test_a_broker_that_is_down_fails_the_save_with_a_retriable_error(tmp_path):
    topic = Topic()
    topic.producers.down = True
    with pytest.raises(ChangelogError) as raised:
        await topic.store(tmp_path).save_async(SCOPE, "partition", doc(1))
    assert raised.value.retriable


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 300), st.one_of(st.none(), st.integers(0, 30))), min_size=1, max_size=8),
       st.integers(1, 64))
def test_a_load_returns_the_last_save_that_completed(tmp_path_factory, saves, chunk_bytes):
    """Any sequence of saves of any size, each completing or cut off at any of its messages (the
    chunks, the head or the tombstones after it): a fresh store loads exactly the last completed one
    (None before any), and a save that completes whole leaves no chunk no head names."""
    root = tmp_path_factory.mktemp("changelog")

    async def scenario() -> None:
        topic = Topic()
        store = topic.store(root, chunk_bytes=chunk_bytes)
        expected: dict[str, Any] | None = None
        for n, (size, cut) in enumerate(saves):
            snapshot = doc(n, size)
            writer = store._slot.current  # the writer's own producer (readers build theirs too)
            if writer is not None and cut is not None:
                writer.failures = [None] * cut + [KafkaConnectionError("cut")]
            try:
                await store.save_async(SCOPE, "partition", snapshot)
            except ChangelogError:
                if writer is not None:
                    writer.failures = []
            else:
                expected = snapshot
            assert await topic.store(root / "next", chunk_bytes=chunk_bytes).load_async(SCOPE, "partition") == expected
        if store._slot.current is not None:
            store._slot.current.failures = []
        await store.save_async(SCOPE, "partition", doc(-1))  # a save with nothing cut off deletes every leftover
        assert stray_chunks(topic) == []

    asyncio.run(scenario())


def test_snapshots_kafka_needs_the_kafka_input_and_names_a_topic_per_group():
    with pytest.raises(ValueError, match="configure the kafka input"):
        Settings(state={"snapshots": "kafka"})
    s = Settings(kafka={"bootstrap_servers": ["b:9092"], "topics": {"auth": {}}, "group_id": "soc"},
                 state={"snapshots": "kafka"})
    assert s.state.changelog_topic == "soc-state-changelog"
    with pytest.raises(ValueError, match="must not be an input"):
        Settings(kafka={"bootstrap_servers": ["b:9092"], "topics": {"auth": {}}, "group_id": "soc"},
                 state={"snapshots": "kafka", "changelog_topic": "auth"})
