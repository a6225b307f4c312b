"""Condition grammar: and/or/not precedence, parentheses, 'x of' selectors, 'them'."""

from __future__ import annotations

import pytest

from tests.support.sigma import hit

DETECTIONS = {"a": {"A": "1"}, "b": {"B": "1"}, "c": {"C": "1"}}


def ev(*names: str) -> dict[str, str]:
    return {n.upper(): "1" for n in names}


@pytest.mark.parametrize(("condition", "event", "expected"), [
    ("a and b", ev("a", "b"), True),
    ("a and b", ev("a"), False),
    ("a or b", ev("b"), True),
    ("not a", ev("b"), True),
    ("not a", ev("a"), False),
    # not binds tighter than and, and tighter than or
    ("a or b and c", ev("a"), True),
    ("a or b and c", ev("b"), False),
    ("(a or b) and c", ev("a"), False),
    ("(a or b) and c", ev("a", "c"), True),
    ("not a and b", ev("b"), True),
    ("not a and b", ev("a", "b"), False),
    ("not (a and b)", ev("a"), True),
    ("not (a and b)", ev("a", "b"), False),
    ("a and not b or c", ev("c", "b"), True),
    ("a and not b or c", ev("a", "b"), False),
    ("not not a", ev("a"), True),
    ("((a))", ev("a"), True),
])
def test_boolean_operators(condition: str, event: dict[str, str], expected: bool) -> None:
    assert hit({**DETECTIONS, "condition": condition}, event) is expected


SELECTORS = {"sel_x": {"X": "1"}, "sel_y": {"Y": "1"}, "filter_z": {"Z": "1"}}


@pytest.mark.parametrize(("condition", "event", "expected"), [
    ("1 of sel_*", {"Y": "1"}, True),
    ("1 of sel_*", {"Z": "1"}, False),
    ("all of sel_*", {"X": "1"}, False),
    ("all of sel_*", {"X": "1", "Y": "1"}, True),
    ("any of sel_*", {"X": "1"}, True),
    ("1 of them", {"Z": "1"}, True),
    ("all of them", {"X": "1", "Y": "1"}, False),
    ("all of them", {"X": "1", "Y": "1", "Z": "1"}, True),
    ("1 of sel_* and not 1 of filter_*", {"X": "1"}, True),
    ("1 of sel_* and not 1 of filter_*", {"X": "1", "Z": "1"}, False),
])
def test_selectors(condition: str, event: dict[str, str], expected: bool) -> None:
    assert hit({**SELECTORS, "condition": condition}, event) is expected


def test_them_excludes_underscore_identifiers() -> None:
    det = {"sel": {"X": "1"}, "_helper": {"H": "1"}, "condition": "all of them"}
    assert hit(det, {"X": "1"})
    det_one = {"sel": {"X": "1"}, "_helper": {"H": "1"}, "condition": "1 of them"}
    assert not hit(det_one, {"H": "1"})


def test_condition_list_means_any() -> None:
    det = {"a": {"A": "1"}, "b": {"B": "1"}, "condition": ["a", "b"]}
    assert hit(det, {"B": "1"})
    assert not hit(det, {"C": "1"})


def test_negation_only_rule_fires_without_any_true_item() -> None:
    assert hit({"f": {"A": "x"}, "condition": "not f"}, {"B": "y"})
