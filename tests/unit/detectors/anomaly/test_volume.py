"""``volume`` on hand-made streams: learning, spikes, drops, min_count, one alert per episode."""

from __future__ import annotations

from typing import Any

from detectors.anomaly import AnomalyEngine, parse_checks
from detectors.model import Match

T0 = 1767571200.0  # Monday 2026-01-05 00:00 UTC

CHECK = """
id: vol
type: volume
by: [runner]
interval: 1m
seasonality: []
learning: 10m
allowed_lateness: 0s
min_count: 5
"""


def engine(extra: str = "") -> AnomalyEngine:
    specs, errors = parse_checks(CHECK + extra)
    assert errors == []
    return AnomalyEngine(specs)


def feed(eng: AnomalyEngine, minute: int, count: int, key: str = "r1") -> list[Match]:
    """``count`` events spread over minute ``minute``."""
    out: list[Match] = []
    for i in range(count):
        out += eng.process({"runner": key}, T0 + minute * 60 + i * 60 / max(count, 1), None)
    return out


def run(eng: AnomalyEngine, counts: list[int], key: str = "r1") -> list[tuple[int, dict[str, Any]]]:
    """Alerts as (minute index of the closed interval, details)."""
    found: list[tuple[int, dict[str, Any]]] = []
    for minute, count in enumerate(counts):
        feed(eng, minute, count, key)
        for match in eng.advance(T0 + (minute + 1) * 60):
            details = dict(match.details or {})
            found.append((minute, details))
    return found


def test_steady_traffic_never_alerts_and_learning_ends() -> None:
    eng = engine()
    assert eng.learning() == {"vol": True}
    assert run(eng, [10] * 30) == []
    assert eng.learning() == {"vol": False}


def test_spike_after_learning_alerts_once_with_expected_band() -> None:
    eng = engine()
    alerts = run(eng, [10] * 20 + [40, 40] + [10] * 5)
    assert len(alerts) == 1  # one episode, one alert
    minute, d = alerts[0]
    assert minute == 20
    assert d["check"] == "vol" and d["key"] == {"runner": "r1"} and d["direction"] == "spike"
    assert d["observed"] == 40
    assert d["expected"]["mean"] == 10.0
    assert d["expected"]["low"] < 10 < d["expected"]["high"] < 40
    assert d["score"] > 4
    assert d["window_start"] == "2026-01-05T00:20:00.000Z" and d["window_end"] == "2026-01-05T00:21:00.000Z"
    assert d["alert_key"] == f"vol|runner=r1|{int(T0) + 1200}"


def test_no_alert_while_learning() -> None:
    eng = engine()
    assert run(eng, [10] * 5 + [60] + [10] * 3) == []


def test_drop_to_zero_alerts_and_recovery_rearms() -> None:
    eng = engine()
    alerts = run(eng, [10] * 20 + [0] + [10] * 6 + [0])
    assert [(m, d["direction"], d["observed"]) for m, d in alerts] == [(20, "drop", 0), (27, "drop", 0)]


def test_min_count_silences_quiet_keys() -> None:
    eng = engine()
    # expected 2 per minute: a drop to 0 is below min_count; a spike to 4 too
    assert run(eng, [2] * 20 + [0, 4], key="quiet") == []


def test_direction_up_ignores_drops() -> None:
    eng = engine("direction: up\n")
    assert run(eng, [10] * 20 + [0]) == []


def test_sustained_moderate_shift_is_caught_by_cusum() -> None:
    alternating = [9, 11] * 10
    no_cusum = engine("cusum: null\nthreshold: 10\n")
    assert run(no_cusum, alternating + [15] * 8) == []
    eng = engine("threshold: 10\n")
    alerts = run(eng, alternating + [15] * 8)
    assert len(alerts) == 1 and alerts[0][1]["direction"] == "spike" and alerts[0][0] >= 20


def test_keys_are_independent_and_late_events_are_counted() -> None:
    eng = engine()
    for minute in range(20):
        feed(eng, minute, 10, "a")
        feed(eng, minute, 10, "b")
        eng.advance(T0 + (minute + 1) * 60)
    feed(eng, 20, 40, "a")
    feed(eng, 20, 10, "b")
    alerts = eng.advance(T0 + 21 * 60)
    assert [m.details["key"] for m in alerts if m.details] == [{"runner": "a"}]
    assert eng.process({"runner": "a"}, T0 + 60, None) == []
    assert eng.counters["late"] == 1


def test_daily_seasonality_learns_the_shape() -> None:
    """Two days of a day/night pattern, then a normal third day: no alert; a night spike: alert."""
    specs, errors = parse_checks("""
id: day
type: volume
interval: 1h
seasonality: [daily]
allowed_lateness: 0s
""")
    assert errors == []
    eng = AnomalyEngine(specs)
    found = []
    for hour in range(24 * 5):
        count = 200 if 8 <= hour % 24 < 20 else 20
        if hour == 24 * 4 + 2:
            count = 120  # 02:00 on day five: six times the usual night
        for i in range(count):
            eng.process({}, T0 + hour * 3600 + i * 3600 / count, None)
        found += eng.advance(T0 + (hour + 1) * 3600)
    assert [(m.details["window_start"], m.details["direction"]) for m in found if m.details] == [
        ("2026-01-09T02:00:00.000Z", "spike")]
