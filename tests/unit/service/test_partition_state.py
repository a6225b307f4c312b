"""Committed offsets never run ahead of the partition state that covers them (in-memory group, real
``KafkaSource`` and ``StateStore``): a crash is an image of the state directory and of the group's
commits taken at a chosen point, from which the next owner starts."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from service import metrics
from service.config import EventSettings, KafkaSettings
from service.detection import Detector, compile_detection
from service.partition_state import WRITER_PREFIX
from service.sources.kafka import KafkaSource
from service.state_store import StateStore
from tests.support.group import Group, GroupConsumer, committed, run_and_crash, run_until
from tests.support.kafka import FakeConsumer, FakeDeadLetters, Record
from tests.support.routers import FakeRouter
from tests.support.rules import REPEATED_LOGINS

TP = TopicPartition("ci", 0)
SCOPE = "kafka:ci:0"


def login(offset: int, user: str = "bob") -> Record:
    return Record(orjson.dumps({"message": "login failed", "user": user, "ts": 1000.0 + offset}), None, offset, 0, [])


def member(data: Path, group: Group, snapshot_interval_s: float = 3600,
           **kafka: Any) -> tuple[KafkaSource, FakeRouter, GroupConsumer]:
    data.parent.mkdir(parents=True, exist_ok=True)
    rules = data.parent / "c.yml"
    rules.write_text(REPEATED_LOGINS)
    detector = Detector(compile_detection([rules], [], skip_invalid=False).detection)
    router = FakeRouter()
    consumer = GroupConsumer(group)
    settings = KafkaSettings(bootstrap_servers=["unused:1"], topics={"ci": {"logsource": {"category": "ci_job_log"}}},
                             **{"commit_interval_s": 0.02, **kafka})
    runner = KafkaSource(settings, EventSettings(timestamp_fields=["ts"]), detector, router,
                         dead_letters=FakeDeadLetters(), consumer_factory=lambda **_: consumer,
                         state_store=StateStore(data), snapshot_interval_s=snapshot_interval_s)
    return runner, router, consumer


def takeovers(outcome: str) -> float:
    return metrics.PARTITION_STATE_TAKEOVERS.labels(outcome)._value.get()


async def test_a_crash_before_the_first_periodic_snapshot_keeps_the_state_of_committed_records(tmp_path):
    """Two of bob's logins committed, no periodic snapshot yet (due in an hour), SIGKILL: the third still fires."""
    group = Group([login(0), login(1)])
    first, router, _ = member(tmp_path / "a", group)
    image = await run_and_crash(first, tmp_path / "a", group, tmp_path / "crash", lambda: committed(group) == 2)
    assert router.accepted == []
    image.records.append(login(2))
    second, router2, consumer2 = member(tmp_path / "crash", image)
    await run_until(second, lambda: image.committed().offset == 3 and second.tracker.committed.get(TP) == 3)
    # restored the empty base at offset 0 and re-read 0 and 1: bob's three logins are counted once each
    assert consumer2.seeks == [0]
    assert [a.rule.title for a in router2.accepted] == ["Repeated Failed Logins"]
    assert [c["ref"] for c in router2.accepted[0].details["contributors"]] == [
        "kafka:ci:0:0", "kafka:ci:0:1", "kafka:ci:0:2"]


async def test_no_offset_is_committed_before_the_partition_base_is_saved(tmp_path, monkeypatch):
    group = Group([login(0), login(1)])
    runner, _, _ = member(tmp_path / "a", group)
    store = runner.state_store
    failures = []
    saved: list[tuple[int, int]] = []
    real = store.save

    def failing(scope: str, name: str, document: Any) -> Path:
        if len(failures) < 3:
            failures.append(name)
            raise OSError(28, "No space left on device")
        saved.append((document["offset"], len(group.commits)))
        return real(scope, name, document)

    monkeypatch.setattr(store, "save", failing)
    held = metrics.PARTITION_STATE_COMMITS_HELD._value.get()
    await run_until(runner, lambda: len(failures) == 3 and group.committed() is not None)
    # the commit waited for the base (offset 0) to be written; the disk came back, then it went ahead
    assert metrics.PARTITION_STATE_COMMITS_HELD._value.get() > held
    assert saved[0] == (0, 0) and group.commits[0].offset == 2


async def test_a_stale_snapshot_of_this_instance_does_not_rewind_what_another_member_committed(tmp_path):
    """Per-instance data dirs: A hands the partition to B, B commits further, A gets it back."""
    group = Group([login(0), login(1), login(2, "amy")])
    a, _, _ = member(tmp_path / "a" / "state", group)
    await run_until(a, lambda: a.tracker.committed.get(TP) == 3)  # clean stop: A's snapshot at 3
    assert StateStore(tmp_path / "a" / "state").load(SCOPE, "partition")["offset"] == 3

    group.records.extend([login(3), login(4), login(5), login(6, "amy"), login(7, "amy")])
    b, router_b, consumer_b = member(tmp_path / "b" / "state", group)
    await run_until(b, lambda: b.tracker.committed.get(TP) == 8)
    assert consumer_b.seeks == []
    assert [a.details["group"] for a in router_b.accepted] == [{"user": "bob"}]  # 3, 4, 5
    writer_a, writer_b = group.commits[0].metadata, group.commits[-1].metadata
    assert writer_a.startswith(WRITER_PREFIX) and writer_b.startswith(WRITER_PREFIX) and writer_a != writer_b

    group.records.extend([login(8, "amy")])
    stale = takeovers("stale")
    back, router_back, consumer_back = member(tmp_path / "a" / "state", group)
    await run_until(back, lambda: back.tracker.committed.get(TP) == 9)
    # A's snapshot (offset 3) is not A's to use any more: no rewind, B's alert is not raised again
    assert consumer_back.seeks == [] and router_back.accepted == []
    assert takeovers("stale") == stale + 1


async def test_a_member_that_gets_its_partition_back_untouched_resumes_from_its_snapshot(tmp_path):
    """A's commits are the last ones: its snapshot is still the partition's, even after a crash."""
    group = Group([login(0), login(1)])
    a, _, _ = member(tmp_path / "a", group)
    image = await run_and_crash(a, tmp_path / "a", group, tmp_path / "crash", lambda: committed(group) == 2)
    image.records.append(login(2))
    again, router, _ = member(tmp_path / "crash", image)
    # crashed again after the restarted member's own commits (a new writer: the restored base was re-saved)
    image2 = await run_and_crash(again, tmp_path / "crash", image, tmp_path / "crash2",
                                 lambda: committed(image) == 3)
    image2.records.append(login(3))
    third, router3, consumer3 = member(tmp_path / "crash2", image2)
    await run_until(third, lambda: committed(image2) == 4)
    assert [a.rule.title for a in router.accepted] == ["Repeated Failed Logins"]
    assert consumer3.seeks == [0]
    assert [a.id for a in router3.accepted] == [router.accepted[0].id]  # raised again from the replay, same id


class _HeldCoordinator:
    """Answers committed-offset requests only once ``release`` is set."""

    def __init__(self, inner: Any, release: asyncio.Event) -> None:
        self.inner = inner
        self.release = release

    async def fetch_committed_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, Any]:
        await self.release.wait()
        return await self.inner.fetch_committed_offsets(partitions)


class RacingConsumer(GroupConsumer):
    """Like aiokafka: the assignment listener runs beside ``getmany``, which already hands out records
    from the committed offset while the listener still reads the committed offset (held until the
    third fetch)."""

    def __init__(self, group: Group) -> None:
        super().__init__(group)
        self.release = asyncio.Event()
        self.listening: asyncio.Task[None] | None = None
        self.fetches = 0
        self._coordinator = _HeldCoordinator(self._coordinator, self.release)

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None):
        if not self.assigned:
            self.assigned = set(self.records)
            self.listening = asyncio.create_task(self.listener.on_partitions_assigned(sorted(self.assigned)))
            await asyncio.sleep(0)
        self.fetches += 1
        if self.fetches == 3:
            self.release.set()
        return await FakeConsumer.getmany(self, timeout_ms, max_records)


async def test_records_handed_out_while_the_takeover_runs_wait_for_the_restored_state(tmp_path):
    """aiokafka returns records of a new assignment before its listener finished: detected then, they
    would meet empty engines (a window of their own, an alert id no uninterrupted run raises)."""
    records = [login(i) for i in range(5)]  # bob fires at 2 (window from 0); 3 and 4 start the next one
    reference, reference_router, _ = member(tmp_path / "ref", Group(list(records)))
    await run_until(reference, lambda: reference.tracker.committed.get(TP) == 5)
    expected = {alert.id for alert in reference_router.accepted}
    assert len(expected) == 1

    group = Group(records[:2])
    a, router_a, _ = member(tmp_path / "a", group)
    image = await run_and_crash(a, tmp_path / "a", group, tmp_path / "crash", lambda: committed(group) == 2)
    image.records.extend(records[2:])
    b, router_b, _ = member(tmp_path / "crash", image)
    racing = RacingConsumer(image)
    b._consumer_factory = lambda **_: racing
    await run_until(b, lambda: committed(image) == 5)
    assert racing.release.is_set()
    assert {alert.id for alert in router_a.accepted + router_b.accepted} == expected


@pytest.mark.parametrize("seed", range(10))
async def test_crashes_at_random_commits_raise_exactly_the_alert_ids_of_an_uninterrupted_run(tmp_path, seed):
    """Random logins arrive in chunks; after each chunk the member is crashed once the group committed a
    random offset (snapshots every batch or never); the next member starts from that image. The union of
    alert ids equals an uninterrupted run's: none lost, no state counted twice."""
    rng = random.Random(seed)
    records = [login(i, rng.choice(["bob", "amy", "eve"])) for i in range(rng.randint(15, 30))]
    reference, reference_router, _ = member(tmp_path / "ref" / "state", Group(list(records)))
    await run_until(reference, lambda: reference.tracker.committed.get(TP) == len(records))
    expected = {alert.id for alert in reference_router.accepted}

    interval = rng.choice([1e-6, 3600])
    cuts = sorted(rng.sample(range(2, len(records) - 1), 3))
    group = Group([])
    data = tmp_path / "run0" / "state"
    seen: set[str] = set()
    for index, cut in enumerate([*cuts, len(records)]):
        group.records.extend(records[len(group.records):cut])
        runner, router, _ = member(data, group, interval)
        if cut == len(records):
            await run_until(runner, lambda c=cut, g=group: committed(g) == c)
        else:
            start = committed(group) or 0
            target = rng.randint(start + 1, cut)
            into = tmp_path / f"run{index + 1}" / "state"
            group = await run_and_crash(runner, data, group, into, lambda t=target, g=group: (committed(g) or 0) >= t)
            data = into
        seen |= {alert.id for alert in router.accepted}
    assert seen == expected


async def test_every_detector_of_a_partition_is_saved_in_one_file_at_one_offset(tmp_path):
    """Correlation and anomaly state in one atomic write: a crash between two files can no longer
    restore one detector at an offset and start the other empty (or at another offset)."""
    from service.partition_state import PartitionState, Snapshot, load_documents
    from service.sources.kafka import OffsetTracker

    store = StateStore(tmp_path / "state")
    runner, _, _ = member(tmp_path / "state", Group([]))
    state = PartitionState(runner.detector, store, OffsetTracker(), 60)
    snapshot = Snapshot(7, {"correlation": {"c": 1}, "anomaly": {"a": 2}}, (1000.0, 5.0))
    assert await state.save(TP, snapshot)
    assert sorted(p.name for p in (tmp_path / "state" / "kafka%3Aci%3A0").iterdir()) == ["partition.json"]
    docs = await load_documents(store, SCOPE)
    assert {name: (doc["offset"], doc["snapshot"]) for name, doc in docs.items()} == {
        "correlation": (7, {"c": 1}), "anomaly": (7, {"a": 2})}
    assert docs["anomaly"]["writer"] == state.writer(TP) and docs["anomaly"]["clock"] == [1000.0, 5.0]
