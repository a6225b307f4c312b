"""Value matching from the Sigma rules specification: strings, wildcards, escaping, null, numbers, fields."""

from __future__ import annotations

import pytest

from tests.support.sigma import hit


def sel(field: str, value: object) -> dict[str, object]:
    return {"sel": {field: value}, "condition": "sel"}


@pytest.mark.parametrize(("value", "event", "expected"), [
    ("cmd.exe", "CMD.EXE", True),           # case-insensitive by default
    ("cmd.exe", "xcmd.exe", False),          # whole-value match without wildcards
    ("cmd*", "cmd.exe", True),
    ("*.exe", "C:\\cmd.exe", True),
    ("*md.e*", "cmd.exe", True),
    ("c?d.exe", "cmd.exe", True),
    ("c?d.exe", "cmmd.exe", False),
    ("a*b*c", "a--B--c", True),
    ("a*b*c", "a--c--b", False),
    ("", "", True),
    ("", "x", False),
    ("*", "anything", True),
])
def test_strings_and_wildcards(value: str, event: str, expected: bool) -> None:
    assert hit(sel("F", value), {"F": event}) is expected


@pytest.mark.parametrize(("value", "event", "expected"), [
    ("a\\*b", "a*b", True),                  # escaped wildcard is a plain character
    ("a\\*b", "axxb", False),
    ("a\\?b", "a?b", True),
    ("a\\?b", "axb", False),
    ("C:\\Windows\\x", "c:\\windows\\x", True),  # a lone backslash is literal
    ("C:\\\\Windows", "C:\\Windows", True),  # double backslash before a plain char: one backslash
    ("dir\\\\*", "dir\\anything", True),     # escaped backslash followed by a real wildcard
    ("dir\\\\*", "dirX", False),
    ("a\\\\\\*", "a\\*", True),              # three backslashes + star: backslash and star, plain
    ("a\\\\\\*", "a\\xyz", False),
    ("a\\\\\\\\b", "a\\\\b", True),          # four backslashes: two plain backslashes
])
def test_escaping(value: str, event: str, expected: bool) -> None:
    assert hit(sel("F", value), {"F": event}) is expected


def test_list_is_or_and_map_is_and() -> None:
    det = {"sel": {"A": ["x", "y"], "B": "z"}, "condition": "sel"}
    assert hit(det, {"A": "y", "B": "z"})
    assert not hit(det, {"A": "y", "B": "q"})
    assert not hit(det, {"A": "w", "B": "z"})


def test_list_of_maps_is_or() -> None:
    det = {"sel": [{"A": "x", "B": "1"}, {"C": "z"}], "condition": "sel"}
    assert hit(det, {"A": "x", "B": "1"})
    assert hit(det, {"C": "z"})
    assert not hit(det, {"A": "x"})


@pytest.mark.parametrize(("event", "expected"), [
    ({}, True), ({"F": None}, True), ({"F": ""}, False), ({"F": "x"}, False), ({"F": [None]}, True),
])
def test_null(event: dict[str, object], expected: bool) -> None:
    assert hit(sel("F", None), event) is expected


@pytest.mark.parametrize(("event", "expected"), [({"F": ""}, True), ({}, False), ({"F": None}, False)])
def test_empty_string(event: dict[str, object], expected: bool) -> None:
    assert hit(sel("F", ""), event) is expected


@pytest.mark.parametrize(("event", "expected"), [
    ({"F": 4}, True), ({"F": "4"}, True), ({"F": 4.0}, True), ({"F": "04"}, False), ({"F": 5}, False),
    ({"F": True}, False),
])
def test_numbers(event: dict[str, object], expected: bool) -> None:
    assert hit(sel("F", 4), event) is expected


@pytest.mark.parametrize(("event", "expected"), [
    ({"F": True}, True), ({"F": "true"}, True), ({"F": "TRUE"}, True), ({"F": False}, False), ({"F": 1}, False),
])
def test_booleans(event: dict[str, object], expected: bool) -> None:
    assert hit(sel("F", True), event) is expected


def test_string_rule_value_matches_number_event_value() -> None:
    assert hit(sel("EventID", "4688"), {"EventID": 4688})


@pytest.mark.parametrize("event", [
    {"a": {"b": {"c": "x"}}},
    {"a.b.c": "x"},
    {"a.b": {"c": "x"}},
    {"a": {"b.c": "x"}},
    {"A": {"B": {"C": "X"}}},      # field names are case-insensitive
    {"a": [{"b": {"c": "y"}}, {"b": {"c": "x"}}]},
    {"a": {"b": {"c": ["y", "x"]}}},
])
def test_nested_dotted_and_list_fields(event: dict[str, object]) -> None:
    assert hit(sel("a.b.c", "x"), event)


# (detection, event, matches with field names in any case, matches with field names as spelled)
FIELD_NAME_CASES: list[tuple[dict[str, object], dict[str, object], bool, bool]] = [
    (sel("User", "x"), {"User": "x"}, True, True),
    (sel("User", "x"), {"user": "X"}, True, False),
    (sel("User", "x"), {"USER": "y", "user": "x"}, True, False),
    (sel("a.B.c", "x"), {"a": {"B": {"c": "x"}}}, True, True),
    (sel("a.B.c", "x"), {"a.B": {"c": "x"}}, True, True),       # flat-dot and nested spellings still alike
    (sel("a.B.c", "x"), {"a": {"B.c": "x"}}, True, True),
    (sel("a.B.c", "x"), {"A": {"b": {"C": "x"}}}, True, False),
    (sel("a.B.c", "x"), {"a.b.c": "x"}, True, False),
    (sel("User", None), {"user": "x"}, False, True),            # null: absent in that spelling
    (sel("User|exists", True), {"user": "x"}, True, False),
    (sel("User|exists", False), {"user": "x"}, False, True),
    (sel("A|fieldref", "B"), {"A": "s", "b": "s"}, True, False),
    (sel("A|fieldref", "B"), {"A": "s", "B": "s", "b": "t"}, True, True),
    (sel("A|neq", "x"), {"a": "x"}, False, True),
    ({"sel": {"U": "x"}, "f": {"Image|endswith": ".exe"}, "condition": "sel and not f"},
     {"U": "x", "image": "a.exe"}, False, True),                 # a filter misses another case
    ({"kw": ["Needle"], "condition": "kw"}, {"MSG": "a needle"}, True, True),  # keywords: no field
]


@pytest.mark.parametrize(("detection", "event", "insensitive", "sensitive"), FIELD_NAME_CASES)
def test_field_name_case(detection: dict[str, object], event: dict[str, object], insensitive: bool,
                         sensitive: bool) -> None:
    """``rules.field_names``: ``insensitive`` (the default) and ``sensitive``."""
    assert hit(detection, event) is insensitive
    assert hit(detection, event, cased_fields=True) is sensitive


def test_nested_field_no_false_match() -> None:
    assert not hit(sel("a.b.c", "x"), {"a": {"b": {"d": "x"}}, "c": "x"})


def test_list_value_not_semantics() -> None:
    # "not sel" is true only when no element matches
    det = {"sel": {"tags": "x"}, "condition": "not sel"}
    assert not hit(det, {"tags": ["y", "x"]})
    assert hit(det, {"tags": ["y", "z"]})
    assert hit(det, {})


def test_keywords_search_all_strings() -> None:
    det = {"keywords": ["event::clear", "drop*table"], "condition": "keywords"}
    assert hit(det, {"msg": "running Event::Clear now"})
    assert hit(det, {"a": {"b": ["x", "please drop the table"]}})
    assert not hit(det, {"msg": "nothing"})
    assert not hit(det, {"n": 1})


def test_keywords_all() -> None:
    det = {"keywords": {"|all": ["OabVirtualDirectory", " -ExternalUrl "]}, "condition": "keywords"}
    assert hit(det, {"a": "Set-OabVirtualDirectory -ExternalUrl http://x"})
    assert hit(det, {"a": "OabVirtualDirectory", "b": "x -ExternalUrl y"})
    assert not hit(det, {"a": "OabVirtualDirectory"})


def test_keywords_with_fields() -> None:
    det = {"sel": {"F": "x"}, "keywords": ["needle"], "condition": "sel and keywords"}
    assert hit(det, {"F": "x", "G": "a needle here"})
    assert not hit(det, {"F": "y", "G": "a needle here"})
