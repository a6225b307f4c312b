"""Per-partition detector snapshots of the Kafka loop: taken with their committed offset, restored on
assignment, and replayed from after a crash (in-memory consumer, fake snapshot clock)."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import TopicPartition

from detectors.model import LogSource
from service.config import EventSettings, KafkaSettings
from service.detection import Detector, compile_detection
from service.sources.base import Item
from service.sources.kafka import KafkaSource
from service.state_store import StateStore
from tests.support.alerts import Clock
from tests.support.kafka import FakeConsumer, FakeDeadLetters, Record
from tests.support.routers import FakeRouter
from tests.support.rules import REPEATED_LOGINS
from tests.support.waits import until

TP = TopicPartition("ci", 0)
SCOPE = "kafka:ci:0"


def login(offset: int, user: str = "bob") -> Record:
    return Record(orjson.dumps({"message": "login failed", "user": user, "ts": 1000.0 + offset}), None, offset, 0, [])


def instance(tmp_path, consumer, clock=None, **kafka):
    (tmp_path / "c.yml").write_text(REPEATED_LOGINS)
    detector = Detector(compile_detection([tmp_path / "c.yml"], [], skip_invalid=False).detection)
    router = FakeRouter()
    settings = KafkaSettings(bootstrap_servers=["unused:1"], topics={"ci": {"logsource": {"category": "ci_job_log"}}},
                             **{"commit_interval_s": 60, **kafka})
    runner = KafkaSource(settings, EventSettings(timestamp_fields=["ts"]), detector, router,
                         dead_letters=FakeDeadLetters(), consumer_factory=lambda **_: consumer,
                         state_store=StateStore(tmp_path / "state"), snapshot_interval_s=10,
                         clock=clock or Clock(0.0))
    return runner, router


async def test_busy_partition_is_snapshotted_with_the_offset_committed_right_after_its_batch(tmp_path):
    clock = Clock(0.0)
    consumer = FakeConsumer({TP: [login(0), login(1)]})
    runner, _ = instance(tmp_path, consumer, clock)
    store = runner.state_store
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: consumer.positions[TP] == 2 and runner.tracker.acked.get(TP) == 2)
    assert store.load(SCOPE, "partition") is None and consumer.commits == []  # not due yet
    clock.now = 11
    consumer.records[TP].append(login(2, "amy"))
    # the base (empty, offset 0) is saved right before the first commit, then the periodic snapshot
    await until(lambda: (store.load(SCOPE, "partition") or {}).get("offset") == 3)
    saved = store.load(SCOPE, "partition")
    assert saved["offset"] == 3 and consumer.commits[-1] == {TP: 3}
    assert saved["clock"][0] == 1002.0
    stop.set()
    await task

    # the next owner restores it at the committed offset and counts on: bob's third login fires
    nxt = FakeConsumer({TP: [login(0), login(1), login(2, "amy"), login(3)]}, committed={TP: 3})
    nxt.metadata = dict(consumer.metadata)  # the group's commit, made by the first owner
    runner2, router2 = instance(tmp_path, nxt)
    stop = asyncio.Event()
    task = asyncio.create_task(runner2.run(stop))
    await until(lambda: len(router2.accepted) == 1)
    stop.set()
    await task
    assert nxt.seeks == [] and router2.accepted[0].rule.title == "Repeated Failed Logins"


async def test_idle_partition_is_snapshotted_after_a_commit(tmp_path):
    clock = Clock(0.0)
    consumer = FakeConsumer({TP: [login(0)]})
    runner, _ = instance(tmp_path, consumer, clock, commit_interval_s=0.02)
    store = runner.state_store
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: consumer.commits and consumer.commits[-1] == {TP: 1})
    assert store.load(SCOPE, "partition")["offset"] == 0  # the base, saved before the first commit
    clock.now = 11
    await until(lambda: store.load(SCOPE, "partition")["offset"] == 1)
    assert store.load(SCOPE, "partition")["offset"] == 1
    stop.set()
    await task


async def test_after_a_crash_the_records_since_the_snapshot_are_replayed_and_counted_once(tmp_path):
    """Snapshot at offset 2 (bob's two logins); offsets 2 and 3 were committed (4) before the crash."""
    store = StateStore(tmp_path / "state")
    (tmp_path / "c.yml").write_text(REPEATED_LOGINS)
    before = Detector(compile_detection([tmp_path / "c.yml"], [], skip_invalid=False).detection)
    before.process([Item({"message": "login failed", "user": "bob", "ts": 1000.0 + i}, ("ci", 0, i),
                         LogSource(category="ci_job_log"), ("ts",), 0.0) for i in (0, 1)], now=5.0)
    for name, snapshot in before.export_scope(("ci", 0)).items():
        store.save(SCOPE, name, {"offset": 2, "snapshot": snapshot, "clock": [1001.0, 5.0]})

    records = [login(0), login(1), login(2, "amy"), login(3), login(4, "amy")]
    consumer = FakeConsumer({TP: records}, committed={TP: 4})
    runner, router = instance(tmp_path, consumer)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: consumer.positions[TP] == 5 and runner.tracker.acked.get(TP) == 5)
    stop.set()
    await task
    assert consumer.seeks == [(TP, 2)]
    # bob: 2 restored + offset 3 replayed = 3 -> one alert; amy: 2 -> none. Without the restore bob has 1,
    # without the replay offset 3 is never read, and nothing before offset 2 is counted twice.
    assert [a.details["group"] for a in router.accepted] == [{"user": "bob"}]
    assert [c["ref"] for c in router.accepted[0].details["contributors"]][-1] == "kafka:ci:0:3"


async def test_a_snapshot_ahead_of_the_committed_offset_is_not_used(tmp_path):
    store = StateStore(tmp_path / "state")
    store.save(SCOPE, "correlation", {"offset": 9, "snapshot": {"format": "x"}, "clock": None})
    consumer = FakeConsumer({TP: [login(0), login(1), login(2)]}, committed={TP: 0})
    runner, router = instance(tmp_path, consumer)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: len(router.accepted) == 1)  # counted from empty state: the three logins fire
    stop.set()
    await task
    assert consumer.seeks == []


async def test_lagging_partitions_are_reported_busy(tmp_path):
    consumer = FakeConsumer({TP: [login(i, f"u{i}") for i in range(5)]})  # fetched three at a time
    runner, _ = instance(tmp_path, consumer)
    runner.tracker.assign([TP])
    work = runner._process({TP: consumer.records[TP][:3]}, consumer)
    assert work.accepted == 3 and runner.busy_scopes() == {("ci", 0)}
    runner._process({TP: consumer.records[TP][3:]}, consumer)
    assert runner.busy_scopes() == set()
