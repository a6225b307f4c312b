"""silence, metric, new_value, cardinality, threshold and ratio on small hand-made streams."""

from __future__ import annotations

from typing import Any

from detectors.anomaly import AnomalyEngine, parse_checks
from detectors.model import Match

T0 = 1767571200.0


def engine(text: str, **kwargs: Any) -> AnomalyEngine:
    specs, errors = parse_checks(text)
    assert errors == []
    eng = AnomalyEngine(specs, **kwargs)
    assert eng.errors == []
    return eng


def details(matches: list[Match]) -> list[dict[str, Any]]:
    return [dict(m.details or {}) for m in matches]


# -- silence -------------------------------------------------------------------------------------
SILENCE = "{id: quiet, type: silence, by: [host], timeout: 60s, allowed_lateness: 0s, min_events: 3}"


def test_silence_alerts_once_then_recovers() -> None:
    eng = engine(SILENCE)
    for i in range(11):
        assert eng.process({"host": "a"}, T0 + 10 * i, None) == []
    assert eng.advance(T0 + 159) == []
    (alert,) = eng.advance(T0 + 170)
    d = alert.details or {}
    assert (d["state"], d["key"], d["observed"], d["expected"]) == ("silent", {"host": "a"}, 70.0, 60.0)
    assert d["event_time"] == "2026-01-05T00:02:40.000Z"  # last event + timeout
    assert alert.rule.level == "medium"
    assert eng.advance(T0 + 400) == []  # one alert per silence
    (recovered,) = eng.process({"host": "a"}, T0 + 500, None)
    assert (recovered.details or {})["state"] == "recovered"
    assert (recovered.details or {})["observed"] == 400.0
    assert recovered.rule.level == "informational"


def test_silence_needs_min_events_and_tracks_keys_separately() -> None:
    eng = engine(SILENCE)
    found = eng.process({"host": "once"}, T0, None)
    for i in range(5):
        found += eng.process({"host": "busy"}, T0 + i, None)
    for i in range(20):
        found += eng.process({"host": "steady"}, T0 + 10 * i, None)
    found += eng.advance(T0 + 200)
    # "once" never armed; "steady" still sending; "busy" alerted when the stream passed 64 s
    assert [(d["key"], d["event_time"]) for d in details(found)] == [
        ({"host": "busy"}, "2026-01-05T00:01:04.000Z")]


def test_silence_event_time_drives_detection_without_advance() -> None:
    eng = engine(SILENCE)
    for i in range(3):
        eng.process({"host": "a"}, T0 + i, None)
    found = eng.process({"host": "b"}, T0 + 200, None)
    assert [d["key"] for d in details(found)] == [{"host": "a"}]


# -- metric --------------------------------------------------------------------------------------
METRIC = """
id: dur
type: metric
by: [job]
field: duration
min_samples: 10
learning: 0s
learn_for: 0s
cusum: null
"""


def test_metric_value_outside_band_alerts_with_band() -> None:
    eng = engine(METRIC)
    for i in range(20):
        assert eng.process({"job": "build", "duration": 100 + (i % 2) * 2}, T0 + i, None) == []
    (alert,) = eng.process({"job": "build", "duration": 200}, T0 + 20, None)
    d = alert.details or {}
    assert d["observed"] == 200.0 and d["direction"] == "high"
    assert 100 < d["expected"]["center"] < 102
    assert d["expected"]["low"] < 100 and 102 < d["expected"]["high"] < 110
    assert d["score"] > 40
    assert eng.process({"job": "build", "duration": 101}, T0 + 21, None) == []


def test_metric_bad_values_are_counted_not_fatal() -> None:
    eng = engine(METRIC)
    # a list is read as its first element (detectors.event.get, as correlation reads values)
    for value in ("abc", None, True, ["x", 1], {"a": 1}, float("nan"), float("inf")):
        assert eng.process({"job": "x", "duration": value}, T0, None) == []
    eng.process({"job": "x"}, T0, None)
    eng.process({"job": "x", "duration": "12.5"}, T0, None)  # numeric text is a number
    counters = eng.counters
    assert counters["bad_value"] == 6 and counters["missing_value"] == 2


def test_metric_no_alert_before_min_samples() -> None:
    eng = engine(METRIC)
    for i in range(9):
        eng.process({"job": "j", "duration": 100}, T0 + i, None)
    assert eng.process({"job": "j", "duration": 1e6}, T0 + 9, None) == []


def test_metric_window_aggregate_and_log_transform() -> None:
    eng = engine("""
id: agg
type: metric
field: bytes
aggregate: sum
window: 1m
transform: log
min_samples: 5
learning: 0s
learn_for: 0s
allowed_lateness: 0s
""")
    found: list[Match] = []
    for minute in range(8):
        per_minute = 10 if minute < 7 else 300
        for i in range(per_minute):
            found += eng.process({"bytes": 100}, T0 + minute * 60 + i * 0.1, None)
    found += eng.advance(T0 + 8 * 60)
    (alert,) = found
    d = alert.details or {}
    assert d["observed"] == 30000.0 and d["window_start"] == "2026-01-05T00:07:00.000Z"
    assert abs(d["expected"]["center"] - 1000.0) < 1.0  # back-transformed from log space
    assert d["expected"]["aggregate"] == "sum"


def test_metric_median_mad_model() -> None:
    eng = engine(METRIC + "model: median_mad\nwindow_values: 16\nseasonality: []\n")
    for i in range(30):
        eng.process({"job": "j", "duration": [95, 100, 105][i % 3]}, T0 + i, None)
    (alert,) = eng.process({"job": "j", "duration": 200}, T0 + 30, None)
    assert (alert.details or {})["expected"]["center"] == 100.0
    assert eng.process({"job": "j", "duration": 104}, T0 + 31, None) == []


# -- new_value -----------------------------------------------------------------------------------
NEW = "{id: deployer, type: new_value, by: [service], fields: [user], learning: 100s, allowed_lateness: 0s}"


def test_new_value_after_learning_only_once() -> None:
    eng = engine(NEW)
    for i, user in enumerate(["ann", "bob", "ann"]):
        assert eng.process({"service": "api", "user": user}, T0 + i, None) == []
    assert eng.learning() == {"deployer": True}
    assert eng.process({"service": "api", "user": "bob"}, T0 + 150, None) == []
    assert eng.learning() == {"deployer": False}
    (alert,) = eng.process({"service": "api", "user": "eve"}, T0 + 151, None)
    d = alert.details or {}
    assert d["observed"] == {"user": "eve"} and d["expected"] == {"known_values": 2}
    assert d["key"] == {"service": "api"}
    assert eng.process({"service": "api", "user": "eve"}, T0 + 152, None) == []


def test_new_value_new_key_learns_its_own_period() -> None:
    eng = engine(NEW)
    eng.process({"service": "api", "user": "ann"}, T0, None)
    eng.process({"service": "api", "user": "ann"}, T0 + 200, None)
    assert eng.process({"service": "web", "user": "zed"}, T0 + 210, None) == []  # web first seen now
    assert eng.process({"service": "web", "user": "kim"}, T0 + 250, None) == []
    assert len(eng.process({"service": "web", "user": "lou"}, T0 + 320, None)) == 1


def test_new_value_tuple_of_fields_and_missing_field() -> None:
    eng = engine("{id: reg, type: new_value, fields: [registry, image], learning: 10s, key_learning: false}")
    eng.process({"registry": "ghcr.io", "image": "app"}, T0, None)
    eng.process({"registry": "ghcr.io"}, T0 + 1, None)
    assert eng.counters["missing_value"] == 1
    assert eng.process({"registry": "ghcr.io", "image": "app"}, T0 + 20, None) == []
    (alert,) = eng.process({"registry": "evil.io", "image": "app"}, T0 + 21, None)
    assert (alert.details or {})["observed"] == {"registry": "evil.io", "image": "app"}


# -- cardinality ---------------------------------------------------------------------------------
def test_cardinality_static_bound_alerts_at_crossing_once_per_window() -> None:
    eng = engine("{id: sweep, type: cardinality, by: [token], field: repo, window: 1h, max_distinct: 3}")
    found: list[Match] = []
    for i, repo in enumerate(["a", "b", "a", "c", "d", "e", "f"]):
        found += eng.process({"token": "t1", "repo": repo}, T0 + i, None)
    (alert,) = found
    d = alert.details or {}
    assert (d["observed"], d["expected"], d["event_time"]) == (4, {"max": 3}, "2026-01-05T00:00:04.000Z")
    found = []
    for i, repo in enumerate(["a", "b", "c", "d"]):  # the next hour starts over
        found += eng.process({"token": "t1", "repo": repo}, T0 + 3700 + i, None)
    assert len(found) == 1


def test_cardinality_baseline_mode() -> None:
    eng = engine("""
{id: card, type: cardinality, by: [token], field: repo, window: 1m, baseline: true, learning: 0s,
 min_distinct: 5, allowed_lateness: 0s}
""")
    found: list[Match] = []
    for minute in range(12):
        distinct = 3 + minute % 2 if minute < 11 else 40
        for j in range(distinct):
            found += eng.process({"token": "t", "repo": f"r{j}"}, T0 + minute * 60 + j, None)
    found += eng.advance(T0 + 12 * 60)
    (alert,) = found
    d = alert.details or {}
    assert d["observed"] == 40 and d["window_start"] == "2026-01-05T00:11:00.000Z"
    assert 3 < d["expected"]["center"] < 4


# -- threshold and ratio --------------------------------------------------------------------------
THRESHOLD = """
id: brute
type: threshold
by: [user]
selection: {action: login, outcome: failure}
count: 3
window: 60s
"""


def test_threshold_sliding_window_with_selection() -> None:
    eng = engine(THRESHOLD)
    fail = {"user": "u", "action": "login", "outcome": "failure"}
    ok = {"user": "u", "action": "login", "outcome": "success"}
    assert eng.process(fail, T0, None) == []
    assert eng.process(ok, T0 + 1, None) == []
    assert eng.process(fail, T0 + 50, None) == []
    assert eng.process(fail, T0 + 70, None) == []  # three failures, but over 70 s
    (alert,) = eng.process(fail, T0 + 90, None)  # 50, 70, 90: within 60 s
    d = alert.details or {}
    assert (d["observed"], d["window_start"], d["window_end"]) == (
        3, "2026-01-05T00:00:50.000Z", "2026-01-05T00:01:30.000Z")
    assert eng.process(fail, T0 + 91, None) == []  # starts over after an alert
    assert eng.counters.get("missing_key", 0) == 0  # non-matching events are not keyed at all


def test_threshold_without_selection_counts_everything() -> None:
    eng = engine("{id: flood, type: threshold, count: 2, window: 10s}")
    eng.process({}, T0, None)
    assert len(eng.process({"x": 1}, T0 + 5, None)) == 1


def test_ratio_closes_windows_with_share_above_bound() -> None:
    eng = engine("""
id: fails
type: ratio
by: [pipeline]
selection: {status: failed}
max_ratio: 0.5
min_count: 4
window: 1m
allowed_lateness: 0s
""")
    events = ([("p1", "failed")] * 3 + [("p1", "ok")]
              + [("p2", "failed")] * 2 + [("p2", "ok")] * 2
              + [("p3", "failed")] * 3)
    for i, (pipeline, status) in enumerate(events):
        assert eng.process({"pipeline": pipeline, "status": status}, T0 + i, None) == []
    (alert,) = eng.advance(T0 + 60)
    d = alert.details or {}
    assert d["key"] == {"pipeline": "p1"} and d["observed"] == 0.75
    assert d["expected"] == {"max_ratio": 0.5, "matching": 3, "total": 4}


def test_ratio_hopping_window_catches_an_episode_across_a_boundary() -> None:
    text = """
id: fails
type: ratio
selection: {status: failed}
max_ratio: 0.5
min_count: 4
window: 4m
allowed_lateness: 0s
"""
    found: dict[int, list[Match]] = {}
    for slices in (1, 4):
        eng = engine(text + f"slices: {slices}\n")
        found[slices] = []
        for minute in range(10):
            status = "failed" if 2 <= minute < 6 else "ok"
            for i in range(4):
                found[slices] += eng.process({"status": status}, T0 + minute * 60 + i, None)
            found[slices] += eng.advance(T0 + (minute + 1) * 60)
    assert found[1] == []  # 8 of 16 in each tumbling window: not above 0.5
    (alert,) = found[4]
    d = alert.details or {}
    # the first window with more than half failing: minutes 1-4 (12 of 16); one alert for the episode
    assert (d["window_start"], d["window_end"], d["observed"]) == (
        "2026-01-05T00:01:00.000Z", "2026-01-05T00:05:00.000Z", 0.75)


def test_new_value_bloom_generations_rotate_and_keep_recent_values() -> None:
    eng = engine("{id: gen, type: new_value, fields: [v], learning: 0s, key_learning: false, capacity: 100}")
    alerts = 0
    for i in range(150):
        alerts += len(eng.process({"v": f"value-{i}"}, T0 + i, None))
    assert alerts == 150
    assert eng.counters["bloom_rotations"] == 1
    # the last ~capacity distinct values are remembered: the current generation holds 100-149,
    # the previous one 0-99 (found there, they are copied forward)
    assert sum(len(eng.process({"v": f"value-{i}"}, T0 + 200 + i, None)) for i in range(60, 150)) == 0
    assert eng.counters["bloom_rotations"] == 1
    assert len(eng.process({"v": "value-new"}, T0 + 400, None)) == 1
