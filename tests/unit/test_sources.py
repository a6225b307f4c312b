"""Inputs: event time, line splitting, file following with rotation, stdin, and the Kafka loop's
at-least-once bookkeeping (against an in-memory consumer; the real broker is in tests/integration)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import namedtuple
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from detectors.model import LogSource, Origin
from service.config import EventSettings, KafkaSettings, StdinSettings
from service.detection import Detector, compile_detection
from service.pipeline import IngestResult, drive
from service.sources.base import InputSpec, Item, LineSplitter, RawMessage, decode_batch
from service.sources.filetail import FileFollower
from service.sources.kafka import OffsetTracker
from service.sources.stdin import StdinSource

RULE = """
title: Curl Piped To Shell
id: 6f1d1a4e-0000-4000-8000-000000000001
author: tests
logsource: {category: ci_job_log}
detection:
    sel: {message|contains: '| sh'}
    condition: sel
level: high
"""


class IngestFn:
    """A stand-in for the pipeline core that hands each batch's messages to a test function."""

    def __init__(self, fn) -> None:
        self.fn = fn

    async def ingest(self, source, messages, spec) -> IngestResult:
        await self.fn(messages)
        return IngestResult(len(messages))


FILE_SPEC = InputSpec.from_settings("file", StdinSettings(), ["@timestamp"])


async def eventually(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_item_time_uses_first_usable_field_then_fallback():
    item = Item({"a": {"ts": "bad"}, "time": 1767323045}, Origin("x"), LogSource(), ("a.ts", "time"), 7.0)
    assert item.time() == 1767323045.0
    assert Item({"x": 1}, Origin("x"), LogSource(), ("time",), 7.0).time() == 7.0
    flat = Item({"event.created": "2026-01-02T03:04:05Z"}, Origin("x"), LogSource(), ("event.created",), 0)
    assert flat.time() == 1767323045.0


def test_line_splitter_keeps_offsets_across_chunks():
    splitter = LineSplitter(max_line=100)
    assert splitter.feed(b"ab\r\n\ncd") == [(0, b"ab")]
    assert splitter.feed(b"e\nfg") == [(5, b"cde")]
    assert splitter.flush() == [(9, b"fg")]
    long = LineSplitter(max_line=4)
    assert long.feed(b"0123456789") == [(0, b"0123456789")]


def test_decode_batch_gives_each_event_of_a_message_its_own_origin():
    spec = InputSpec("t", lambda data: [{"n": 1}, {"n": 2}] if data == b"two" else [{"n": 0}],
                     LogSource(product="p"), ("ts",))
    out = decode_batch([RawMessage(b"two", Origin("kafka", "t", 0, 5), 1.0),
                        RawMessage(b"one", Origin("kafka", "t", 0, 6), 1.0)], spec)
    assert [(i.event["n"], i.origin.offset, i.origin.key) for i in out.items] == [(1, 5, "0"), (2, 5, "1"), (0, 6, None)]


async def test_file_follower_survives_rename_and_truncate_rotation(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"old line before start\n")
    got: list[RawMessage] = []

    async def ingest(messages):
        got.extend(messages)

    stop = asyncio.Event()
    follower = FileFollower(path, FILE_SPEC, start_at="end", poll_interval_s=0.02)
    task = asyncio.create_task(drive(follower, IngestFn(ingest), stop))
    await asyncio.sleep(0.1)
    with path.open("ab") as f:
        f.write(b"one\ntw")
        f.flush()
        await eventually(lambda: len(got) == 1)
        f.write(b"o\n")
    await eventually(lambda: len(got) == 2)
    # rename rotation: a last line lands in the old file after the rename, before the new file is read
    with path.open("ab") as f:
        os.rename(path, tmp_path / "app.log.1")
        f.write(b"three\n")
    path.write_bytes(b"four\n")
    await eventually(lambda: len(got) == 4)
    # copytruncate rotation
    path.write_bytes(b"")
    await asyncio.sleep(0.1)
    path.write_bytes(b"five\n")
    await eventually(lambda: len(got) == 5)
    stop.set()
    await task
    assert [m.value for m in got] == [b"one", b"two", b"three", b"four", b"five"]
    keys = [m.origin.key for m in got]
    assert len(set(keys)) == 5 and ":22:" in keys[0] and ":26:" in keys[1]


async def test_a_restarted_file_follower_resumes_after_the_last_accepted_line(tmp_path):
    """A crash between reading and handing on (the supervisor restarts ``run``): with ``start_at: end``
    the restart must not jump to the end and skip the lines read but never accepted."""
    path = tmp_path / "app.log"
    path.write_bytes(b"before start\n")
    got: list[bytes] = []

    async def ingest(messages):
        got.extend(m.value for m in messages)

    stop = asyncio.Event()
    follower = FileFollower(path, FILE_SPEC, start_at="end", poll_interval_s=0.02)
    task = asyncio.create_task(drive(follower, IngestFn(ingest), stop))
    await eventually(lambda: follower._handle is not None)
    with path.open("ab") as f:
        f.write(b"one\n")
    await eventually(lambda: got == [b"one"])
    real = follower._messages
    crashed: list[int] = []

    def crash_once(lines):
        if not crashed:
            crashed.append(1)
            raise RuntimeError("injected crash after a read")
        return real(lines)

    follower._messages = crash_once
    with path.open("ab") as f:
        f.write(b"two\nthree\n")
    with pytest.raises(RuntimeError, match="injected"):
        await task
    task = asyncio.create_task(drive(follower, IngestFn(ingest), stop))  # what the supervisor does
    await eventually(lambda: got == [b"one", b"two", b"three"])
    stop.set()
    await task


async def test_stdin_reads_a_pipe_to_its_end_and_retries_refused_batches():
    read_fd, write_fd = os.pipe()
    got: list[bytes] = []
    refusals = [1]

    async def ingest(messages):
        if refusals:
            refusals.pop()
            raise RuntimeError("router busy")
        got.extend(m.value for m in messages)

    with os.fdopen(read_fd, "rb", buffering=0) as reader:
        source = StdinSource(FILE_SPEC, stream=reader)
        task = asyncio.create_task(drive(source, IngestFn(ingest), asyncio.Event()))
        with os.fdopen(write_fd, "wb") as writer:
            writer.write(b'{"a": 1}\n\n{"a": 2}\n{"a": 3}')
        await asyncio.wait_for(task, 10)
    assert source.lines == 3 and got == [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}']


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


# --- the Kafka loop against an in-memory consumer ---------------------------------------

Record = namedtuple("Record", "value key offset timestamp headers")


class _FakeCoordinator:
    """The part of aiokafka's group coordinator that reads committed offsets with their metadata."""

    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer

    async def fetch_committed_offsets(self, partitions):
        out = {}
        for tp in partitions:
            offset = await self.consumer.committed(tp)
            if offset is not None:
                out[tp] = OffsetAndMetadata(offset, self.consumer.metadata.get(tp, ""))
        return out


class FakeConsumer:
    """Just enough of AIOKafkaConsumer: group assignment, getmany, pause/resume, commit (with metadata)."""

    def __init__(self, records: dict[TopicPartition, list[Record]]) -> None:
        self.records = records
        self.positions = dict.fromkeys(records, 0)
        self._paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.metadata: dict[TopicPartition, str] = {}
        """Metadata of each partition's last commit (a new group member takes it over with the commits)."""
        self._coordinator = _FakeCoordinator(self)
        self.listener = None
        self.assigned: set[TopicPartition] = set()
        self.ever_paused = False

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, topics=None, pattern=None, listener=None) -> None:
        self.listener = listener

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None):
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

    def assignment(self):
        return set(self.assigned)

    def pause(self, *tps) -> None:
        self._paused.update(tps)
        self.ever_paused = True

    def resume(self, *tps) -> None:
        self._paused.difference_update(tps)

    def paused(self):
        return set(self._paused)

    def highwater(self, tp):
        return len(self.records[tp])

    async def commit(self, offsets) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})
        self.metadata.update({tp: meta.metadata for tp, meta in offsets.items()})

    async def committed(self, tp):
        return next((c[tp] for c in reversed(self.commits) if tp in c), None)


class ScriptedRouter:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.accepted: list = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.offered = 0
        """Submissions begun, accepted or not (a batch was detected and is on its way)."""

    async def submit(self, alerts) -> None:
        self.offered += 1
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("not now")
        self.accepted.extend(alerts)


class FakeDeadLetters:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, rejected) -> None:
        if rejected and self.failures:
            self.failures -= 1
            raise RuntimeError("dlq down")
        self.sent.extend(rejected)


def kafka_runner(tmp_path: Path, router, records, dead_letters=None, **kafka):
    from service.sources.kafka import KafkaSource

    (tmp_path / "r.yml").write_text(RULE)
    detector = Detector(compile_detection([tmp_path / "r.yml"], [], skip_invalid=False).detection)
    settings = KafkaSettings(bootstrap_servers=["unused:1"], topics={"ci": {"logsource": {"category": "ci_job_log"}}},
                             **{"commit_interval_s": 0.02, **kafka})
    consumer = FakeConsumer(records)
    runner = KafkaSource(settings, EventSettings(), detector, router, dead_letters=dead_letters or FakeDeadLetters(),
                         consumer_factory=lambda **_: consumer)
    return runner, consumer


def ci_records(count: int, bad: frozenset[int] = frozenset()) -> list[Record]:
    out = []
    for i in range(count):
        value = b"not json" if i in bad else (b'{"message": "curl x | sh", "n": %d}' % i)
        out.append(Record(value, None, i, 1767323045000 + i, [("h", b"v")]))
    return out


async def test_a_crashed_commit_loop_is_surfaced_and_the_consumer_reconnects(tmp_path, caplog):
    """The committer task (commits and idle snapshots) dying must not leave offsets frozen silently."""
    tp = TopicPartition("ci", 0)
    router = ScriptedRouter()
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
    await eventually(lambda: consumer.commits and consumer.commits[-1][tp] == 10)
    stop.set()
    await task
    assert crashes and any("consume loop failed" in r.getMessage() for r in caplog.records)


async def test_kafka_loop_commits_only_what_the_router_accepted(tmp_path):
    tp = TopicPartition("ci", 0)
    router = ScriptedRouter(failures=3)
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(10)})
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: len(router.accepted) == 10 and consumer.commits and consumer.commits[-1][tp] == 10)
    stop.set()
    await task
    assert len({a.id for a in router.accepted}) == 10
    assert [a.origin.offset for a in router.accepted] == list(range(10))
    # every commit was at most what had been accepted at that point, and commits never go back
    committed = [c[tp] for c in consumer.commits]
    assert committed == sorted(committed) and committed[-1] == 10


async def test_kafka_backpressure_pauses_partitions_and_loses_nothing(tmp_path):
    tp = TopicPartition("ci", 0)
    router = ScriptedRouter()
    router.gate.clear()
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(30)}, max_in_flight_batches=2)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: consumer.ever_paused)
    assert consumer.positions[tp] < 30 and consumer.commits == []
    router.gate.set()
    await eventually(lambda: len(router.accepted) == 30)
    await eventually(lambda: consumer.commits and consumer.commits[-1][tp] == 30)
    await eventually(lambda: consumer.paused() == set())  # resumed once the router caught up
    stop.set()
    await task


async def test_kafka_rejects_reach_dead_letters_before_their_offsets_are_committed(tmp_path):
    tp = TopicPartition("ci", 0)
    dead = FakeDeadLetters(failures=2)
    router = ScriptedRouter()
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(6, bad=frozenset({1, 4}))}, dead_letters=dead)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: consumer.commits and consumer.commits[-1][tp] == 6)
    stop.set()
    await task
    assert [(r.message.origin.offset, r.reason, r.message.value) for r in dead.sent] == [
        (1, "decode", b"not json"), (4, "decode", b"not json")]
    assert dead.sent[0].message.headers == (("h", b"v"),)
    assert len(router.accepted) == 4


async def test_kafka_revocation_drains_and_commits_the_revoked_partitions(tmp_path):
    tp = TopicPartition("ci", 0)
    router = ScriptedRouter()
    router.gate.clear()  # the batch is detected but its alerts are not accepted yet
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(3)}, commit_interval_s=60)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await eventually(lambda: router.offered == 1 and runner.ready)
    revoking = asyncio.create_task(consumer.listener.on_partitions_revoked([tp]))
    await asyncio.sleep(0)
    assert not revoking.done() and consumer.commits == []  # the revocation waits for the batch
    router.gate.set()
    await revoking
    assert consumer.commits[-1] == {tp: 3} and len(router.accepted) == 3
    assert not runner.ready
    stop.set()
    await task


# --- the detector stage: correlation and anomaly wiring ------------------------------------

CORRELATED = """
title: Failed Login
id: 6f1d1a4e-0000-4000-8000-000000000010
name: failed_login
author: tests
logsource: {category: ci_job_log}
detection:
    sel: {message|contains: 'login failed'}
    condition: sel
level: low
---
title: Repeated Failed Logins
id: 6f1d1a4e-0000-4000-8000-000000000011
author: tests
correlation:
    type: event_count
    rules: [failed_login]
    group-by: [user]
    timespan: 1m
    condition: {gte: 3}
level: high
"""
SILENCE = """
id: builds-silent
title: Builds stopped
type: silence
timeout: 5m
min_events: 2
allowed_lateness: 0s
logsource: {category: ci_job_log}
"""


def ci_item(message: str, ts: float, offset: int, user: str = "bob") -> Item:
    return Item({"message": message, "user": user, "ts": ts}, ("ci", 0, offset), LogSource(category="ci_job_log"),
                ("ts",), 0.0)


def test_correlation_alerts_replace_suppressed_base_matches_with_stable_ids(tmp_path):
    (tmp_path / "c.yml").write_text(CORRELATED)
    outcome = compile_detection([tmp_path / "c.yml"], [], skip_invalid=False)
    assert outcome.accepted and outcome.detection.correlation is not None
    items = [ci_item("login failed", 1000.0 + i, i) for i in range(3)]

    first = Detector(outcome.detection).process(items, now=5000.0)
    assert [a.rule.title for a in first] == ["Repeated Failed Logins"]  # base rule: generate false
    replay = Detector(compile_detection([tmp_path / "c.yml"], [], skip_invalid=False).detection)
    assert [a.id for a in replay.process(items, now=6000.0)] == [first[0].id]  # redelivery: same id


def test_correlation_state_survives_a_swap(tmp_path):
    (tmp_path / "c.yml").write_text(CORRELATED)
    detector = Detector(compile_detection([tmp_path / "c.yml"], [], skip_invalid=False).detection)
    assert detector.process([ci_item("login failed", 1000.0, 0), ci_item("login failed", 1001.0, 1)]) == []
    detector.swap(compile_detection([tmp_path / "c.yml"], [], skip_invalid=False, generation=2).detection)
    assert [a.rule.title for a in detector.process([ci_item("login failed", 1002.0, 2)])] == [
        "Repeated Failed Logins"]


def test_heartbeat_extrapolates_event_time_for_silence_checks(tmp_path):
    (tmp_path / "r.yml").write_text(RULE)
    (tmp_path / "checks.yml").write_text(SILENCE)
    outcome = compile_detection([tmp_path / "r.yml"], [], skip_invalid=False, anomaly_checks=[tmp_path / "checks.yml"])
    assert outcome.accepted and outcome.detection.anomaly is not None, outcome.errors
    detector = Detector(outcome.detection)
    # events carry old timestamps (a replay): the wall clock must not make them look silent
    detector.process([ci_item("build ok", 1000.0, 0), ci_item("build ok", 1010.0, 1)], now=9_000_000.0)
    assert detector.heartbeat(9_000_000.0 + 60) == []
    silent = detector.heartbeat(9_000_000.0 + 400)
    assert [a.rule.id for a in silent] == ["builds-silent"]
    assert silent[0].timestamp == pytest.approx(1410.0)


def test_anomaly_configured_without_a_readable_file_is_an_error(tmp_path):
    (tmp_path / "r.yml").write_text(RULE)
    outcome = compile_detection([tmp_path / "r.yml"], [], skip_invalid=False, anomaly_checks=[tmp_path / "none.yml"])
    assert not outcome.accepted and "cannot read" in outcome.errors[0].reason


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

    (tmp_path / "c.yml").write_text(CORRELATED)
    tp = TopicPartition("ci", 0)
    store = StateStore(tmp_path / "state")
    settings = KafkaSettings(bootstrap_servers=["unused:1"], topics={"ci": {"logsource": {"category": "ci_job_log"}}},
                             commit_interval_s=60)

    def login(offset: int) -> Record:
        value = orjson.dumps({"message": "login failed", "user": "bob", "ts": 1000.0 + offset})
        return Record(value, None, offset, 0, [])

    def instance(records):
        detector = Detector(compile_detection([tmp_path / "c.yml"], [], skip_invalid=False).detection)
        router = ScriptedRouter()
        consumer = FakeConsumer({tp: records})
        runner = KafkaSource(settings, EventSettings(timestamp_fields=["ts"]), detector, router,
                             dead_letters=FakeDeadLetters(), consumer_factory=lambda **_: consumer, state_store=store)
        return runner, consumer, router

    first, consumer, router = instance([login(0), login(1)])
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await eventually(lambda: first.tracker.acked.get(tp) == 2)  # detected and acknowledged, not committed
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
    await eventually(lambda: len(router2.accepted) == 1)
    stop.set()
    await task
    assert router2.accepted[0].rule.title == "Repeated Failed Logins"


def test_anomaly_check_errors_reject_the_set_naming_the_check(tmp_path):
    (tmp_path / "r.yml").write_text(RULE)
    (tmp_path / "checks.yml").write_text("id: bad-check\ntype: silence\ntimeout: 5m\nbogus: 1\n")
    outcome = compile_detection([tmp_path / "r.yml"], [], skip_invalid=False, anomaly_checks=[tmp_path / "checks.yml"])
    assert not outcome.accepted
    assert outcome.errors[0].rule_id == "bad-check" and "bogus" in outcome.errors[0].reason


async def test_push_input_rejects_go_to_the_dead_letter_file(tmp_path):
    import base64

    from service.pipeline import Pipeline
    from service.sources.deadletter import FileDeadLetters

    (tmp_path / "r.yml").write_text(RULE)
    detector = Detector(compile_detection([tmp_path / "r.yml"], [], skip_invalid=False).detection)
    accepted: list = []

    class Router:
        async def submit(self, alerts):
            accepted.extend(alerts)

    dead = FileDeadLetters(tmp_path / "data" / "dead-letters.ndjson")
    spec = InputSpec.from_settings("stdin", StdinSettings(), ["ts"])
    result = await Pipeline(detector, Router(), dead).ingest("stdin", [
        RawMessage(b'{"message": "curl x | sh"}', Origin("stdin", key="a"), 1.0),
        RawMessage(b"\xff broken", Origin("stdin", key="b"), 1.0)], spec)
    assert result.accepted == 1 and len(accepted) == 1  # no log source configured: every rule applies
    [line] = (tmp_path / "data" / "dead-letters.ndjson").read_bytes().splitlines()
    record = orjson.loads(line)
    assert record["origin"] == "stdin:b" and record["reason"] == "utf8"
    assert base64.b64decode(record["value_b64"]) == b"\xff broken"


def test_one_decode_path_gives_kafka_and_push_inputs_the_same_reject_reasons() -> None:
    """Kafka records and pushed lines go through ``decode_batch``: same reasons and errors, and a
    Kafka reject keeps its metadata (origin, timestamp, headers with bytes values, key)."""
    spec = InputSpec.from_settings("t", StdinSettings(), ["@timestamp"])
    values = [b"not json", None, b'{"a": "' + b"x" * 64 + b'"}', b'{"a": 1}']
    pushed = decode_batch([RawMessage(v, Origin("stdin", key=str(i)), 1.0) for i, v in enumerate(values)], spec,
                          max_bytes=32)
    records = [Record(v, b"k", i, 2500, [("h", None)]) for i, v in enumerate(values)]
    kafka = decode_batch(records, spec, max_bytes=32, partition=("t", 0))
    assert [(r.reason, r.error) for r in pushed.rejected] == [(r.reason, r.error) for r in kafka.rejected]
    assert [r.reason for r in kafka.rejected] == ["decode", "empty", "oversize"]
    tombstone = kafka.rejected[1].message
    assert (tombstone.value, tombstone.origin.token(), tombstone.fallback_time, tombstone.headers, tombstone.key) == (
        b"", Origin("kafka", "t", 0, 1).token(), 2.5, (("h", b""),), b"k")
    assert [item.event for item in kafka.items] == [{"a": 1}] and kafka.items[0].scope_key() == ("t", 0)
