"""Anomaly checks in ``state.scope: keyed``: stage 1 sends one compact record per watched event and
check, keyed by check and key; stage 2 runs each key's model in one internal partition, released by
the watermarks, and raises the ids one engine over the merged stream raises (``pipesentry eval``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.alert import alert_id
from detectors.model import LogSource, Origin
from service.detection import Detector, compile_detection
from service.keyed import records
from service.keyed.stage2 import KeyedDetector
from service.sources.base import Item
from tests.support.internal_topic import PARTITIONS, Topic, mark, stage1

AUTH = LogSource(product="linux", service="auth")
T0 = 1_764_113_000.0
INPUTS = 4
CHECKS = """
checks:
  - id: failed-burst
    type: threshold
    logsource: {product: linux, service: auth}
    by: [host]
    selection: {outcome: failure}
    count: 5
    window: 5m
  - id: failure-share
    type: ratio
    logsource: {product: linux, service: auth}
    by: [host]
    selection: {outcome: failure}
    max_ratio: 0.5
    min_count: 4
    window: 2m
  - id: host-silent
    type: silence
    logsource: {product: linux, service: auth}
    by: [_source, host]
    timeout: 3m
    min_events: 3
  - id: users-per-host
    type: cardinality
    logsource: {product: linux, service: auth}
    by: [host]
    field: user
    max_distinct: 3
    window: 10m
  - id: new-user-per-host
    type: new_value
    logsource: {product: linux, service: auth}
    by: [host]
    fields: [user]
    learning: 60s
  - id: pid-level
    type: metric
    logsource: {product: linux, service: auth}
    by: [host]
    field: pid
    min_samples: 5
    learn_for: 60s
    learning: 0s
    seasonality: []
    threshold: 3
  - id: host-volume
    type: volume
    logsource: {product: linux, service: auth}
    by: [host]
    interval: 1m
    min_count: 1
    seasonality: []
    learning: 0s
    threshold: 1.5
  - id: elsewhere
    type: volume
    logsource: {product: gitlab}
    by: [host]
"""
RULE = """
title: Any auth event
id: 5b0e1c1e-0000-4000-8000-000000000001
logsource: {product: linux, service: auth}
detection:
  selection: {outcome: [failure, success]}
  condition: selection
level: informational
"""


def detection(tmp_path: Path) -> Any:
    (tmp_path / "checks.yml").write_text(CHECKS)
    (tmp_path / "rule.yml").write_text(RULE)
    outcome = compile_detection([tmp_path / "rule.yml"], [], skip_invalid=False,
                                anomaly_checks=[tmp_path / "checks.yml"])
    assert outcome.detection is not None and outcome.detection.anomaly is not None, outcome.errors
    return outcome.detection


def event(i: int) -> dict[str, Any]:
    host = "web-1" if i % 3 else "Web-2"
    return {"ts": T0 + 7 * i, "host": host, "user": f"u{i % 5}" if i < 40 else f"late{i % 3}",
            "outcome": "failure" if i % 4 else "success", "message": "x" * 300, "pid": i * i if i > 45 else i % 4}


def items(count: int, first: int = 0) -> list[Item]:
    """Time-ordered events round robin over the input partitions."""
    return [Item(event(i), Origin("kafka", "auth", i % INPUTS, i // INPUTS), AUTH, ("ts",), 0.0)
            for i in range(first, first + count)]


def reference(tmp_path: Path, stream: list[Item], until: float) -> list[str]:
    """One engine over the merged stream (what ``eval`` runs), its time then moved to ``until``."""
    det = detection(tmp_path)
    alone = Detector(det, scope="instance")
    ids = [a.id for a in alone.process(stream, now=T0) if a.rule.kind == "anomaly"]
    return sorted(ids + [alert_id(m.rule.id, m.details["alert_key"]) for m in det.anomaly.advance(until)])


def anomaly_ids(alerts: list[Any]) -> list[str]:
    return sorted(a.id for a in alerts if a.rule.kind == "anomaly")


def test_a_record_holds_only_what_the_check_reads(tmp_path):
    det = detection(tmp_path)
    checks = det.anomaly.checks
    where = records.Origin("auth", 2, 9)
    e = event(1)
    burst = records.build_anomaly(checks["failed-burst"], e, T0, where, AUTH)
    assert burst is not None and burst.fields == {"host": "web-1"} and burst.selected is None
    assert burst.key() == b'failed-burst|["web-1"]'
    assert records.build_anomaly(checks["failed-burst"], event(0), T0, where, AUTH) is None  # selection: no
    share = records.build_anomaly(checks["failure-share"], event(0), T0, where, AUTH)
    assert share is not None and share.selected is False  # a ratio counts every event, with its verdict
    silent = records.build_anomaly(checks["host-silent"], e, T0, where, AUTH)
    assert silent is not None and silent.source == ("linux", None, "auth")
    assert silent.key() == b'host-silent|["linux/-/auth","web-1"]'
    users = records.build_anomaly(checks["users-per-host"], e, T0, where, AUTH)
    assert users is not None and users.fields == {"host": "web-1", "user": "u1"}
    assert records.build_anomaly(checks["users-per-host"], {"user": "x"}, T0, where, AUTH) is None  # no key
    for record in (burst, share, silent, users):
        data = record.encode()
        assert len(data) < 130, data  # the 300-character message and the pid stay behind
        back = records.decode(data)
        assert back == records.AnomalyRecord(record.check, record.ts, record.origin, record.fields, record.source,
                                             record.selected)


@pytest.mark.parametrize("doc, reason", [
    ({"s": ["linux", None]}, "log source"),
    ({"s": ["linux", 3, None]}, "log source"),
    ({"m": 2}, "selection flag"),
    ({"f": []}, "fields"),
    ({"id": ""}, "check id"),
    ({"t": "soon"}, "event time"),
])
def test_a_malformed_anomaly_record_is_refused_with_its_reason(doc, reason):
    good = {"v": records.VERSION, "k": "a", "id": "c", "t": 1.0, "o": ["auth", 0, 1], "f": {}}
    with pytest.raises(records.RecordError, match=reason):
        records.from_mapping({**good, **doc})


def test_stage1_runs_no_anomaly_model_and_sends_a_record_per_watched_event_and_check(tmp_path):
    det = detection(tmp_path)
    first = Detector(det, scope="keyed")
    topic = Topic()
    stage1(first, items(12), topic, now=T0)
    assert not first.snapshots_partitions
    assert all(engines == (None, None) for engines in first._scoped.values())
    kinds = [orjson.loads(v) for _, v in topic.records()]
    anomaly = [doc for doc in kinds if doc["k"] == "a"]
    failures = sum(1 for i in range(12) if i % 4)
    assert len(anomaly) == failures + 12 * 6  # threshold: matching only; the six others: every event
    assert not any(doc["id"] == "elsewhere" for doc in anomaly)  # another log source's check
    # one key's records share one internal partition
    partitions: dict[tuple[str, str], set[int]] = {}
    for p, value in topic.records():
        doc = orjson.loads(value)
        if doc["k"] == "a":
            partitions.setdefault((doc["id"], doc["f"]["host"]), set()).add(p)
    assert all(len(ps) == 1 for ps in partitions.values())


def test_keyed_anomaly_alerts_have_the_ids_of_one_engine_over_the_merged_stream(tmp_path):
    stream = items(60)
    last = stream[-1].event["ts"]
    end = last + 3600
    expected = reference(tmp_path, items(60), end)
    assert {i.split("|")[0] for i in _keys(tmp_path, items(60), end)} == {
        "failed-burst", "failure-share", "host-silent", "users-per-host", "new-user-per-host", "pid-level",
        "host-volume"}, "every check type fires in the reference"

    # partition scope: each input partition's engine sees a quarter of each key
    det = detection(tmp_path)
    baseline = Detector(det, scope="partition")
    assert anomaly_ids(baseline.process(stream, now=T0)) != expected

    # keyed: two stage-1 instances (input partitions 0-1 and 2-3), batches of ten, stage 2 reading
    # the internal topic after each batch
    a, b = Detector(det, scope="keyed"), Detector(det, scope="keyed")
    second = KeyedDetector(det)
    topic = Topic()
    start = [0] * PARTITIONS
    fired: list[Any] = []
    for batch in range(0, 60, 10):
        part = stream[batch:batch + 10]
        stage1(a, [i for i in part if i.origin.partition < 2], topic, "a", now=T0)
        stage1(b, [i for i in part if i.origin.partition >= 2], topic, "b", now=T0)
        fired += second.process(topic.items(start), now=T0)
    mark(topic, "a", {0: end, 1: end})
    mark(topic, "b", {2: end, 3: end})
    fired += second.process(topic.items(start), now=T0)
    assert anomaly_ids(fired) == expected
    # an alert raised by a record carries that record's origin and fields (not the whole event)
    burst = next(x for x in fired if x.rule.id == "failed-burst")
    assert burst.origin.input == "kafka" and burst.origin.topic == "auth"
    assert orjson.loads(burst.original) == {"host": burst.details["key"]["host"]}
    silent = next(x for x in fired if x.rule.id == "host-silent")
    assert silent.origin.input == "timer"  # the watermark's release let the silence show


def test_no_check_writes_into_the_fields_of_the_record_it_reads(tmp_path):
    """Stage 2 hands a record's fields to its check in place (a copy only for a ``ratio`` verdict):
    after every check type has run, and fired, over them, each record's fields are what was sent."""
    stream = items(60)
    end = stream[-1].event["ts"] + 3600
    det = detection(tmp_path)
    first, second = Detector(det, scope="keyed"), KeyedDetector(det)
    topic = Topic()
    start = [0] * PARTITIONS
    read: list[Item] = []
    fired: list[Any] = []
    for batch in range(0, 60, 10):
        stage1(first, stream[batch:batch + 10], topic, now=T0)
        batch_items = topic.items(start)
        read += batch_items
        fired += second.process(batch_items, now=T0)
    mark(topic, "a", dict.fromkeys(range(INPUTS), end))
    last = topic.items(start)
    read += last
    fired += second.process(last, now=T0)
    assert {a.rule.id for a in fired if a.rule.kind == "anomaly"} >= {
        "failed-burst", "failure-share", "host-silent", "users-per-host", "new-user-per-host", "pid-level",
        "host-volume"}
    seen = [doc for item in read for doc in records.packed(item.event) if doc["k"] == "a"]
    sent = [orjson.loads(line) for _, line in topic.records() if orjson.loads(line)["k"] == "a"]
    assert len(seen) == len(sent) > 0
    assert {(doc["id"], *doc["o"]): doc["f"] for doc in seen} == {(doc["id"], *doc["o"]): doc["f"] for doc in sent}


def _keys(tmp_path: Path, stream: list[Item], until: float) -> list[str]:
    det = detection(tmp_path)
    alone = Detector(det, scope="instance")
    matches = [a.details["alert_key"] for a in alone.process(stream, now=T0) if a.rule.kind == "anomaly"]
    return matches + [m.details["alert_key"] for m in det.anomaly.advance(until)]


def test_waiting_anomaly_records_and_models_travel_with_the_partition_snapshot(tmp_path):
    stream = items(60)
    end = stream[-1].event["ts"] + 3600
    expected = reference(tmp_path, items(60), end)
    det = detection(tmp_path)
    second = KeyedDetector(det)
    topic = Topic()
    start = [0] * PARTITIONS
    fired = []
    stage1(Detector(det, scope="keyed"), stream[:30], topic, "a", now=T0)
    fired += second.process(topic.items(start), now=T0)
    stage1(Detector(det, scope="keyed"), [i for i in stream[30:] if i.origin.partition != 3], topic, "a", now=T0)
    fired += second.process(topic.items(start), now=T0)  # input partition 3 lags: records wait
    saved = {k: orjson.loads(orjson.dumps(second.export_scope(k))) for k in second.scopes()}
    assert any(doc["anomaly"]["keyed"]["pending"] for doc in saved.values())  # kept beside the anomaly model
    restored = KeyedDetector(det)  # the partitions' next owner
    for key, doc in saved.items():
        restored.import_scope(key, doc)
    stage1(Detector(det, scope="keyed"), [i for i in stream if i.origin.partition == 3], topic, "b", now=T0)
    mark(topic, "a", {p: end for p in range(INPUTS)})
    fired += restored.process(topic.items(start), now=T0)
    assert anomaly_ids(fired) == expected
