"""Stage 2's commits stop at its oldest record waiting for the watermark (in-memory group, real
``KafkaSource`` and ``StateStore``): a next owner without this instance's snapshot reads the waiting
records again into its fresh engines, and one with the snapshot continues past the commit without
applying a record twice (docs/scaling.md, "Stage 2's commits")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

from service import metrics
from service.config import EventSettings, KafkaSettings
from service.detection import Detector
from service.keyed.records import DECODER
from service.keyed.stage2 import KeyedDetector
from service.sources.kafka import KafkaSource
from service.state_store import StateStore
from tests.support.group import Group, GroupConsumer, committed, run_and_crash, run_until
from tests.support.internal_topic import INTERNAL, Topic, mark
from tests.support.kafka import FakeDeadLetters, Record
from tests.support.routers import FakeRouter
from tests.unit.service.keyed.test_stages import T0, detection, input_items

TP = TopicPartition(INTERNAL, 0)
KEY = (INTERNAL, 0)
LATER = T0 + 1_000


def buffered_topic() -> Topic:
    """One internal partition: sixteen failed logins of one host over four input partitions, sent in
    four messages (offsets 0, 2, 4, 6), each followed by a watermark of input partitions 0 and 1 only
    (1, 3, 5, 7): partitions 2 and 3 have not spoken, so every record waits."""
    det = detection()
    stage1 = Detector(det, scope="keyed")
    topic = Topic(1)
    items = input_items(16)
    for start in range(0, 16, 4):
        with stage1.exclusive():
            stage1.process(items[start:start + 4], now=T0)
            records, _ = stage1.take_records()
        topic.send_records(records)
        mark(topic, "a", {0: LATER, 1: LATER})
    return topic


def release(topic: Topic, upto: float = LATER) -> None:
    """Input partitions 2 and 3 speak: the records up to ``upto`` are released."""
    mark(topic, "b", {2: upto, 3: upto})


def messages(topic: Topic) -> list[Record]:
    return [Record(value, None, offset, 0, []) for offset, value in enumerate(topic.partitions[0])]


def extend(group: Group, topic: Topic) -> None:
    group.records.extend(messages(topic)[len(group.records):])


def member(data: Path, group: Group, snapshot_interval_s: float = 3600) -> tuple[KafkaSource, FakeRouter, GroupConsumer]:
    """A stage-2 instance with its own state directory (``data``)."""
    router = FakeRouter()
    consumer = GroupConsumer(group)
    settings = KafkaSettings(bootstrap_servers=["unused:1"], topics={INTERNAL: {"decoder": {"type": DECODER}}},
                             commit_interval_s=0.02)
    source = KafkaSource(settings, EventSettings(screen=False), KeyedDetector(detection()), router,
                         dead_letters=FakeDeadLetters(), consumer_factory=lambda **_: consumer,
                         state_store=StateStore(data), snapshot_interval_s=snapshot_interval_s, consumer="keyed")
    return source, router, consumer


def correlations(router: FakeRouter) -> list[str]:
    return [alert.id for alert in router.accepted if alert.rule.kind == "correlation"]


def reference_ids() -> list[str]:
    found = Detector(detection(), scope="instance").process(input_items(16), now=T0)
    ids = [alert.id for alert in found if alert.rule.kind == "correlation"]
    assert len(ids) == 1
    return ids


def applied() -> float:
    return metrics.KEYED_STATE_RECORDS.labels("applied")._value.get()


def test_the_commit_floor_is_the_oldest_waiting_records_offset():
    topic = buffered_topic()
    second = KeyedDetector(detection())
    start = [0]
    second.process(topic.items(start), now=T0)
    assert second.commit_floor(KEY) == 0
    release(topic, T0 + 70)  # the first eight logins (offsets 0 and 2)
    assert second.process(topic.items(start), now=T0) == []
    assert second.commit_floor(KEY) == 4
    release(topic)
    assert [a.id for a in second.process(topic.items(start), now=T0) if a.rule.kind == "correlation"] == reference_ids()
    assert second.commit_floor(KEY) is None


async def test_the_committed_offset_never_passes_the_oldest_waiting_record(tmp_path):
    topic = buffered_topic()
    group = Group(messages(topic), TP)
    source, router, _ = member(tmp_path / "a", group)
    await run_until(source, lambda: source.tracker.acked.get(TP) == 8 and committed(group) == 0)
    assert {c.offset for c in group.commits} == {0} and router.accepted == []

    release(topic, T0 + 70)
    extend(group, topic)
    source, router, _ = member(tmp_path / "a", group)
    await run_until(source, lambda: source.tracker.acked.get(TP) == 9 and committed(group) == 4)
    assert max(c.offset for c in group.commits) == 4  # the records at 4 and 6 still wait

    release(topic)
    extend(group, topic)
    source, router, _ = member(tmp_path / "a", group)
    await run_until(source, lambda: committed(group) == 10)
    assert correlations(router) == reference_ids()


async def test_a_next_owner_without_the_snapshot_reads_the_waiting_records_again(tmp_path):
    """Per-instance state directories: A reads every record (all wait) and is killed; B, with a state
    directory of its own, starts empty at the committed offset and raises the uninterrupted run's ids."""
    topic = buffered_topic()
    uninterrupted = Topic(1)
    uninterrupted.partitions = [list(topic.partitions[0])]
    release(uninterrupted)
    ref_group = Group(messages(uninterrupted), TP)
    ref, ref_router, _ = member(tmp_path / "ref", ref_group)
    await run_until(ref, lambda: committed(ref_group) == 9)
    assert correlations(ref_router) == reference_ids()

    group = Group(messages(topic), TP)
    a, router_a, _ = member(tmp_path / "a", group, snapshot_interval_s=1e-6)
    image = await run_and_crash(a, tmp_path / "a", group, tmp_path / "crash",
                                lambda: a.tracker.acked.get(TP) == 8 and committed(group) == 0)
    release(topic)
    extend(image, topic)
    b, router_b, consumer_b = member(tmp_path / "b", image)
    await run_until(b, lambda: committed(image) == 9)
    assert consumer_b.seeks == []  # nothing restored: B read from the committed offset, 0
    assert router_a.accepted == [] and correlations(router_b) == correlations(ref_router)


async def test_a_restored_snapshot_past_the_commit_continues_there_and_applies_each_record_once(tmp_path):
    """A restart on the same state directory: the snapshot (offset 8) is past the commit (0, the
    oldest waiting record); it is restored, the partition continues at 8, and the sixteen records
    apply once each when released."""
    topic = buffered_topic()
    group = Group(messages(topic), TP)
    a, _, _ = member(tmp_path / "a", group, snapshot_interval_s=1e-6)
    image = await run_and_crash(a, tmp_path / "a", group, tmp_path / "crash",
                                lambda: a.tracker.acked.get(TP) == 8 and committed(group) == 0
                                and saved_offset(tmp_path / "a") == 8)
    assert committed(image) == 0 and saved_offset(tmp_path / "crash") == 8
    release(topic)
    extend(image, topic)
    before = applied()
    again, router, consumer = member(tmp_path / "crash", image)
    await run_until(again, lambda: committed(image) == 9)
    assert consumer.seeks == [8]
    assert correlations(router) == reference_ids()
    assert applied() - before == 16


def test_records_read_again_after_a_restore_past_the_commit_are_dropped_as_replays():
    """Reading from the commit instead (what a restore without the seek would do): the replay filter
    drops the sixteen records the snapshot already holds, and the release applies each once."""
    topic = buffered_topic()
    first = KeyedDetector(detection())
    first.process(topic.items([0]), now=T0)
    saved = orjson.loads(orjson.dumps(first.export_scope(KEY)))
    restored = KeyedDetector(detection())
    restored.import_scope(KEY, saved)
    assert restored.commit_floor(KEY) == 0  # the waiting records keep holding the commit
    duplicates = metrics.KEYED_STATE_RECORDS.labels("duplicate")._value.get()
    assert restored.process(topic.items([0]), now=T0) == []
    assert metrics.KEYED_STATE_RECORDS.labels("duplicate")._value.get() - duplicates == 16
    release(topic)
    before = applied()
    start = [len(topic.partitions[0]) - 1]
    assert [a.id for a in restored.process(topic.items(start), now=T0) if a.rule.kind == "correlation"] == reference_ids()
    assert applied() - before == 16


def saved_offset(data: Path) -> Any:
    document = StateStore(data).load(f"kafka:{INTERNAL}:0", "partition")
    return document.get("offset") if isinstance(document, dict) else None
