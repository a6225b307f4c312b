"""Both stages of ``state.scope: keyed`` without a broker: stage 1's records, carried as the internal
topic would carry them (hashed by key onto partitions), fed to stage 2 with watermarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import orjson

from detectors.model import LogSource, Origin
from service.detection import Detector, compile_detection
from service.keyed.stage2 import KeyedDetector
from service.sources.base import Item
from tests.conftest import PROJECT_RULES
from tests.support import internal_topic
from tests.support.fixtures import rule_text
from tests.support.internal_topic import INTERNAL, PARTITIONS, Topic, mark

RULES = [PROJECT_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
         PROJECT_RULES / "correlations" / "ssh_brute_force.yml"]
AUTH = LogSource(product="linux", service="auth")
T0 = 1_764_113_000.0


def failed(i: int, host: str = "bastion-1") -> dict[str, Any]:
    return {"ts": T0 + 10 * i, "hostname": host, "app_name": "sshd",
            "message": f"Failed password for invalid user admin{i} from 203.0.113.77 port {51000 + i} ssh2"}


def detection() -> Any:
    outcome = compile_detection(RULES, [], skip_invalid=False, correlation_lateness_s=0.0)
    assert outcome.detection is not None and outcome.detection.correlation is not None, outcome.errors
    return outcome.detection


def input_items(count: int, partitions: int = 4) -> list[Item]:
    """Events round robin over input partitions: no partition alone reaches the threshold."""
    return [Item(failed(i), Origin("kafka", "auth", i % partitions, i // partitions), AUTH, ("ts",), 0.0)
            for i in range(count)]


def stage1(detector: Detector, items: list[Item], topic: Topic, producer: str = "a") -> list[Any]:
    return internal_topic.stage1(detector, items, topic, producer, now=T0)


def test_partition_scope_never_fires_but_keyed_scope_fires_once_with_the_reference_id():
    det = detection()
    items = input_items(16)
    baseline = Detector(det, scope="partition")
    assert [a for a in baseline.process(items, now=T0) if a.rule.kind == "correlation"] == []
    reference = Detector(det, scope="instance")
    expected = [a.id for a in reference.process(input_items(16), now=T0) if a.rule.kind == "correlation"]
    assert len(expected) == 1

    first = Detector(det, scope="keyed")
    second = KeyedDetector(det)
    topic = Topic()
    sigma = stage1(first, items[:6], topic) + stage1(first, items[6:], topic)
    assert sigma == []  # the base rule's own alerts are suppressed (generate: false); no correlation here
    assert len(topic.records()) == 16 + 2 * PARTITIONS  # a record per failed login, two watermarks
    assert sum(len(p) for p in topic.partitions) == 2 + 2 * PARTITIONS  # one key: a message per batch
    start = [0] * PARTITIONS
    fired = second.process(topic.items(start), now=T0)
    assert [a.id for a in fired if a.rule.kind == "correlation"] == expected
    # as in partition scope, the alert comes from the firing event: the tenth failed login's record
    (alert,) = [a for a in fired if a.rule.kind == "correlation"]
    tenth = items[9].origin
    assert alert.origin == Origin("kafka", "auth", tenth.partition, tenth.offset)
    assert orjson.loads(alert.original) == {"hostname": "bastion-1"}


def test_records_wait_for_every_producers_watermark_and_replays_are_dropped():
    det = detection()
    items = input_items(12)
    a, b = Detector(det, scope="keyed"), Detector(det, scope="keyed")
    second = KeyedDetector(det)
    topic = Topic()
    start = [0] * PARTITIONS
    stage1(a, [i for i in items if i.origin.partition in (0, 1)], topic, "a")
    assert second.process(topic.items(start), now=T0) == []  # input partitions 2 and 3 have not spoken
    stage1(b, [i for i in items if i.origin.partition in (2, 3)][:3], topic, "b")
    assert second.process(topic.items(start), now=T0) == []  # b's marks are behind the tenth event
    stage1(b, [i for i in items if i.origin.partition in (2, 3)][3:], topic, "b")
    assert second.process(topic.items(start), now=T0) == []  # a's marks (T0+80) hold the tenth event back
    mark(topic, "a", {0: T0 + 200, 1: T0 + 200})  # a's input went quiet: its marks move on with the wall clock
    fired = second.process(topic.items(start), now=T0)
    assert len([x for x in fired if x.rule.kind == "correlation"]) == 1
    # stage 1 of partition 0 crashed before its commit: its next owner produces the records again
    replay = Detector(det, scope="keyed")
    stage1(replay, [i for i in items if i.origin.partition == 0], topic, "a")
    assert second.process(topic.items(start), now=T0) == []


def test_an_idle_input_partition_holds_windows_until_its_owner_moves_its_mark_on():
    det = detection()
    items = [i for i in input_items(16) if i.origin.partition != 3]  # input partition 3 carries nothing
    second = KeyedDetector(det)
    topic = Topic()
    start = [0] * PARTITIONS
    stage1(Detector(det, scope="keyed"), items, topic, "a")
    assert second.process(topic.items(start), now=T0) == []
    assert second.watermark(("state", 0)) is None
    mark(topic, "b", {3: T0 - 1000})  # its owner has read it to the end (an early wall clock, say)
    assert second.process(topic.items(start), now=T0) == []
    assert second.heartbeat(T0 + 1000) == []  # the wall clock alone moves nothing in stage 2
    mark(topic, "b", {3: T0 + 300})
    fired = second.process(topic.items(start), now=T0)
    assert len([x for x in fired if x.rule.kind == "correlation"]) == 1


def test_an_unreadable_record_is_skipped():
    det = detection()
    second = KeyedDetector(det)
    item = Item({"v": 9, "k": "c"}, Origin("kafka", INTERNAL, 0, 0), None, (), 0.0)
    assert second.process([item], now=T0) == []


def test_marks_and_the_replay_filter_travel_with_the_partition_snapshot():
    det = detection()
    items = input_items(16)
    second = KeyedDetector(det)
    topic = Topic()
    start = [0] * PARTITIONS
    stage1(Detector(det, scope="keyed"), items[:8], topic, "a")
    second.process(topic.items(start), now=T0)
    saved = {k: second.export_scope(k) for k in second.scopes()}
    assert all("keyed" in doc["correlation"] for doc in saved.values())

    restored = KeyedDetector(det)  # the partitions' next owner (or this one after a restart)
    for key, doc in saved.items():
        restored.import_scope(key, orjson.loads(orjson.dumps(doc)))
        assert restored.watermark(key) == second.watermark(key)
    stage1(Detector(det, scope="keyed"), items[:8], topic, "a")  # stage 1 replays what it had not committed
    assert restored.process(topic.items(start), now=T0) == []
    stage1(Detector(det, scope="keyed"), items[8:], topic, "a")
    fired = restored.process(topic.items(start), now=T0)
    assert [a.id for a in fired if a.rule.kind == "correlation"] == [
        a.id for a in Detector(det, scope="instance").process(input_items(16), now=T0) if a.rule.kind == "correlation"]
    assert any(restored.export_scope(key)["correlation"]["keyed"]["applied"] for key in saved)


def test_a_damaged_keyed_state_is_dropped_with_the_engine_state_kept():
    det = detection()
    second = KeyedDetector(det)
    topic = Topic()
    stage1(Detector(det, scope="keyed"), input_items(4), topic, "a")
    second.process(topic.items([0] * PARTITIONS), now=T0)
    key = next(k for k in second.scopes() if second._scoped[k][0].active_keys())
    doc = second.export_scope(key)
    doc["correlation"]["keyed"] = {"marks": [["auth", -1, 1.0]], "applied": "x"}
    restored = KeyedDetector(det)
    restored.import_scope(key, doc)
    assert restored.watermark(key) is None
    assert restored._scoped[key][0].active_keys() == 1


def test_events_of_one_message_are_not_taken_for_replays_of_each_other():
    """A message that decodes into several events (a report) gives them one offset and their index
    as origin key: each one applies once, a replay of the message applies none."""
    det = detection()
    reports = [Item(failed(i), Origin("kafka", "auth", 0, i // 4, str(i % 4)), AUTH, ("ts",), 0.0) for i in range(12)]
    expected = [a.id for a in Detector(det, scope="instance").process(list(reports), now=T0)
                if a.rule.kind == "correlation"]
    assert len(expected) == 1
    second = KeyedDetector(det)
    topic = Topic()
    start = [0] * PARTITIONS
    stage1(Detector(det, scope="keyed"), reports, topic, "a")
    mark(topic, "a", {p: T0 + 1000 for p in range(4)})
    fired = second.process(topic.items(start), now=T0)
    assert [a.id for a in fired if a.rule.kind == "correlation"] == expected
    assert fired[0].details["contributor_count"] >= 10
    stage1(Detector(det, scope="keyed"), reports, topic, "a")  # replayed after a crash before its commit
    assert second.process(topic.items(start), now=T0) == []
    key = next(k for k in second.scopes() if second._applied.get(k))
    assert second.export_scope(key)["correlation"]["keyed"]["applied"] == [
        [det.correlation.specs[0].info.id, "auth", 0, 2, 3]]


def chained_detection(tmp_path: Path) -> Any:
    (tmp_path / "chained.yml").write_text(rule_text("chained_sources_per_user"))
    outcome = compile_detection([tmp_path / "chained.yml"], [], skip_invalid=False, correlation_lateness_s=0.0)
    assert outcome.detection is not None and outcome.detection.correlation is not None, outcome.errors
    return outcome.detection


def attack(count: int = 18) -> list[Item]:
    """Failed logins of two users from three sources each (three per source), round robin over four
    input partitions: the source bursts (keyed by address) feed a per-user correlation (keyed by user)."""
    out = []
    for i in range(count):
        user = "alice" if i % 2 else "bob"
        source = f"198.51.100.{i % 6}"
        event = {"ts": T0 + 15 * i, "user": user, "src_ip": source, "app_name": "sshd",
                 "message": f"Failed password for {user} from {source} port {50000 + i} ssh2"}
        out.append(Item(event, Origin("kafka", "auth", i % 4, i // 4), AUTH, ("ts",), 0.0))
    return out


def test_a_chained_correlation_whose_key_differs_is_re_keyed_and_fires_with_the_reference_ids(tmp_path):
    det = chained_detection(tmp_path)
    expected = sorted(a.id for a in Detector(det, scope="instance").process(attack(), now=T0)
                      if a.rule.kind == "correlation")
    titles = {a.rule.title for a in Detector(chained_detection(tmp_path), scope="instance").process(attack(), now=T0)}
    assert "One User Attacked From Several Sources" in titles, titles

    second = KeyedDetector(det, rekey=True)
    topic = Topic()
    start = [0] * PARTITIONS
    internal_topic.stage1(Detector(det, scope="keyed"), attack(), topic, "a", now=T0)
    mark(topic, "a", {p: T0 + 3600 for p in range(4)})
    fired = internal_topic.stage2(second, topic, start, now=T0)
    assert sorted(a.id for a in fired if a.rule.kind == "correlation") == expected
    # the parent's inputs went through the internal topic, keyed by the parent's group (the user)
    chained = [(p, v) for p, v in topic.records() if b'"x"' in v]
    docs = [orjson.loads(v) for _, v in chained]
    assert docs and all(doc["o"][0] == INTERNAL for doc in docs)
    assert {doc["f"]["user"] for doc in docs} == {"alice", "bob"}
    assert len({p for p, v in chained if b'"alice"' in v}) == 1  # one user's inputs: one partition
    # stage 2 replayed after a crash before its commit sends them again: dropped as replays
    for p, values in enumerate(list(topic.partitions)):
        for value in [v for v in values if b'"x"' in v]:
            topic.send(value, partition=p)
    assert internal_topic.stage2(second, topic, start, now=T0) == []
    parent = next(a for a in fired if a.rule.title == "One User Attacked From Several Sources")
    assert parent.origin.topic == INTERNAL  # the firing input: the re-keyed child alert
    assert len(parent.details["contributors"]) == 2


def test_without_a_sender_chained_records_are_dropped_and_counted(tmp_path):
    det = chained_detection(tmp_path)
    second = KeyedDetector(det)
    topic = Topic()
    internal_topic.stage1(Detector(det, scope="keyed"), attack(), topic, "a", now=T0)
    mark(topic, "a", {p: T0 + 3600 for p in range(4)})
    second.process(topic.items([0] * PARTITIONS), now=T0)
    assert second.take_records()[0] == []


class ChainedRound(NamedTuple):
    second: KeyedDetector
    topic: Topic
    start: list[int]
    fired: list[Any]
    """The alerts of stage 2's first read."""
    progress: dict[tuple[str, int], float]
    """Every internal partition's chain mark after it."""


def chained_first_round(det: Any) -> ChainedRound:
    """The attack through stage 1 (its owner's marks past it), read once by stage 2, whose chained
    records (the parents' inputs) are then in the internal topic, unread."""
    second = KeyedDetector(det, rekey=True)
    topic = Topic()
    start = [0] * PARTITIONS
    internal_topic.stage1(Detector(det, scope="keyed"), attack(), topic, "a", now=T0)
    mark(topic, "a", {p: T0 + 3600 for p in range(4)})
    fired = second.process(topic.items(start), now=T0)
    records, progress = second.take_records()
    assert records and set(progress) == {(INTERNAL, p) for p in range(PARTITIONS)}
    for record in records:
        topic.send(record.encode(), key=record.key())
    return ChainedRound(second, topic, start, fired, progress)


def test_the_chained_lane_waits_for_every_internal_partitions_chain_mark(tmp_path):
    second, topic, start, fired, progress = chained_first_round(chained_detection(tmp_path))
    # every internal partition but the last has released: the parents' inputs wait
    marks = {p: ts for (_, p), ts in progress.items() if p != PARTITIONS - 1}
    mark(topic, "s2", marks, PARTITIONS, INTERNAL)
    fired += second.process(topic.items(start), now=T0)
    assert not [a for a in fired if a.rule.title == "One User Attacked From Several Sources"]
    assert second.chain_watermark((INTERNAL, 0)) is None
    mark(topic, "s2", {p: ts for (_, p), ts in progress.items()}, PARTITIONS, INTERNAL)
    fired += second.process(topic.items(start), now=T0)
    assert len([a for a in fired if a.rule.title == "One User Attacked From Several Sources"]) == 2
    # the chained lane's engine and waiting records travel with the partition snapshot
    saved = second.export_scope((INTERNAL, 0))["correlation"]["keyed"]
    assert saved["chain"] and saved["chain_count"] == PARTITIONS and "parents" in saved


def test_the_chained_lane_survives_a_takeover_between_its_inputs_and_its_release(tmp_path):
    det = chained_detection(tmp_path)
    expected = sorted(a.id for a in Detector(chained_detection(tmp_path), scope="instance").process(attack(), now=T0)
                      if a.rule.kind == "correlation")
    second, topic, start, fired, progress = chained_first_round(det)
    fired += second.process(topic.items(start), now=T0)  # the parents' inputs arrive: they wait
    saved = {k: orjson.loads(orjson.dumps(second.export_scope(k))) for k in second.scopes()}
    assert any(doc["correlation"]["keyed"]["pending"] for doc in saved.values())
    restored = KeyedDetector(det, rekey=True)
    for key, doc in saved.items():
        restored.import_scope(key, doc)
    mark(topic, "s2", {p: ts for (_, p), ts in progress.items()}, PARTITIONS, INTERNAL)
    fired += internal_topic.stage2(restored, topic, start, now=T0)
    assert sorted(a.id for a in fired if a.rule.kind == "correlation") == expected


def test_after_a_takeover_the_new_owners_idle_report_overrides_the_dead_owners_mark():
    det = detection()
    items = input_items(16)
    second = KeyedDetector(det)
    topic = Topic()
    start = [0] * PARTITIONS
    stage1(Detector(det, scope="keyed"), [i for i in items if i.origin.partition != 3], topic, "a")
    mark(topic, "b", {3: T0 + 5})  # b owned input partition 3, reported it once, then died
    assert [a for a in second.process(topic.items(start), now=T0) if a.rule.kind == "correlation"] == []
    assert second.watermark(("state", 0)) == T0 + 5
    # its next owner read partition 3 to the end (nothing uncommitted there): idle, whatever b's mark
    mark(topic, "c", {}, idle=[("auth", 3)])
    fired = second.process(topic.items(start), now=T0)
    assert len([x for x in fired if x.rule.kind == "correlation"]) == 1
    newest = {p: max(i.event["ts"] for i in items if i.origin.partition == p) for p in (0, 1, 2)}
    assert second.watermark(("state", 0)) == min(newest.values())  # the other partitions' marks alone
    mark(topic, "c", {3: T0 + 1})  # a progress row again: the partition counts again, its mark never goes back
    second.process(topic.items(start), now=T0)
    assert second.watermark(("state", 0)) == T0 + 5


def test_a_dead_owners_idle_report_lapses_so_a_record_it_never_acknowledged_is_not_late():
    """c reported input partition 3 idle, a record arrived there and c died before acknowledging it:
    its idle row lapses once another producer sent IDLE_ROUNDS watermarks without c repeating it, and
    the partition holds the watermark until its next owner sends the record (found on a real broker,
    tests/integration/test_kafka_keyed_faults.py)."""
    from service.keyed.stage2 import IDLE_ROUNDS

    second = KeyedDetector(detection())
    topic = Topic()
    start = [0] * PARTITIONS
    key = ("state", 0)
    marks = {p: T0 + 5 for p in range(3)}
    mark(topic, "a", marks)
    mark(topic, "c", {}, idle=[("auth", 3)])
    second.process(topic.items(start), now=T0)
    assert second.watermark(key) == T0 + 5
    for i in range(2 * IDLE_ROUNDS):  # c alive: its repeated idle row keeps the partition out
        mark(topic, "a", {p: T0 + 6 + i for p in range(3)})
        mark(topic, "c", {}, idle=[("auth", 3)])
    second.process(topic.items(start), now=T0)
    assert second.watermark(key) == T0 + 5 + 2 * IDLE_ROUNDS
    for i in range(IDLE_ROUNDS):  # c dead: a's marks go on, c's row lapses
        mark(topic, "a", {p: T0 + 100 + i for p in range(3)})
    second.process(topic.items(start), now=T0)
    assert second.watermark(key) is None  # partition 3 never had a mark: nothing released past it
    mark(topic, "d", {3: T0 + 20})  # its next owner read the record c never acknowledged
    second.process(topic.items(start), now=T0)
    assert second.watermark(key) == T0 + 20


def test_when_every_input_partition_is_idle_the_furthest_mark_releases():
    det = detection()
    second = KeyedDetector(det)
    topic = Topic()
    start = [0] * PARTITIONS
    mark(topic, "a", {0: T0, 1: T0 + 50, 2: T0 + 20, 3: T0 + 10})
    second.process(topic.items(start), now=T0)
    assert second.watermark(("state", 0)) == T0
    mark(topic, "a", {}, idle=[("auth", p) for p in range(4)])
    second.process(topic.items(start), now=T0)
    assert second.watermark(("state", 0)) == T0 + 50


def alert_rows(alerts: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((a.id, a.origin, a.original, orjson.dumps(a.details, option=orjson.OPT_SORT_KEYS, default=str))
                  for a in alerts)


def test_stage2_reading_whole_messages_matches_reading_a_record_per_item(tmp_path):
    """Differential: stage 2 reads the internal topic a message at a time (its records in place);
    the alerts, the chained records it sends (origins included) and its saved state are those of
    reading it a record per item, and the alert ids those of one engine over the merged stream."""
    for det, events in ((detection(), input_items(40)), (chained_detection(tmp_path), attack(30))):
        expected = sorted(a.id for a in Detector(det, scope="instance").process(list(events), now=T0)
                          if a.rule.kind == "correlation")
        assert expected
        topic = Topic()
        first = Detector(det, scope="keyed")
        for begin in range(0, len(events), 7):  # several batches: several messages per partition
            internal_topic.stage1(first, events[begin:begin + 7], topic, "a", now=T0)
        mark(topic, "a", {p: T0 + 7200 for p in range(4)})
        assert any(b"\n" in value for values in topic.partitions for value in values)
        runs = []
        for read in (Topic.items, Topic.line_items):
            second = KeyedDetector(det, rekey=True)
            twin = topic.copy()
            fired = internal_topic.stage2(second, twin, [0] * PARTITIONS, now=T0, read=read)
            saved = {key: orjson.loads(orjson.dumps(second.export_scope(key))) for key in sorted(second.scopes())}
            runs.append((alert_rows(fired), twin.partitions, saved))
            assert sorted(a.id for a in fired if a.rule.kind == "correlation") == expected
        assert runs[0] == runs[1]


def test_an_unreadable_record_in_a_message_is_skipped_and_the_others_apply():
    det = detection()
    topic = Topic()
    stage1(Detector(det, scope="keyed"), input_items(16), topic)
    expected = [a.id for a in KeyedDetector(det).process(topic.copy().items([0] * PARTITIONS), now=T0)]
    assert expected
    for values in topic.partitions:  # a record of another version at the head of every message
        values[:] = [b'{"v":9,"k":"c"}\n' + value for value in values]
    assert [a.id for a in KeyedDetector(det).process(topic.items([0] * PARTITIONS), now=T0)] == expected


def test_a_snapshot_lists_idle_partitions_and_restores_them_without_their_reporter():
    det = detection()
    second = KeyedDetector(det)
    topic = Topic()
    key = ("state", 0)
    mark(topic, "a", {p: T0 + 5 for p in range(3)})
    mark(topic, "c", {}, idle=[("auth", 3)])
    second.process(topic.items([0] * PARTITIONS), now=T0)
    doc = orjson.loads(orjson.dumps(second.export_scope(key)))
    assert doc["correlation"]["keyed"]["idle"] == [["auth", 3]]
    restored = KeyedDetector(det)
    restored.import_scope(key, doc)
    assert restored.watermark(key) == second.watermark(key) == T0 + 5
    assert restored.export_scope(key)["correlation"]["keyed"]["idle"] == [["auth", 3]]
    topic = Topic()
    mark(topic, "a", {3: T0 + 1})  # a progress row: the partition counts again
    restored.process(topic.items([0] * PARTITIONS), now=T0)
    assert restored.watermark(key) == T0 + 1
