"""Engine behaviour shared by all checks: time, bad input, bounded keys, routing, snapshots, purity."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from detectors.anomaly import AnomalyEngine, parse_checks
from detectors.anomaly.keys import MAX_KEY_CHARS
from detectors.model import LogSource, Match
from detectors.state import StateError
from tests.conftest import ROOT

T0 = 1767571200.0

ALL_TYPES = """
- {id: vol, type: volume, by: [host], interval: 1m, seasonality: [], learning: 5m, allowed_lateness: 0s}
- {id: sil, type: silence, by: [host], timeout: 5m, allowed_lateness: 0s}
- {id: met, type: metric, by: [host], field: ms, min_samples: 5, learning: 0s, learn_for: 0s}
- {id: new, type: new_value, by: [host], fields: [user], learning: 5m}
- {id: card, type: cardinality, by: [host], field: user, window: 1h, max_distinct: 5, baseline: true}
- {id: thr, type: threshold, by: [host], selection: {user: root}, count: 3, window: 1m}
- {id: rat, type: ratio, by: [host], selection: {user: root}, max_ratio: 0.5, min_count: 3, window: 1m}
"""


def engine(text: str = ALL_TYPES, **kwargs: Any) -> AnomalyEngine:
    specs, errors = parse_checks(text)
    assert errors == []
    eng = AnomalyEngine(specs, **kwargs)
    assert eng.errors == []
    return eng


def stream(minutes: int, start: int = 0) -> list[tuple[dict[str, Any], float]]:
    """A deterministic mixed stream: three hosts, users, latencies; a burst in minute 15."""
    out = []
    for minute in range(start, start + minutes):
        for i in range(12):
            host = f"h{i % 3}"
            user = "root" if (minute == 15 and host == "h0") else f"u{(minute + i) % 4}"
            ms = 100 + (i % 5) if not (minute == 16 and i == 0) else 5000
            out.append(({"host": host, "user": user, "ms": ms}, T0 + minute * 60 + i * 5))
    return out


def run(eng: AnomalyEngine, events: list[tuple[dict[str, Any], float]]) -> list[str]:
    found: list[Match] = []
    for event, ts in events:
        found += eng.process(event, ts, None)
        found += eng.advance(ts)
    return [json.dumps(m.details, sort_keys=True) for m in found]


def test_snapshot_restore_continues_exactly() -> None:
    events = stream(30)
    straight = engine()
    expected = run(straight, events)
    assert expected, "the stream must produce alerts for this test to mean anything"
    first = engine()
    before = run(first, events[:150])
    snap = json.loads(json.dumps(first.snapshot()))  # through JSON, as the state store does
    second = engine()
    assert second.restore(snap) == []
    after = run(second, events[150:])
    assert before + after == expected
    assert second.counters == straight.counters
    assert second.learning() == straight.learning()


def test_restore_drops_changed_checks_and_rejects_foreign_snapshots() -> None:
    eng = engine()
    run(eng, stream(3))
    snap = eng.snapshot()
    changed = engine(ALL_TYPES.replace("timeout: 5m", "timeout: 6m"))
    assert changed.restore(snap) == ["sil"]
    assert changed.counters["restore_dropped"] == 1
    with pytest.raises(StateError):
        changed.restore({"format": "pipesentry-state", "kind": "correlation", "version": 1, "body": {}})
    with pytest.raises(StateError):
        changed.restore({"hello": 1})
    broken = json.loads(json.dumps(snap))
    broken["body"]["checks"]["vol"]["state"]["keys"] = [["not", "a", "state"]]
    fresh = engine()
    assert fresh.restore(broken) == ["vol"]
    assert len(fresh.checks["vol"].keys) == 0
    assert len(fresh.checks["sil"].keys) == 3  # the other checks kept their state


def test_bad_timestamps_are_counted_skips() -> None:
    eng = engine("{id: s, type: silence, timeout: 1m, timestamp_field: '@timestamp', max_future: 1h}")
    now = T0 + 1000
    cases = [
        ({}, "no_timestamp"),
        ({"@timestamp": None}, "no_timestamp"),
        ({"@timestamp": "not a time"}, "bad_timestamp"),
        ({"@timestamp": {"nested": 1}}, "bad_timestamp"),
        ({"@timestamp": -1}, "bad_timestamp"),
        ({"@timestamp": now + 2 * 3600}, "future_timestamp"),
    ]
    for event, _ in cases:
        assert eng.process(event, now, None) == []
    counters = eng.counters
    assert counters["no_timestamp"] == 2 and counters["bad_timestamp"] == 3 and counters["future_timestamp"] == 1
    eng.process({"@timestamp": "2026-01-05T00:16:00Z"}, now, None)
    eng.process({"@timestamp": T0 + 1000 - 30}, now, None)  # 30 s out of order: within the default 60 s
    eng.process({"@timestamp": T0}, now, None)  # far behind the watermark
    assert eng.counters["late"] == 1
    assert eng.process("not a mapping", now, None) == []  # type: ignore[arg-type]
    assert eng.counters["not_object"] == 1


def test_unusable_passed_times_are_counted_not_fatal() -> None:
    eng = engine("{id: t, type: threshold, count: 1, window: 1m}")
    for ts in (float("nan"), float("inf"), -1.0, 1e15, 3e11):
        assert eng.process({}, ts, None) == []
    assert eng.counters["bad_timestamp"] == 5
    eng2 = engine("{id: t, type: threshold, count: 1, window: 1m, timestamp_field: t}")
    assert eng2.process({"t": 1e18}, T0, None) == []  # epoch ms of the year 33658
    assert eng2.process({"t": "0001-01-01T00:00:00Z"}, T0, None) == []
    assert eng2.counters["bad_timestamp"] == 2


def test_huge_key_values_are_bounded_and_stay_distinct() -> None:
    eng = engine("{id: n, type: new_value, by: [k], fields: [v], learning: 0s, key_learning: false}")
    big_a, big_b = "a" * 1_000_000, "a" * 999_999 + "b"
    (m1,) = eng.process({"k": big_a, "v": "x"}, T0, None)
    (m2,) = eng.process({"k": big_b, "v": "x"}, T0, None)
    key_a, key_b = m1.details["key"]["k"], m2.details["key"]["k"]  # type: ignore[index]
    assert key_a != key_b and len(key_a) <= MAX_KEY_CHARS and len(key_b) <= MAX_KEY_CHARS
    assert eng.counters["key_truncated"] == 2
    assert eng.process({"k": big_a, "v": "x"}, T0 + 1, None) == []


def test_keys_per_check_are_capped_with_lru_eviction() -> None:
    eng = engine("{id: s, type: silence, by: [k], timeout: 1h}", max_keys_per_check=100)
    for i in range(1000):
        eng.process({"k": str(i)}, T0 + i * 0.01, None)
    assert eng.key_counts() == {"s": 100}
    assert eng.counters["evictions"] == 900
    per_check = eng.counters_by_check()["s"]
    assert per_check["evictions"] == 900


def test_volume_open_interval_is_capped_too() -> None:
    eng = engine("{id: v, type: volume, by: [k], interval: 1h, seasonality: []}", max_keys_per_check=10)
    for i in range(50):
        eng.process({"k": str(i)}, T0, None)
    assert eng.counters["key_overflow"] == 40
    assert eng.key_counts() == {"v": 10}


def test_logsource_routing_and_source_key() -> None:
    eng = engine("""
- {id: gh, type: threshold, count: 2, window: 1m, logsource: {product: github}, by: [_source]}
- {id: any, type: threshold, count: 2, window: 1m}
""")
    gh = LogSource(product="github", service="audit")
    other = LogSource(product="gitlab")
    assert eng.process({}, T0, gh) == []
    found = eng.process({}, T0 + 1, other)
    assert [m.rule.id for m in found] == ["any"]
    (match,) = eng.process({}, T0 + 2, gh)
    assert match.rule.id == "gh" and match.rule.kind == "anomaly"
    assert match.fields == (("_source", "github/-/audit"),)


def test_match_carries_rule_metadata() -> None:
    eng = engine("""
{id: t, type: threshold, count: 1, window: 1m, title: Burst, level: high, author: me,
 description: why, tags: [attack.t1110]}
""")
    (match,) = eng.process({}, T0, None)
    rule = match.rule
    assert rule.source == "checks.yml" and rule.ruleset == "anomaly"
    assert (rule.id, rule.title, rule.level, rule.author, rule.description, rule.tags, rule.kind) == (
        "t", "Burst", "high", "me", "why", ("attack.t1110",), "anomaly")
    assert set(match.details or {}) >= {"check", "key", "observed", "expected", "score", "window_start",
                                         "window_end", "alert_key", "event_time"}


def test_learning_reports_every_check() -> None:
    eng = engine()
    assert eng.learning() == {"vol": True, "sil": False, "met": False, "new": True, "card": True,
                              "thr": False, "rat": False}


def test_duplicate_ids_across_files_are_engine_errors() -> None:
    a, _ = parse_checks("{id: x, type: silence, timeout: 1m}")
    b, _ = parse_checks("{id: x, type: silence, timeout: 2m}")
    eng = AnomalyEngine(a + b)
    assert [spec.timeout for spec in eng.specs] == [60.0]  # type: ignore[attr-defined]
    assert list(eng.checks) == ["x"] and [e.reason for e in eng.errors] == ["id: duplicate check id"]


FORBIDDEN = {"asyncio", "aiokafka", "fastapi", "httpx", "elasticsearch", "prometheus_client", "time", "os",
             "socket", "pathlib", "io", "threading"}


PURE_FILES = [*sorted((ROOT / "detectors" / "anomaly").glob("*.py")),
              ROOT / "detectors" / "sketches.py", ROOT / "detectors" / "state.py"]


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: p.name)
def test_anomaly_code_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Attribute) and node.attr in ("now", "utcnow", "today"):
            pytest.fail(f"{path.name} reads the wall clock ({node.attr})")
        elif isinstance(node, ast.Name) and node.id == "open":
            pytest.fail(f"{path.name} opens files")
    assert not names & FORBIDDEN


def test_ingestion_delay_does_not_make_events_late() -> None:
    """Events stamped 5 minutes before the runtime's clock; advance() runs on the runtime's clock."""
    eng = engine("""
{id: v, type: volume, interval: 1m, seasonality: [], learning: 0s, allowed_lateness: 10s,
 timestamp_field: t}
""")
    delay = 300.0
    for i in range(120):
        event_time = T0 + i
        eng.process({"t": event_time}, event_time + delay, None)
        eng.advance(event_time + delay)
    assert eng.counters.get("late", 0) == 0
    # no events for a while: event time runs on with the clock and closes the intervals
    found = eng.advance(T0 + 120 + delay + 600)
    assert eng.checks["v"].watermark == pytest.approx(T0 + 119 + 600 + 1 - 10)
    assert [m.details["direction"] for m in found if m.details] == ["drop"]
