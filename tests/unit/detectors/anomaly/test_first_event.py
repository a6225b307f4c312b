"""Window alerts are about the first event of their window (issue 17): its real time and origin.

A window closes on a later, unrelated event (or the timer); the alert names the window's first
event instead (``Match.about``), kept as a time and an origin only, through snapshots too."""

from __future__ import annotations

import json
from typing import Any

import pytest

from detectors.alert import build_alert
from detectors.anomaly import AnomalyEngine, parse_checks
from detectors.model import EventRef, Match, Origin, OriginRef

T0 = 1767571200.0  # 2026-01-05 00:00 UTC

CHECKS = """
- {id: met, type: metric, by: [host], field: ms, aggregate: mean, window: 1m, learning: 0s, learn_for: 0s,
   min_samples: 10, seasonality: [], allowed_lateness: 0s}
- {id: vol, type: volume, by: [host], interval: 1m, seasonality: [], learning: 0s, min_count: 5,
   allowed_lateness: 0s}
- {id: card, type: cardinality, by: [host], field: user, window: 1m, baseline: true, learning: 0s,
   min_distinct: 5, allowed_lateness: 0s}
- {id: rat, type: ratio, by: [host], selection: {outcome: failure}, max_ratio: 0.5, min_count: 4, window: 2m,
   slices: 2, learning: 0s, allowed_lateness: 0s}
"""
BURST = 40
"""The minute in which host ``a`` sends a burst: slow, many, from many users, failing."""


def engine() -> AnomalyEngine:
    specs, errors = parse_checks(CHECKS)
    assert errors == []
    return AnomalyEngine(specs)


def stream() -> list[tuple[dict[str, Any], float, OriginRef]]:
    """Host ``a``, three quiet events a minute (seconds 5, 25, 45), then a burst in minute ``BURST``
    (one event every 2 s from second 3), then quiet again; origins alternate file lines and Kafka tuples."""
    out: list[tuple[dict[str, Any], float, OriginRef]] = []
    for minute in range(BURST + 5):
        seconds = range(3, 60, 2) if minute == BURST else (5, 25, 45)
        for second in seconds:
            burst = minute == BURST
            event = {"host": "a", "ms": (500 if burst else 100) + second % 3,
                     "user": f"u{second}" if burst else f"u{second % 2}",
                     "outcome": "failure" if burst else "success"}
            n = len(out)
            origin: OriginRef = ("logs", 0, n) if n % 2 else Origin("file", key=f"events.ndjson:{n}")
            out.append((event, T0 + minute * 60 + second, origin))
    return out


def run(eng: AnomalyEngine, events: list[tuple[dict[str, Any], float, OriginRef]]) -> list[Match]:
    found: list[Match] = []
    for event, ts, origin in events:
        found += eng.process(event, ts, None, origin)
    return found


def alerts_by_check(found: list[Match]) -> dict[str, Match]:
    out: dict[str, Match] = {}
    for match in found:
        details = match.details or {}
        if details.get("state") is None:
            assert match.rule.id not in out, f"{match.rule.id}: one alert for the burst"
            out[match.rule.id] = match
    return out


def test_each_window_alert_is_about_its_windows_first_event() -> None:
    events = stream()
    found = alerts_by_check(run(engine(), events))
    assert set(found) == {"met", "vol", "card", "rat"}
    first_of_burst = next(i for i, (_, ts, _) in enumerate(events) if ts >= T0 + BURST * 60)
    _, ts, origin = events[first_of_burst]
    expected = EventRef(ts, origin if isinstance(origin, Origin) else Origin("kafka", *origin))
    for check in ("met", "vol", "card"):
        assert found[check].about == expected, check
        assert (found[check].details or {})["event_time"] == "2026-01-05T00:40:03.000Z"
    # ratio: the window of two slices; its first failing event is the burst's first
    assert found["rat"].about == expected


def test_an_out_of_order_event_becomes_the_windows_first() -> None:
    events = stream()
    at = next(i for i, (_, ts, _) in enumerate(events) if ts >= T0 + BURST * 60) + 3
    event, _, _ = events[at]
    late = (event, T0 + BURST * 60 + 1, Origin("file", key="events.ndjson:late"))  # within the window, out of order
    found = alerts_by_check(run(engine(), [*events[:at], late, *events[at:]]))
    assert found["met"].about == EventRef(T0 + BURST * 60 + 1, Origin("file", key="events.ndjson:late"))


def test_without_origins_the_alert_is_about_no_other_event() -> None:
    found = alerts_by_check(run(engine(), [(e, ts, None) for e, ts, _ in stream()]))  # type: ignore[misc]
    assert all(match.about is None for match in found.values())
    assert (found["met"].details or {})["event_time"] == "2026-01-05T00:40:03.000Z"


@pytest.mark.parametrize("cut", [BURST * 3 + 10, BURST * 3 + 29])  # inside the burst, at its last event
def test_snapshots_keep_the_first_events_origin(cut: int) -> None:
    events = stream()
    straight = run(engine(), events)
    first = engine()
    before = run(first, events[:cut])
    snap = json.loads(json.dumps(first.snapshot()))  # through JSON, as the state store does
    assert snap["version"] == 3
    second = engine()
    assert second.restore(snap) == []
    assert before + run(second, events[cut:]) == straight


def as_version_2(snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` as a build before version 3 wrote it: open windows without first events."""
    old: dict[str, Any] = json.loads(json.dumps(snap))
    old["version"] = 2
    checks = old["body"]["checks"]
    for _, per_key in checks["met"]["state"]["open"]:
        for entry in per_key:
            entry[1] = entry[1][:6]
    for _, counts in checks["vol"]["state"]["open"]:
        for entry in counts:
            entry[1] = entry[1][0]
    for _, per_key in checks["card"]["state"]["open"]:
        for entry in per_key:
            del entry[3:]
    for _, per_key in checks["rat"]["state"]["open"]:
        for entry in per_key:
            entry[1] = entry[1][:2]
    for key in checks["rat"]["state"]["keys"]:
        key[2] = [s[:3] for s in key[2]]
    return old


def test_a_version_2_snapshot_with_open_windows_still_loads() -> None:
    events = stream()
    cut = BURST * 3 + 10
    first = engine()
    run(first, events[:cut])
    second = engine()
    assert second.restore(as_version_2(first.snapshot())) == []
    found = alerts_by_check(run(second, events[cut:]))
    assert set(found) == {"met", "vol", "card", "rat"}
    # the burst's window was open in the snapshot: its start stands for its first event, origin unknown
    assert found["met"].about is None and (found["met"].details or {})["event_time"] == "2026-01-05T00:40:03.000Z"
    assert found["vol"].about is None and (found["vol"].details or {})["event_time"] == "2026-01-05T00:40:00.000Z"
    assert found["card"].about is None and found["rat"].about is None


def test_a_malformed_stored_origin_drops_only_that_checks_state() -> None:
    first = engine()
    run(first, stream()[: BURST * 3 + 10])
    snap = json.loads(json.dumps(first.snapshot()))
    for _, per_key in snap["body"]["checks"]["met"]["state"]["open"]:
        for entry in per_key:
            entry[1][6] = ["file", None, "zero", None, None]
    second = engine()
    assert second.restore(snap) == ["met"]
    assert len(second.checks["vol"].keys) == 1


def test_the_alert_takes_the_first_events_time_and_origin() -> None:
    events = stream()
    found = alerts_by_check(run(engine(), events))
    closing = {"host": "a", "ms": 101}
    alert = build_alert(found["met"], closing, Origin("file", key="events.ndjson:999"), event_time=T0 + 9999,
                        now=T0 + 10_000)
    about = found["met"].about
    assert about is not None
    assert alert.origin == about.origin and alert.timestamp == about.time
    assert alert.event == {} and "101" not in alert.original  # the closing event is not shown as evidence
    unrelated = build_alert(found["met"], closing, Origin("file", key="other"), event_time=T0, now=T0 + 10_000)
    assert unrelated.id == alert.id  # the id is the window's, whatever event closes it
