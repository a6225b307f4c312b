"""Hostile inputs must neither raise nor stall: huge strings, deep nesting, regex blow-ups."""

from __future__ import annotations

import time
from typing import Any

from tests.support.sigma import agree, build, rule_yaml

RULES = build(
    rule_yaml({"sel_f": {"F|contains": ["needle", "a*b*c*d"]}, "sel_g": {"G|re": "(x+x+)+y"},
               "condition": "1 of sel*"}),
    rule_yaml({"sel": {"F|re": "^(a|aa)*$"}, "condition": "sel"}),
    rule_yaml({"keywords": ["zzz*yyy"], "condition": "keywords"}),
    rule_yaml({"sel": {"F|re": "(a)\\1b"}, "condition": "sel"}),
)


def timed(event: Any) -> float:
    start = time.perf_counter()
    agree(RULES, event)
    return time.perf_counter() - start


def test_huge_string_is_linear() -> None:
    big = "a" * 1_000_000
    assert timed({"F": big, "G": "x" * 100_000}) < 3.0


def test_python_regex_fallback_reads_long_values() -> None:
    """A long value is no way around a backtracking regex (it used to count as no match)."""
    long_value = "b" * 100_000 + "aab"
    assert [m.rule.title for m in agree(RULES, {"F": long_value})] == ["test rule"]
    assert [m.rule.title for m in agree(RULES, {"F": "xaab"})] == ["test rule"]
    assert agree(RULES, {"F": "b" * 100_000}) == []


def test_deep_nesting_does_not_recurse_forever() -> None:
    event: dict[str, Any] = {"F": "needle"}
    for _ in range(20_000):
        event = {"n": event}
    assert timed(event) < 2.0


def test_huge_list() -> None:
    assert timed({"F": ["x"] * 20_000 + ["needle"]}) < 3.0
    assert len(agree(RULES, {"F": ["x"] * 1000 + ["needle"]})) == 1


def test_odd_events() -> None:
    assert RULES.evaluate("not a mapping") == []  # type: ignore[arg-type]
    assert RULES.evaluate_naive(["x"]) == []  # type: ignore[arg-type]
    agree(RULES, {1: "needle", None: {"x": b"bytes"}, "F": float("nan"), "G": {"H": [[[]]]}})
    assert len(agree(RULES, {"F": "\x00needle\udcff"})) == 1
