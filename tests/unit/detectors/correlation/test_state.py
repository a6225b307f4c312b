"""Event time, reordering, bounded state and snapshots of the correlation engine."""

from __future__ import annotations

import ast
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from detectors.correlation import CorrelationEngine, compile_correlations
from detectors.event import event_time, to_epoch
from detectors.model import Match, RuleInfo
from detectors.sigma import RuleText, compile_ruleset
from tests.conftest import ROOT
from tests.support.rules import FAILED_LOGIN

FAILED = RuleInfo(id="11111111-1111-4111-8111-111111111111", title="Failed login", name="failed")
RULES = FAILED_LOGIN + """---
title: Many failures
id: 99999999-9999-4999-8999-999999999999
correlation:
  type: event_count
  rules: [failed]
  group-by: [User]
  timespan: 10s
  condition: {gte: 3}
---
title: Few failures
id: 88888888-8888-4888-8888-888888888888
correlation:
  type: event_count
  rules: [failed]
  group-by: [User]
  timespan: 10s
  condition: {lt: 2}
"""


def engine(text: str = RULES, **limits: Any) -> CorrelationEngine:
    result = compile_ruleset([RuleText("s.yml", text, "test")])
    assert result.errors == []
    built, errors = compile_correlations(result.ruleset, **limits)
    assert errors == []
    return built


def feed(eng: CorrelationEngine, events: Sequence[tuple[float, str]]) -> list[Match]:
    out: list[Match] = []
    for ts, user in events:
        out += eng.process({"action": "fail", "User": user}, [Match(FAILED)], ts, ref=f"{user}@{ts}")
    return out


def keys(matches: list[Match]) -> list[str]:
    return [m.details["alert_key"] for m in matches if m.details]


class TestWatermark:
    def test_out_of_order_within_lateness_is_reordered(self) -> None:
        eng = engine(allowed_lateness_s=5)
        out = feed(eng, [(10, "a"), (8, "a"), (9, "a")])
        assert out == []  # watermark is 10 - 5: nothing applied yet
        out = eng.flush()
        many = [m for m in out if m.rule.title == "Many failures"]
        assert len(many) == 1 and many[0].details is not None
        assert (many[0].details["window_start"], many[0].details["window_end"]) == (8.0, 10.0)
        assert [c["ts"] for c in many[0].details["contributors"]] == [8.0, 9.0, 10.0]
        assert eng.counters["late"] == 0

    def test_later_event_releases_the_buffer(self) -> None:
        eng = engine(allowed_lateness_s=5)
        feed(eng, [(10, "a"), (8, "a"), (9, "a")])
        out = feed(eng, [(15, "b")])
        assert [m.rule.title for m in out] == ["Many failures"]

    def test_event_older_than_the_watermark_is_late(self) -> None:
        eng = engine()
        feed(eng, [(10, "a"), (8, "a"), (9, "a")])
        assert eng.counters["late"] == 2
        eng = engine(allowed_lateness_s=1)
        feed(eng, [(10, "a"), (8.5, "a"), (9, "a")])
        assert eng.counters["late"] == 1  # 8.5 < 10 - 1; 9 is exactly at the watermark and accepted

    def test_order_within_lateness_does_not_change_alerts(self) -> None:
        events = [(float(t), random.Random(t).choice("abc")) for t in range(200)]
        in_order = engine(allowed_lateness_s=3)
        expected = keys(feed(in_order, events) + in_order.flush())
        shuffled = sorted(events, key=lambda e: e[0] + random.Random(int(e[0]) * 7).uniform(0, 2.9))
        eng = engine(allowed_lateness_s=3)
        assert keys(feed(eng, shuffled) + eng.flush()) == expected
        assert eng.counters["late"] == 0 and len(expected) > 10

    def test_buffer_overflow_applies_the_oldest_early(self) -> None:
        eng = engine(allowed_lateness_s=1000, max_pending=2)
        feed(eng, [(1, "a"), (2, "a"), (3, "a"), (4, "a")])
        assert eng.counters["buffer_overflow"] == 2
        assert eng.watermark == 2.0

    def test_advance_closes_deferred_windows_without_events(self) -> None:
        eng = engine()
        feed(eng, [(0, "a")])
        assert eng.advance(10) == []  # end is inclusive: an event at 10 could still count
        out = eng.advance(10.5)
        assert [m.rule.title for m in out] == ["Few failures"]


class TestBoundedState:
    def test_lru_eviction_drops_the_least_recent_group(self) -> None:
        eng = engine(max_keys=2)
        many = [(0, "a"), (1, "b"), (2, "a"), (3, "c"), (4, "b"), (5, "a")]
        # c evicts b (a was touched at 2), b evicts a, a evicts c: in each of the two correlations.
        assert feed(eng, many) == []
        assert eng.counters["evicted"] == 6
        assert [m for m in feed(eng, [(6, "b"), (7, "a")]) if m.rule.title == "Many failures"] == []
        fired = [m for m in feed(eng, [(8, "a")]) if m.rule.title == "Many failures"]
        assert [(m.fields, m.details["window_start"]) for m in fired if m.details] == [((("User", "a"),), 5.0)]

    def test_idle_groups_are_swept(self) -> None:
        eng = engine()
        feed(eng, [(float(i) / 100, f"user{i}") for i in range(3000)])
        feed(eng, [(1000.0 + i / 100, f"late{i}") for i in range(2048)])
        assert eng.active_keys() < 2 * (3000 + 2048)  # the first 3000 groups of both rules are gone


def test_invalid_limits_are_refused() -> None:
    for limits in ({"max_keys": 0}, {"allowed_lateness_s": -1}, {"allowed_lateness_s": float("nan")},
                   {"max_pending": 0}):
        with pytest.raises(ValueError):
            engine(**limits)


class TestSnapshot:
    EVENTS = [(float(t), "abcd"[t % 4]) for t in range(0, 120, 2)]

    def test_restore_continues_exactly_like_an_uninterrupted_run(self) -> None:
        whole = engine(allowed_lateness_s=3)
        expected = keys(feed(whole, self.EVENTS) + whole.flush())
        first = engine(allowed_lateness_s=3)
        got = keys(feed(first, self.EVENTS[:33]))
        state = json.loads(json.dumps(first.snapshot()))  # must survive JSON
        second = engine(allowed_lateness_s=3)
        assert second.restore(state) == []
        got += keys(feed(second, self.EVENTS[33:]) + second.flush())
        assert got == expected and len(expected) > 5

    def test_changed_definition_drops_only_that_state(self) -> None:
        first = engine()
        feed(first, [(0, "a"), (1, "a")])
        changed = engine(RULES.replace("condition: {gte: 3}", "condition: {gte: 2}"))
        warnings = changed.restore(first.snapshot())
        assert len(warnings) == 1 and "99999999" in warnings[0]
        assert feed(changed, [(2, "a")]) == []  # gte 2 starts from scratch

    @pytest.mark.parametrize("bad", [None, [], {"format": "x"}, {"format": "pipesentry-state", "kind": "anomaly",
                                                                "version": 1, "body": {}}])
    def test_unusable_snapshot_is_a_warning(self, bad: Any) -> None:
        eng = engine()
        warnings = eng.restore(bad)
        assert len(warnings) == 1 and "not restored" in warnings[0]
        assert len(feed(eng, [(0, "a"), (1, "a"), (2, "a")])) == 1


class TestEventTime:
    def test_formats(self) -> None:
        assert to_epoch(1_700_000_000) == 1_700_000_000.0
        assert to_epoch(1_700_000_000_123) == pytest.approx(1_700_000_000.123)
        assert to_epoch("2024-01-02T03:04:05Z") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
        assert to_epoch("2024-01-02T03:04:05+01:00") == datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC).timestamp()
        assert to_epoch("1700000000.5") == 1_700_000_000.5
        junk_values: tuple[Any, ...] = (None, True, "yesterday", float("nan"), {}, [])
        for junk in junk_values:
            assert to_epoch(junk) is None

    def test_field_order_and_nesting(self) -> None:
        assert event_time({"@timestamp": "2024-01-01T00:00:00Z", "ts": 5}) == 1704067200.0
        assert event_time({"event": {"created": 7}}) == 7.0
        assert event_time({"when": 9}, fields=("when",)) == 9.0
        assert event_time({"msg": "x"}) is None


def test_package_is_pure() -> None:
    """No I/O, async, clock or metrics imports in detectors/correlation (architecture rule)."""
    forbidden = {"asyncio", "aiokafka", "fastapi", "httpx", "elasticsearch", "prometheus_client", "time",
                 "os", "pathlib", "io", "socket", "service"}
    package = ROOT / "detectors" / "correlation"
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
            if isinstance(node, ast.Attribute) and node.attr in ("now", "utcnow", "today"):
                pytest.fail(f"{path.name} reads the clock")


class TestReloadAndChains:
    def test_hot_reload_keeps_state_of_unchanged_correlations(self) -> None:
        old = engine()
        feed(old, [(0, "a"), (1, "a")])
        # The reloaded set changes only "Few failures"; "Many failures" keeps its two events.
        new = engine(RULES.replace("condition: {lt: 2}", "condition: {lt: 3}"))
        warnings = new.restore(old.snapshot())
        assert len(warnings) == 1 and "88888888" in warnings[0]
        assert [m.rule.title for m in feed(new, [(2, "a")])] == ["Many failures"]

    def test_deferred_child_feeds_parent_at_its_window_end(self) -> None:
        text = RULES.replace("title: Few failures\nid: 88888888-8888-4888-8888-888888888888",
                             "title: Few failures\nid: 88888888-8888-4888-8888-888888888888\nname: few") + """
---
title: Two quiet windows
id: 77777777-7777-4777-8777-777777777777
correlation:
  type: event_count
  rules: [few]
  group-by: [User]
  timespan: 1m
  condition: {gte: 2}
"""
        eng = engine(text)
        out = feed(eng, [(0, "a"), (20, "a")])  # window [0, 10] decided at 20 (1 event < 2)
        assert out == []  # the child is suppressed (generate: false); the parent has 1 of 2
        out = feed(eng, [(40, "b")])  # window [20, 30] of a decided at 40
        parent = [m for m in out if m.rule.title == "Two quiet windows"]
        assert len(parent) == 1 and parent[0].details is not None
        assert (parent[0].details["window_start"], parent[0].details["window_end"]) == (10.0, 30.0)
        assert parent[0].fields == (("User", "a"),)

    def test_average_of_nothing_satisfies_no_condition(self) -> None:
        from detectors.correlation import condition_from_mapping

        for mapping in ({"neq": 1}, {"lt": 5}, {"gte": 0}):
            assert not condition_from_mapping(mapping).holds(float("nan"))
        assert condition_from_mapping({"gt": 100, "lte": 200}).holds(200)
        assert not condition_from_mapping({"gt": 100, "lte": 200}).holds(100)
        with pytest.raises(ValueError, match="unknown condition operator"):
            condition_from_mapping({"above": 3})
        with pytest.raises(ValueError, match="not a number"):
            condition_from_mapping({"gt": "many"})


ALL_TYPES = {
    "value_count": "type: value_count\n  condition: {field: Host, gte: 3}",
    "value_sum": "type: value_sum\n  condition: {field: n, gt: 10}",
    "value_avg": "type: value_avg\n  condition: {field: n, gte: 4}",
    "value_median": "type: value_median\n  condition: {field: n, gte: 5}",
    "value_percentile": "type: value_percentile\n  condition: {field: n, percentile: 75, gte: 6}",
    "frequency": "type: value_percentile\n  condition: {field: Host, lte: 20}",
    "temporal": "type: temporal\n  condition: {gte: 2}",
    "temporal_ordered": "type: temporal_ordered\n  condition: {gte: 2}",
    "event_count_lt": "type: event_count\n  condition: {lt: 7}",
}


@pytest.mark.parametrize("kind", sorted(ALL_TYPES))
def test_every_type_survives_a_snapshot_mid_stream(kind: str) -> None:
    text = RULES.split("---")[0] + """---
title: Other
id: 66666666-6666-4666-8666-666666666666
name: other
logsource: {product: test}
detection: {sel: {action: other}, condition: sel}
---
title: Under test
id: 55555555-5555-4555-8555-555555555555
correlation:
  rules: [failed, other]
  group-by: [User]
  timespan: 30s
  """ + ALL_TYPES[kind] + "\n"
    rng = random.Random(kind)
    events = [(float(t), {"action": rng.choice(["fail", "other"]), "User": rng.choice("ab"),
                          "Host": f"h{rng.randrange(6)}", "n": rng.randrange(10)}) for t in range(0, 400, 3)]

    def run(eng: CorrelationEngine, part: list[tuple[float, dict[str, Any]]]) -> list[str]:
        other = RuleInfo(id="66666666-6666-4666-8666-666666666666", title="Other")
        out: list[Match] = []
        for ts, event in part:
            out += eng.process(event, [Match(FAILED if event["action"] == "fail" else other)], ts, ref=ts)
        return keys(out)

    whole = engine(text, allowed_lateness_s=2)
    expected = run(whole, events) + keys(whole.flush())
    first = engine(text, allowed_lateness_s=2)
    got = run(first, events[:70])
    second = engine(text, allowed_lateness_s=2)
    assert second.restore(json.loads(json.dumps(first.snapshot()))) == []
    got += run(second, events[70:]) + keys(second.flush())
    assert got == expected and expected, kind
