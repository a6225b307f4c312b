"""The Kafka source's at-least-once bookkeeping (``service/sources/kafka/``) against an in-memory consumer:
offsets, commits, backpressure, dead letters, revocation, subscription, partition state (the real
broker is in tests/integration)."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import TopicPartition

from service.config import EventSettings, KafkaSettings
from service.detection import Detector, compile_detection
from service.sources.kafka import OffsetTracker
from tests.support.kafka import FakeConsumer, FakeDeadLetters, Record, ci_records, kafka_runner
from tests.support.routers import FakeRouter
from tests.support.rules import REPEATED_LOGINS
from tests.support.waits import until


def test_offset_tracker_only_moves_forward_on_owned_partitions():
    tp, other = TopicPartition("t", 0), TopicPartition("t", 1)
    tracker = OffsetTracker()
    tracker.assign([tp])
    tracker.ack({tp: 10, other: 99})
    tracker.ack({tp: 5})
    assert tracker.pending() == {tp: 10}
    tracker.confirm({tp: 10})
    assert tracker.pending() == {}
    tracker.revoke([tp])
    tracker.ack({tp: 20})
    assert tracker.pending() == {}


async def test_a_crashed_commit_loop_is_surfaced_and_the_consumer_reconnects(tmp_path, caplog):
    """The committer task (commits and idle snapshots) dying must not leave offsets frozen silently."""
    tp = TopicPartition("ci", 0)
    router = FakeRouter()
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(10)}, connect_backoff_initial_s=0.01)
    crashes: list[int] = []

    async def gate(offsets):
        if not crashes:
            crashes.append(1)
            raise RuntimeError("injected commit-loop crash")
        return offsets

    runner.tracker.gate = gate
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: consumer.commits and consumer.commits[-1][tp] == 10)
    stop.set()
    await task
    assert crashes and any("consume loop failed" in r.getMessage() for r in caplog.records)


async def test_kafka_loop_commits_only_what_the_router_accepted(tmp_path):
    tp = TopicPartition("ci", 0)
    router = FakeRouter(failures=3)
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(10)})
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: len(router.accepted) == 10 and consumer.commits and consumer.commits[-1][tp] == 10)
    stop.set()
    await task
    assert len({a.id for a in router.accepted}) == 10
    assert [a.origin.offset for a in router.accepted] == list(range(10))
    # every commit was at most what had been accepted at that point, and commits never go back
    committed = [c[tp] for c in consumer.commits]
    assert committed == sorted(committed) and committed[-1] == 10


async def test_kafka_backpressure_pauses_partitions_and_loses_nothing(tmp_path):
    tp = TopicPartition("ci", 0)
    router = FakeRouter()
    router.gate.clear()
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(30)}, max_in_flight_batches=2)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: consumer.ever_paused)
    assert consumer.positions[tp] < 30 and consumer.commits == []
    router.gate.set()
    await until(lambda: len(router.accepted) == 30)
    await until(lambda: consumer.commits and consumer.commits[-1][tp] == 30)
    await until(lambda: consumer.paused() == set())  # resumed once the router caught up
    stop.set()
    await task


async def test_kafka_rejects_reach_dead_letters_before_their_offsets_are_committed(tmp_path):
    tp = TopicPartition("ci", 0)
    dead = FakeDeadLetters(failures=2)
    router = FakeRouter()
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(6, bad=frozenset({1, 4}))}, dead_letters=dead)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: consumer.commits and consumer.commits[-1][tp] == 6)
    stop.set()
    await task
    assert [(r.message.origin.offset, r.reason, r.message.value) for r in dead.sent] == [
        (1, "decode", b"not json"), (4, "decode", b"not json")]
    assert dead.sent[0].message.headers == (("h", b"v"),)
    assert len(router.accepted) == 4


async def test_kafka_revocation_drains_and_commits_the_revoked_partitions(tmp_path):
    tp = TopicPartition("ci", 0)
    router = FakeRouter()
    router.gate.clear()  # the batch is detected but its alerts are not accepted yet
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(3)}, commit_interval_s=60)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: router.offered == 1 and runner.ready)
    revoking = asyncio.create_task(consumer.listener.on_partitions_revoked([tp]))
    await asyncio.sleep(0)
    assert not revoking.done() and consumer.commits == []  # the revocation waits for the batch
    router.gate.set()
    await revoking
    assert consumer.commits[-1] == {tp: 3} and len(router.accepted) == 3
    assert not runner.ready
    stop.set()
    await task


def test_subscription_pattern_combines_listed_topics_and_the_pattern():
    import re

    from service.sources.kafka import subscription_pattern

    both = KafkaSettings(bootstrap_servers=["x:1"], topics={"ci.logs": {}, "audit": {}}, topic_pattern="k8s-.*")
    regex = re.compile(subscription_pattern(both))
    assert all(regex.match(t) for t in ("ci.logs", "audit", "k8s-prod"))
    assert not any(regex.match(t) for t in ("ciXlogs", "audit-2", "other"))
    assert subscription_pattern(KafkaSettings(bootstrap_servers=["x:1"], topics={"a": {}})) is None


async def test_partition_state_moves_with_the_partition_through_the_state_store(tmp_path):
    """Two failed logins on one instance, the partition moves, the third login on the next owner fires."""
    from service.sources.kafka import KafkaSource
    from service.state_store import StateStore

    (tmp_path / "c.yml").write_text(REPEATED_LOGINS)
    tp = TopicPartition("ci", 0)
    store = StateStore(tmp_path / "state")
    settings = KafkaSettings(bootstrap_servers=["unused:1"], topics={"ci": {"logsource": {"category": "ci_job_log"}}},
                             commit_interval_s=60)

    def login(offset: int) -> Record:
        value = orjson.dumps({"message": "login failed", "user": "bob", "ts": 1000.0 + offset})
        return Record(value, None, offset, 0, [])

    def instance(records):
        detector = Detector(compile_detection([tmp_path / "c.yml"], [], skip_invalid=False).detection)
        router = FakeRouter()
        consumer = FakeConsumer({tp: records})
        runner = KafkaSource(settings, EventSettings(timestamp_fields=["ts"]), detector, router,
                             dead_letters=FakeDeadLetters(), consumer_factory=lambda **_: consumer, state_store=store)
        return runner, consumer, router

    first, consumer, router = instance([login(0), login(1)])
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await until(lambda: first.tracker.acked.get(tp) == 2)  # detected and acknowledged, not committed
    await consumer.listener.on_partitions_revoked([tp])  # drain, commit 2, save state at offset 2
    stop.set()
    await task
    assert router.accepted == [] and store.load("kafka:ci:0", "partition")["offset"] == 2

    second, consumer2, router2 = instance([login(0), login(1), login(2)])
    consumer2.commits.append({tp: 2})
    consumer2.metadata = dict(consumer.metadata)  # committed by the first instance
    consumer2.positions[tp] = 2  # the group resumes at the committed offset
    stop = asyncio.Event()
    task = asyncio.create_task(second.run(stop))
    await until(lambda: len(router2.accepted) == 1)
    stop.set()
    await task
    assert router2.accepted[0].rule.title == "Repeated Failed Logins"
