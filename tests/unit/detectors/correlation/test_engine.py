"""Window semantics of the correlation engine, type by type, at the edges.

Rules go through the real Sigma loader (``compile_ruleset``); events are fed
through :class:`CorrelatingEvaluator` with explicit event times (seconds).
The semantics under test are the ones documented in docs/correlation.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from detectors.correlation import CorrelatingEvaluator, compile_correlations
from detectors.model import Match
from detectors.sigma import RuleText, compile_ruleset
from tests.support.rules import FAILED_LOGIN

BASE = FAILED_LOGIN + """---
title: Successful login
id: 22222222-2222-4222-8222-222222222222
name: success
logsource: {product: test}
detection: {sel: {action: ok}, condition: sel}
---
title: Recon
id: 33333333-3333-4333-8333-333333333333
name: recon
logsource: {product: test}
detection: {sel: {action: recon}, condition: sel}
"""


def corr(body: str, title: str = "Corr", ident: str = "99999999-9999-4999-8999-999999999999") -> str:
    return f"---\ntitle: {title}\nid: {ident}\nlevel: high\nauthor: tester\ncorrelation:\n{body}"


def build(text: str, **limits: Any) -> CorrelatingEvaluator:
    result = compile_ruleset([RuleText("test.yml", BASE + text, "test")])
    assert result.errors == []
    engine, errors = compile_correlations(result.ruleset, **limits)
    assert errors == []
    return CorrelatingEvaluator(result.ruleset, engine)


Feed = Iterable[tuple[float | None, Mapping[str, Any]]]


def run(evaluator: CorrelatingEvaluator, events: Feed, flush: bool = False) -> list[Match]:
    out: list[Match] = []
    for ts, event in events:
        out += [m for m in evaluator.evaluate(event, None, ts, ref=f"e@{ts}") if m.rule.kind == "correlation"]
    if flush:
        out += evaluator.flush()
    return out


def fail(user: str = "alice", **extra: Any) -> dict[str, Any]:
    return {"action": "fail", "User": user, **extra}


COUNT3 = corr("""
  type: event_count
  rules: [failed]
  group-by: [User]
  timespan: 10s
  condition: {gte: 3}
""")


class TestEventCount:
    def test_fires_when_third_event_is_exactly_timespan_after_the_first(self) -> None:
        alerts = run(build(COUNT3), [(0, fail()), (5, fail()), (10, fail())])
        assert len(alerts) == 1
        details = alerts[0].details
        assert details is not None
        assert details["value"] == 3 and details["type"] == "event_count"
        assert (details["window_start"], details["window_end"]) == (0.0, 10.0)
        assert details["group"] == {"User": "alice"}
        assert alerts[0].fields == (("User", "alice"),)
        assert [c["ref"] for c in details["contributors"]] == ["e@0", "e@5", "e@10"]
        assert details["alert_key"] == '99999999-9999-4999-8999-999999999999|["alice"]|0.0'
        assert alerts[0].rule.author == "tester" and alerts[0].rule.level == "high"

    def test_one_event_short_or_just_outside_the_timespan_does_not_fire(self) -> None:
        assert run(build(COUNT3), [(0, fail()), (5, fail())]) == []
        assert run(build(COUNT3), [(0, fail()), (5, fail()), (10.001, fail())]) == []

    def test_window_resets_after_an_alert(self) -> None:
        alerts = run(build(COUNT3), [(t, fail()) for t in (0, 1, 2, 3, 4, 5)])
        assert [a.details["window_start"] for a in alerts if a.details] == [0.0, 3.0]
        assert len({a.details["alert_key"] for a in alerts if a.details}) == 2

    def test_alert_keys_stay_unique_for_bursts_with_one_timestamp(self) -> None:
        alerts = run(build(COUNT3), [(7, fail()) for _ in range(6)])
        keys = [a.details["alert_key"] for a in alerts if a.details]
        assert len(keys) == 2 and len(set(keys)) == 2

    def test_groups_are_counted_separately_and_case_insensitively(self) -> None:
        events = [(0, fail("alice")), (1, fail("bob")), (2, fail("ALICE")), (3, fail("bob")), (4, fail("Alice"))]
        alerts = run(build(COUNT3), events)
        assert len(alerts) == 1
        assert alerts[0].fields == (("User", "Alice"),)  # as the firing event spelled it

    def test_base_rule_alerts_are_suppressed_by_default(self) -> None:
        evaluator = build(COUNT3)
        out = evaluator.evaluate(fail(), None, 0)
        assert out == []  # failed-login matched but generate: false hides it
        assert evaluator.engine.suppressed_rule_ids == {"11111111-1111-4111-8111-111111111111"}

    def test_generate_true_keeps_base_rule_alerts(self) -> None:
        evaluator = build(COUNT3.replace("timespan: 10s", "timespan: 10s\n  generate: true"))
        assert [m.rule.name for m in evaluator.evaluate(fail(), None, 0)] == ["failed"]
        assert evaluator.engine.suppressed_rule_ids == frozenset()

    def test_event_counts_once_when_it_matches_two_referenced_rules(self) -> None:
        text = corr("""
  type: event_count
  rules: [failed, recon]
  group-by: [User]
  timespan: 10s
  condition: {gte: 2}
""")
        result = compile_ruleset([RuleText("t.yml", BASE.replace("{action: recon}", "{User: alice}") + text)])
        engine, _ = compile_correlations(result.ruleset)
        evaluator = CorrelatingEvaluator(result.ruleset, engine)
        assert run(evaluator, [(0, fail())]) == []
        assert len(run(evaluator, [(1, fail())])) == 1


class TestValueCount:
    RULE = corr("""
  type: value_count
  rules: [failed]
  group-by: [Host]
  timespan: 1m
  condition: {field: User, gte: 3}
""")

    def test_counts_distinct_values_only(self) -> None:
        events = [(0, fail("a", Host="h")), (1, fail("a", Host="h")), (2, fail("B", Host="h")),
                  (3, fail("b", Host="h"))]
        assert run(build(self.RULE), events) == []
        alerts = run(build(self.RULE), [*events, (60, fail("c", Host="h"))])
        assert len(alerts) == 1 and alerts[0].details is not None
        assert alerts[0].details["value"] == 3 and alerts[0].details["field"] == ["User"]

    def test_values_that_left_the_window_do_not_count(self) -> None:
        events = [(0, fail("a", Host="h")), (30, fail("b", Host="h")), (61, fail("c", Host="h"))]
        assert run(build(self.RULE), events) == []

    def test_a_repeated_value_stays_in_the_window_from_its_latest_occurrence(self) -> None:
        events = [(i / 10, fail("a", Host="h")) for i in range(400)] + [
            (40, fail("b", Host="h")), (70, fail("c", Host="h"))]
        alerts = run(build(self.RULE), events)  # 'a' last seen at 39.9: inside [10, 70]
        assert len(alerts) == 1 and alerts[0].details is not None
        assert alerts[0].details["contributor_count"] == 3  # one entry per distinct value is kept
        assert [c["ts"] for c in alerts[0].details["contributors"]] == [39.9, 40.0, 70.0]
        assert run(build(self.RULE), [*events[:-1], (70.5, fail("c", Host="h"))]) != []
        assert run(build(self.RULE), [*events[:-1], (100.0, fail("c", Host="h"))]) == []  # 'a' left at 99.9

    def test_missing_value_field_is_counted_not_raised(self) -> None:
        evaluator = build(self.RULE)
        run(evaluator, [(0, {"action": "fail", "Host": "h"})])
        assert evaluator.engine.counters["missing_value_field"] == 1


class TestTemporal:
    RULE = corr("""
  type: temporal
  rules: [failed, success, recon]
  group-by: [User]
  timespan: 5m
""")

    @staticmethod
    def ev(action: str, user: str = "alice") -> dict[str, Any]:
        return {"action": action, "User": user}

    def test_all_rules_in_any_order_within_timespan(self) -> None:
        alerts = run(build(self.RULE), [(0, self.ev("recon")), (100, self.ev("ok")), (300, self.ev("fail"))])
        assert len(alerts) == 1 and alerts[0].details is not None
        assert alerts[0].details["value"] == 3
        assert {c["rule"] for c in alerts[0].details["contributors"]} == {
            "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222",
            "33333333-3333-4333-8333-333333333333"}

    def test_one_rule_missing_or_out_of_window(self) -> None:
        assert run(build(self.RULE), [(0, self.ev("recon")), (10, self.ev("ok")), (20, self.ev("ok"))]) == []
        assert run(build(self.RULE), [(0, self.ev("recon")), (100, self.ev("ok")), (300.5, self.ev("fail"))]) == []

    def test_state_stays_one_entry_per_rule(self) -> None:
        events = [(i / 100, self.ev("recon")) for i in range(1000)] + [(11, self.ev("ok")), (12, self.ev("fail"))]
        alerts = run(build(self.RULE), events)
        assert len(alerts) == 1 and alerts[0].details is not None
        assert alerts[0].details["contributor_count"] == 3
        assert alerts[0].details["window_start"] == 9.99  # the latest recon match

    def test_other_users_do_not_complete_the_set(self) -> None:
        events = [(0, self.ev("recon", "a")), (1, self.ev("ok", "b")), (2, self.ev("fail", "a"))]
        assert run(build(self.RULE), events) == []


class TestTemporalOrdered:
    RULE = corr("""
  type: temporal_ordered
  rules: [recon, failed, success]
  group-by: [User]
  timespan: 5m
""")

    @staticmethod
    def ev(action: str) -> dict[str, Any]:
        return {"action": action, "User": "alice"}

    def test_in_order_fires(self) -> None:
        alerts = run(build(self.RULE), [(0, self.ev("recon")), (1, self.ev("fail")), (2, self.ev("ok"))])
        assert len(alerts) == 1

    def test_wrong_order_does_not_fire_until_the_order_completes(self) -> None:
        evaluator = build(self.RULE)
        assert run(evaluator, [(0, self.ev("recon")), (1, self.ev("ok")), (2, self.ev("fail"))]) == []
        alerts = run(evaluator, [(3, self.ev("ok"))])
        assert len(alerts) == 1 and alerts[0].details is not None
        assert [c["ts"] for c in alerts[0].details["contributors"]] == [0.0, 2.0, 3.0]

    def test_repeated_matches_of_one_rule_keep_the_latest(self) -> None:
        events = [(0, self.ev("recon")), *[(1 + i / 1000, self.ev("fail")) for i in range(500)],
                  (299, self.ev("recon")), (300, self.ev("fail")), (301, self.ev("ok"))]
        alerts = run(build(self.RULE), events)
        assert len(alerts) == 1 and alerts[0].details is not None
        assert [c["ts"] for c in alerts[0].details["contributors"]] == [299.0, 300.0, 301.0]

    def test_order_must_fit_in_the_timespan(self) -> None:
        assert run(build(self.RULE), [(0, self.ev("recon")), (1, self.ev("fail")), (301, self.ev("ok"))]) == []


class TestNumeric:
    def test_value_sum(self) -> None:
        rule = corr("""
  type: value_sum
  rules: [failed]
  group-by: [User]
  timespan: 1h
  condition: {field: bytes, gt: 1000}
""")
        evaluator = build(rule)
        events = [(0, fail(bytes=500)), (10, fail(bytes="500")), (20, fail(bytes="junk")), (30, fail(bytes=1))]
        alerts = run(evaluator, events)
        assert len(alerts) == 1 and alerts[0].details is not None
        assert alerts[0].details["value"] == 1001 and alerts[0].details["window_end"] == 30.0
        assert evaluator.engine.counters["non_numeric_value"] == 1

    def test_value_avg(self) -> None:
        rule = corr("""
  type: value_avg
  rules: [failed]
  group-by: [User]
  timespan: 1h
  condition: {field: BytesOut, gt: 500}
""")
        alerts = run(build(rule), [(0, fail(BytesOut=100)), (1, fail(BytesOut=900)), (2, fail(BytesOut=1200))])
        assert [a.details["value"] for a in alerts if a.details] == [pytest.approx(733.3333, rel=1e-4)]

    def test_value_median_and_percentile(self) -> None:
        median = corr("""
  type: value_median
  rules: [failed]
  group-by: [User]
  timespan: 1h
  condition: {field: ms, gte: 50}
""")
        alerts = run(build(median), [(0, fail(ms=10)), (1, fail(ms=100)), (2, fail(ms=20)), (3, fail(ms=90))])
        # medians: 10, 55 -> fires and resets; then 20, 55 -> fires again
        assert [a.details["value"] for a in alerts if a.details] == [55, 55]
        p90 = corr("""
  type: value_percentile
  rules: [failed]
  group-by: [User]
  timespan: 1h
  condition: {field: ms, percentile: 90, gt: 95}
""")
        values = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]  # p90 = 91 (no); with 1000 added: sorted[10 * 0.9] = 100
        events = [(float(i), fail(ms=v)) for i, v in enumerate(values)]
        assert run(build(p90), events) == []
        alerts = run(build(p90), [*events, (10.0, fail(ms=1000))])
        assert [a.details["value"] for a in alerts if a.details] == [100]


    def test_percentile_forgets_values_that_left_the_window(self) -> None:
        rule = corr("""
  type: value_median
  rules: [failed]
  group-by: [User]
  timespan: 10s
  condition: {field: ms, gt: 60}
""")
        # medians: 10; 55; then 10 has left the window: median(100, 30) = 65 (it would be 30 with 10 kept)
        alerts = run(build(rule), [(0, fail(ms=10)), (5, fail(ms=100)), (11, fail(ms=30))])
        assert [a.details["value"] for a in alerts if a.details] == [65]


class TestDeferred:
    @staticmethod
    def rule(condition: str) -> str:
        return corr(f"""
  type: event_count
  rules: [failed]
  group-by: [User]
  timespan: 10s
  condition: {condition}
""")

    def test_lt_fires_when_the_watermark_passes_the_window_end(self) -> None:
        evaluator = build(self.rule("{lt: 3}"))
        assert run(evaluator, [(0, fail()), (5, fail()), (10, {"other": 1})]) == []  # end (10) not yet passed
        alerts = run(evaluator, [(10.5, {"unrelated": True})])
        assert len(alerts) == 1 and alerts[0].details is not None
        assert alerts[0].details["value"] == 2
        assert (alerts[0].details["window_start"], alerts[0].details["window_end"]) == (0.0, 10.0)

    def test_lt_does_not_fire_when_enough_events_arrived_in_time(self) -> None:
        assert run(build(self.rule("{lt: 3}")), [(0, fail()), (5, fail()), (10, fail()), (11, fail())]) == []

    def test_lte_eq_neq(self) -> None:
        three = [(0, fail()), (4, fail()), (10, fail()), (20, {"tick": 1})]
        assert len(run(build(self.rule("{lte: 3}")), three)) == 1
        assert len(run(build(self.rule("{eq: 3}")), three)) == 1
        assert run(build(self.rule("{eq: 2}")), three) == []
        assert len(run(build(self.rule("{neq: 2}")), three)) == 1

    def test_next_window_opens_at_the_first_event_after_the_previous_end(self) -> None:
        events = [(0, fail()), (11, fail()), (12, fail()), (30, {"tick": 1})]
        alerts = run(build(self.rule("{eq: 2}")), events)
        assert [(a.details["window_start"], a.details["value"]) for a in alerts if a.details] == [(11.0, 2)]

    def test_advance_and_flush(self) -> None:
        evaluator = build(self.rule("{lt: 5}"))
        run(evaluator, [(0, fail())])
        assert evaluator.flush() == []  # window [0, 10] has not ended at the last event time
        assert len(evaluator.advance(10.01)) == 1

    def test_range_condition(self) -> None:
        result = compile_ruleset([RuleText("t.yml", BASE + self.rule("{gt: 1}"))])
        engine, errors = compile_correlations(
            result.ruleset, raw_conditions={"99999999-9999-4999-8999-999999999999": {"gt": 1, "lte": 2}})
        assert errors == []
        evaluator = CorrelatingEvaluator(result.ruleset, engine)
        assert len(run(evaluator, [(0, fail()), (1, fail()), (20, {"tick": 1})])) == 1
        assert run(evaluator, [(30, fail()), (31, fail()), (32, fail()), (50, {"tick": 1})]) == []


class TestChaining:
    TEXT = corr("""
  type: event_count
  rules: [failed]
  group-by: [User]
  timespan: 10m
  condition: {gte: 3}
""", title="Many failed", ident="aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa").replace(
        "correlation:", "name: many_failed\ncorrelation:") + corr("""
  type: temporal_ordered
  rules: [many_failed, success]
  group-by: [User]
  timespan: 10m
""", title="Brute force then success")

    def test_child_alert_feeds_parent_and_is_itself_suppressed(self) -> None:
        evaluator = build(self.TEXT)
        events = [(0, fail()), (1, fail()), (2, {"action": "ok", "User": "alice"}), (3, fail()),
                  (4, {"action": "ok", "User": "alice"})]
        alerts = run(evaluator, events)
        assert [a.rule.title for a in alerts] == ["Brute force then success"]
        details = alerts[0].details
        assert details is not None and details["window_start"] == 3.0 and details["window_end"] == 4.0
        child = details["contributors"][0]
        assert child["rule"] == "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
        assert child["ref"].startswith("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa|")
        assert "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa" in evaluator.engine.suppressed_rule_ids

    def test_success_before_the_burst_does_not_fire(self) -> None:
        events = [(0, {"action": "ok", "User": "alice"}), (1, fail()), (2, fail()), (3, fail())]
        assert run(build(self.TEXT), events) == []


class TestAliases:
    def test_group_by_alias_resolves_per_rule(self) -> None:
        text = corr("""
  type: temporal
  rules: [failed, success]
  group-by: [who]
  timespan: 10s
  aliases:
    who:
      failed: User
      success: account.name
""")
        evaluator = build(text)
        alerts = run(evaluator, [(0, fail("bob")), (5, {"action": "ok", "account": {"name": "BOB"}})])
        assert len(alerts) == 1 and alerts[0].fields == (("who", "BOB"),)
        assert run(build(text), [(0, fail("bob")), (5, {"action": "ok", "User": "bob"})]) == []


class TestCorrelateStream:
    """The finite-input driver ``pipesentry eval`` is meant to call."""

    def test_lines_as_refs_time_from_the_event_and_flush_at_the_end(self) -> None:
        from detectors.correlation import correlate_stream

        rule = corr("""
  type: event_count
  rules: [failed]
  group-by: [User]
  timespan: 10s
  condition: {lt: 3}
""")
        lines = [(1, {"action": "fail", "User": "a", "@timestamp": "2026-01-01T00:00:00Z"}),
                 (2, {"action": "ok", "User": "a", "@timestamp": "2026-01-01T00:00:05Z"}),
                 (3, {"action": "fail", "User": "b", "@timestamp": "2026-01-01T00:00:20Z"}),
                 (4, {"action": "fail", "User": "c"})]  # no timestamp: skipped and counted
        evaluator = build(rule)
        out = list(correlate_stream(evaluator, lines))
        assert [(line, m.rule.kind) for line, m in out] == [(2, "sigma"), (3, "correlation")]
        details = out[1][1].details
        assert details is not None and details["contributors"][0]["ref"] == 1
        assert details["group"] == {"User": "a"}
        assert evaluator.engine.counters["missing_timestamp"] == 1
        assert list(correlate_stream(build(rule), [])) == []


@pytest.mark.parametrize("text", [COUNT3, corr("""
  type: value_count
  rules: [failed]
  group-by: [User]
  timespan: 30s
  condition: {field: src, gte: 3}
""")])
def test_apply_keyed_is_process_keyed_then_release_of_the_records_time(text: str) -> None:
    """``state.scope: keyed`` stage 2 applies a record in one step (:meth:`apply_keyed`): the matches,
    counters and state of the two calls it stands for, on records in and out of order, late ones,
    records of unknown rules, with watermarks between them."""
    import dataclasses
    import random

    from detectors.correlation.engine import CorrelationEngine

    base = build(text).engine
    assert base is not None
    limits = dataclasses.replace(base.limits, allowed_lateness=10 * 365 * 86_400.0)
    one, two = (CorrelationEngine(base.specs, limits, keyed=True) for _ in range(2))
    spec = base.specs[0]
    rng = random.Random(5)
    ts = 1_764_113_000.0
    slow: list[int] = []
    process_keyed = one.process_keyed

    def counted(*args: Any) -> list[Match]:
        slow.append(1)
        return process_keyed(*args)

    one.process_keyed = counted  # type: ignore[method-assign, assignment]
    for i in range(400):
        ts += rng.choice([0.0, 0.5, 1.0, 3.0, 7.0, 40.0])
        at = ts - rng.choice([0.0, 0.0, 0.0, 2.0, 20.0])  # some behind the engine's time: late
        rules = [spec.slots[0].rule_id] if rng.random() < 0.9 else ["unknown-rule"]
        source = {"User": rng.choice(["alice", "bob", "carol"]), "src": f"10.0.0.{rng.randrange(5)}"}
        got = one.apply_keyed(spec.info.id, rules, source, at, f"e{i}")
        want = two.process_keyed(spec.info.id, rules, source, at, f"e{i}") + two.release(at)
        assert got == want, i
        if rng.random() < 0.1:
            mark = ts - rng.choice([0.0, 5.0, 60.0])
            assert one.release(mark) == two.release(mark)
        assert one.counters == two.counters and one.snapshot() == two.snapshot()
    assert len(slow) < 50 and one.counters.get("late", 0) > 10  # mostly the one step, and some late records
