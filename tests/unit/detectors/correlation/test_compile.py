"""Bad correlation rules give clear load errors; bad events give counted skips, never exceptions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule

from detectors.correlation import CorrelatingEvaluator, compile_correlations
from detectors.model import Match, RuleInfo
from detectors.sigma import RuleError, RuleText, compile_ruleset
from tests.support.rules import FAILED_LOGIN

BASE = FAILED_LOGIN + """"""


def corr(ident: str, name: str, rules: str, extra: str = "", timespan: str = "10s") -> str:
    return f"""---
title: Correlation {name}
id: {ident}
name: {name}
correlation:
  type: event_count
  rules: {rules}
  group-by: [User]
  timespan: {timespan}
  condition: {{gte: 2}}
{extra}"""


A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
C = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"


def load(text: str) -> tuple[list[RuleError], list[RuleError], Any]:
    result = compile_ruleset([RuleText("bad.yml", BASE + text, "test")])
    engine, errors = compile_correlations(result.ruleset)
    return result.errors, errors, engine


def reasons(errors: list[RuleError]) -> str:
    return " | ".join(f"{e.rule_id}: {e.reason}" for e in errors)


class TestLoadErrors:
    def test_unknown_rule_reference_is_a_load_error(self) -> None:
        load_errors, errors, engine = load(corr(A, "a", "[no_such_rule]"))
        assert "no_such_rule" in reasons(load_errors + errors)
        assert engine.specs == ()

    def test_unknown_reference_reported_by_compile_correlations_itself(self) -> None:
        # A ruleset whose loader did not resolve references: our own check names the reference.
        collection = SigmaCollection.from_yaml(BASE + corr(A, "a", "[failed, ghost]"), resolve_references=False)
        corr_rule = next(r for r in collection.rules if isinstance(r, SigmaCorrelationRule))

        @dataclass
        class Fake:
            rules: tuple[RuleInfo, ...]
            correlations: tuple[tuple[RuleInfo, SigmaCorrelationRule], ...]

        fake = Fake((RuleInfo(id="11111111-1111-4111-8111-111111111111", title="f", name="failed"),),
                    ((RuleInfo(id=A, title="a", kind="correlation", source="x.yml"), corr_rule),))
        engine, errors = compile_correlations(fake)
        assert len(errors) == 1 and "unknown rule reference 'ghost'" in errors[0].reason
        assert errors[0].rule_id == A and errors[0].source == "x.yml"
        assert engine.specs == ()

    def test_range_kept_by_the_loader_in_custom_attributes_is_used(self) -> None:
        # What a loader can do for the spec's "101 to 200" ranges, which pySigma's parser rejects:
        # give pySigma one operator and keep the whole mapping as a top-level custom attribute.
        text = corr(A, "a", "[failed]").replace("{gte: 2}", "{gt: 1}") + "correlation_condition: {gt: 1, lte: 2}\n"
        result = compile_ruleset([RuleText("r.yml", BASE + text, "test")])
        assert result.errors == []
        engine, errors = compile_correlations(result.ruleset)
        assert errors == [] and engine.specs[0].condition.describe() == "gt 1 and lte 2"
        assert engine.specs[0].deferred
        bad = text.replace("correlation_condition: {gt: 1, lte: 2}", "correlation_condition: {gt: 1, about: 2}")
        _, errors = compile_correlations(compile_ruleset([RuleText("r.yml", BASE + bad, "test")]).ruleset)
        assert "unknown condition operator 'about'" in reasons(errors)

    def test_cycle_is_reported_for_each_member_and_dependents_are_dropped(self) -> None:
        text = corr(A, "a", "[b]") + corr(B, "b", "[a]") + corr(C, "c", "[a]") + corr(
            "dddddddd-dddd-4ddd-8ddd-dddddddddddd", "d", "[failed]")
        load_errors, errors, engine = load(text)
        assert load_errors == []
        text_of = {e.rule_id: e.reason for e in errors}
        assert "cycle of correlations" in text_of[A] and "cycle of correlations" in text_of[B]
        assert "references invalid correlation" in text_of[C]
        assert [s.info.id for s in engine.specs] == ["dddddddd-dddd-4ddd-8ddd-dddddddddddd"]

    def test_self_reference_is_a_cycle(self) -> None:
        _, errors, engine = load(corr(A, "a", "[a]"))
        assert "references itself" in reasons(errors) and engine.specs == ()

    @pytest.mark.parametrize("timespan", ["10x", "0s", "-5m", "1h30", "1 h", "often"])
    def test_unparseable_timespan(self, timespan: str) -> None:
        load_errors, errors, engine = load(corr(A, "a", "[failed]", timespan=timespan))
        assert any("imespan" in e.reason for e in load_errors + errors), reasons(load_errors + errors)
        assert engine.specs == ()

    def test_extended_condition_is_rejected_clearly(self) -> None:
        text = f"""---
title: extended
id: {A}
correlation:
  type: temporal
  rules: [failed]
  group-by: [User]
  timespan: 10s
  condition: failed
"""
        load_errors, errors, engine = load(text)
        assert "extended" in reasons(load_errors + errors) and engine.specs == ()

    def test_alias_naming_an_unreferenced_rule(self) -> None:
        extra = "  aliases:\n    who:\n      other_rule: user.name\n"
        _, errors, engine = load(corr(A, "a", "[failed]", extra=extra))
        assert "alias 'who' maps rule 'other_rule'" in reasons(errors) and engine.specs == ()

    def test_value_type_without_field(self) -> None:
        text = corr(A, "a", "[failed]").replace("event_count", "value_count")
        load_errors, errors, engine = load(text)
        assert "field" in reasons(load_errors + errors) and engine.specs == ()

    def test_percentile_out_of_range(self) -> None:
        text = corr(A, "a", "[failed]").replace("event_count", "value_percentile").replace(
            "{gte: 2}", "{field: ms, percentile: 150, gte: 2}")
        _, errors, engine = load(text)
        assert "percentile 150" in reasons(errors) and engine.specs == ()

    def test_bad_correlation_does_not_take_good_ones_down(self) -> None:
        _, errors, engine = load(corr(A, "a", "[a]") + corr(B, "b", "[failed]"))
        assert len(errors) == 1 and [s.info.id for s in engine.specs] == [B]


class TestRunTimeSkips:
    @staticmethod
    def evaluator() -> CorrelatingEvaluator:
        result = compile_ruleset([RuleText("ok.yml", BASE + corr(A, "a", "[failed]"), "test")])
        engine, errors = compile_correlations(result.ruleset)
        assert errors == []
        return CorrelatingEvaluator(result.ruleset, engine)

    @pytest.mark.parametrize("ts", [None, math.nan, math.inf, True, "12:00"])
    def test_missing_or_invalid_timestamp_is_counted(self, ts: Any) -> None:
        evaluator = self.evaluator()
        assert evaluator.evaluate({"action": "fail", "User": "u"}, None, ts) == []
        assert evaluator.engine.counters["missing_timestamp"] == 1

    def test_missing_group_by_is_counted(self) -> None:
        evaluator = self.evaluator()
        for t in range(3):
            evaluator.evaluate({"action": "fail"}, None, float(t))
            evaluator.evaluate({"action": "fail", "User": None}, None, float(t))
            evaluator.evaluate({"action": "fail", "User": []}, None, float(t))
        assert evaluator.engine.counters["missing_group_by"] == 9
        assert evaluator.engine.active_keys() == 0

    def test_odd_group_values_do_not_crash(self) -> None:
        evaluator = self.evaluator()
        out: list[Match] = []
        for t, user in enumerate([{"n": 1}, {"n": 1}, ["x", "y"], ["x"], 3, 3.0, True, True]):
            out += evaluator.evaluate({"action": "fail", "User": user}, None, float(t))
        assert [m.details["group"]["User"] for m in out if m.details] == [{"n": 1}, "x", 3.0, True]  # a list groups by its first element

    def test_nan_group_values_share_one_group(self) -> None:
        evaluator = self.evaluator()
        out: list[Match] = []
        for t in range(2):
            out += evaluator.evaluate({"action": "fail", "User": math.nan}, None, float(t))
        assert len(out) == 1 and evaluator.engine.active_keys() == 1

    def test_events_not_matching_any_referenced_rule_cost_no_state(self) -> None:
        evaluator = self.evaluator()
        for t in range(100):
            evaluator.evaluate({"action": "other", "User": f"u{t}"}, None, float(t))
        assert evaluator.engine.active_keys() == 0
        assert not any(evaluator.engine.counters.values())
