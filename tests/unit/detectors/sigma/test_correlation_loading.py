"""The loader adapts spec-valid correlation documents that pySigma 1.5 reads differently.

Two spec features: ``generate`` at the document's top level (pySigma reads it only
inside ``correlation:``) and range conditions such as ``{gt: 1, lte: 3}`` (pySigma
accepts one operator). Both are checked end to end: ``compile_ruleset`` ->
``compile_correlations`` -> ``CorrelatingEvaluator``.
"""

from __future__ import annotations

from typing import Any

from detectors.correlation import CorrelatingEvaluator, compile_correlations
from detectors.model import Match
from detectors.sigma import RuleText, compile_ruleset
from tests.support.rules import FAILED_LOGIN

BASE = FAILED_LOGIN + """---
"""

CORR = """title: Many failures
id: aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa
{top}correlation:
  type: event_count
  rules: [failed]
  group-by: [User]
  timespan: 10s
  condition: {condition}
"""


def evaluator(condition: str, top: str = "") -> CorrelatingEvaluator:
    result = compile_ruleset([RuleText("c.yml", BASE + CORR.format(top=top, condition=condition), "test")])
    assert result.errors == []
    engine, errors = compile_correlations(result.ruleset)
    assert errors == [] and len(engine.specs) == 1
    return CorrelatingEvaluator(result.ruleset, engine)


def feed(ev: CorrelatingEvaluator, count: int, user: str = "alice", start: float = 0.0) -> list[Match]:
    out: list[Match] = []
    for i in range(count):
        out += ev.evaluate({"action": "fail", "User": user}, None, start + i, ref=f"{user}{i}")
    return out + close(ev)


def close(ev: CorrelatingEvaluator) -> list[Match]:
    """An unrelated event far later: deferred windows (ranges) are decided when event time passes them."""
    return ev.evaluate({"action": "other"}, None, 1000.0) + ev.flush()


def kinds(matches: list[Match]) -> list[str]:
    return [m.rule.kind for m in matches]


class TestRangeCondition:
    def test_range_is_kept_whole_and_pysigma_gets_the_first_operator(self) -> None:
        result = compile_ruleset([RuleText("c.yml", BASE + CORR.format(top="", condition="{gt: 1, lte: 3}"), "test")])
        assert result.errors == []
        (_, rule), = result.ruleset.correlations
        assert rule.custom_attributes["correlation_condition"] == {"gt": 1, "lte": 3}
        assert rule.condition.op.name.lower() == "gt" and rule.condition.count == 1
        engine, _ = compile_correlations(result.ruleset)
        assert engine.specs[0].condition.describe() == "gt 1 and lte 3"

    def test_range_fires_inside_and_not_outside_the_bounds(self) -> None:
        def alerts(count: int) -> int:
            return kinds(feed(evaluator("{gt: 1, lte: 3}"), count)).count("correlation")

        assert [alerts(n) for n in (1, 2, 3, 4, 5)] == [0, 1, 1, 0, 0]

    def test_range_keeps_field_for_value_count(self) -> None:
        text = BASE + CORR.format(top="", condition="{field: Host, gte: 2, lt: 3}").replace(
            "event_count", "value_count")
        result = compile_ruleset([RuleText("c.yml", text, "test")])
        assert result.errors == []
        engine, errors = compile_correlations(result.ruleset)
        assert errors == [] and engine.specs[0].value_field == ("Host",)
        ev = CorrelatingEvaluator(result.ruleset, engine)
        hosts = ["h1", "h2", "h2"]
        out = [m for i, h in enumerate(hosts)
               for m in ev.evaluate({"action": "fail", "User": "bob", "Host": h}, None, float(i))]
        out += close(ev)
        assert kinds(out).count("correlation") == 1

    def test_single_operator_is_left_alone(self) -> None:
        result = compile_ruleset([RuleText("c.yml", BASE + CORR.format(top="", condition="{gte: 2}"), "test")])
        (_, rule), = result.ruleset.correlations
        assert "correlation_condition" not in (rule.custom_attributes or {})
        assert kinds(feed(evaluator("{gte: 2}"), 2)).count("correlation") == 1


class TestTopLevelGenerate:
    def test_without_generate_base_matches_are_suppressed(self) -> None:
        out = feed(evaluator("{gte: 2}"), 2)
        assert kinds(out) == ["correlation"]

    def test_top_level_generate_true_keeps_base_matches(self) -> None:
        out = feed(evaluator("{gte: 2}", top="generate: true\n"), 2)
        assert sorted(kinds(out)) == ["correlation", "sigma", "sigma"]

    def test_generate_inside_correlation_wins(self) -> None:
        text = BASE + CORR.format(top="generate: true\n", condition="{gte: 2}") + "  generate: false\n"
        result = compile_ruleset([RuleText("c.yml", text, "test")])
        assert result.errors == []
        (_, rule), = result.ruleset.correlations
        assert rule.generate is False

    def test_non_boolean_top_level_generate_is_a_load_error(self) -> None:
        text = BASE + CORR.format(top="generate: maybe\n", condition="{gte: 2}")
        errors: Any = compile_ruleset([RuleText("c.yml", text, "test")]).errors
        assert any("generate" in e.reason for e in errors)
