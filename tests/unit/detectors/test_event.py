"""The event model (``detectors/event.py``): one field lookup and one event-time reader for
every consumer, and the inputs' defaults taken from it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.alert import Alert
from detectors.event import (
    DEFAULT_TIME_FIELDS,
    MAX_DEPTH,
    MISSING,
    event_time,
    flatten,
    get,
    parse_timestamp,
    to_epoch,
    values,
)
from detectors.model import LogSource, Origin
from service.config import EventSettings
from service.sources.base import Item

T0 = 1704067200.0  # 2024-01-01T00:00:00Z


def _run_time(event: dict[str, Any], fallback: float = 1.0) -> float:
    """The time ``pipesentry run`` gives an event on an input with the default settings."""
    return Item(event, Origin("x"), LogSource(), tuple(EventSettings().timestamp_fields), fallback).time()


# -- the consequence named in the issue: eval and run read one event's time alike -----------

@pytest.mark.parametrize("event", [
    {"ts": "2024-01-01T00:00:00Z", "msg": "a"},
    {"event": {"created": ["2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"]}},
    {"event.created": ["2024-01-01T00:00:00Z"]},
    {"UtcTime": "2024-01-01 00:00:00"},
    {"@timestamp": ["2024-01-01T00:00:00Z"]},
    {"Timestamp": T0},
    {"@timestamp": None, "time": T0},
    {"event": {"created": None}, "event.created": T0},
])
def test_run_reads_the_event_time_eval_reads(event: dict[str, Any]) -> None:
    assert event_time(event) == T0
    assert _run_time(event) == T0


def test_missing_or_unreadable_time_falls_back() -> None:
    assert event_time({"msg": "x"}) is None
    assert _run_time({"msg": "x"}, 7.0) == 7.0
    assert _run_time({"ts": "yesterday", "time": [None, True]}, 7.0) == 7.0


def test_config_default_is_the_model_list() -> None:
    assert tuple(EventSettings().timestamp_fields) == DEFAULT_TIME_FIELDS


def test_first_usable_field_in_order() -> None:
    assert event_time({"@timestamp": "2024-01-01T00:00:00Z", "ts": 5}) == T0
    assert event_time({"@timestamp": "junk", "ts": 5}) == 5.0
    assert event_time({"when": 9}, fields=("when",)) == 9.0


@pytest.mark.parametrize("value, expected", [
    ("2026-01-02T03:04:05Z", 1767323045.0),
    ("2026-01-02T03:04:05.250+01:00", 1767319445.25),
    ("2026-01-02 03:04:05", 1767323045.0),
    (1767323045, 1767323045.0),
    (1767323045250, 1767323045.25),
    ("1767323045.5", 1767323045.5),
    ("yesterday", None), (True, None), (None, None), (-5, None), (float("nan"), None),
    ("1969-12-31T23:59:59Z", None), (1e20, None), ({"a": 1}, None),
])
def test_to_epoch(value: Any, expected: float | None) -> None:
    assert to_epoch(value) == expected
    assert to_epoch(value) == expected  # the one-entry cache answers the same


# -- field lookup -------------------------------------------------------------------------

def test_get_rules() -> None:
    event = {"host.name": "flat", "host": {"name": "nested", "ip": ["1.2.3.4", "5.6.7.8"]}, "n": 0,
             "User": "Admin", "tags": [], "nil": None, "objs": [{"k": None}, {"k": "v"}]}
    assert get(event, "host.name") == "flat"  # the literal key wins over nesting
    assert get({"host": {"name": "nested"}}, "host.name") == "nested"
    assert get({"host.name": None, "host": {"name": "nested"}}, "host.name") == "nested"  # null is absence
    assert get(event, "host.ip") == "1.2.3.4"  # a list gives its first element
    assert get(event, "n") == 0
    assert get(event, "user") == "Admin"  # field names are case-insensitive
    assert get({"user": "a", "User": "b"}, "User") == "b"  # the exact spelling first
    assert get(event, "objs.k") == "v"  # lists of objects are walked; nulls skipped
    assert get({"a.b": {"c": 2}, "a": {"b.c": 1}}, "a.b.c") == 1  # split at the first dot first
    for absent in ("host.name.x", "missing.path", "tags", "nil"):
        assert get(event, absent) is MISSING
    assert get(None, "x") is MISSING


def test_values_rules() -> None:
    event = {"a.b": 1, "A": {"B": [2, {"c": 3}], "b.c": 4}}
    assert values(event, "a.b") == [1, 2, {"c": 3}]
    assert values(event, "A.B.C") == [3, 4]
    assert values({"tags": []}, "tags") == []


def test_cased_readers_take_keys_as_spelled() -> None:
    """``rules.field_names: sensitive``: no other case, nested and flat-dot spellings still alike."""
    event = {"User": "a", "user": "b", "Host": {"Name": "n1"}, "host.Name": "n2", "HOST": {"name": "n3"}}
    flat = flatten(event, cased=True)
    assert flat["User"] == ["a"] and flat["user"] == ["b"] and flat["Host.Name"] == ["n1"]
    assert flat["host.Name"] == ["n2"] and flat["HOST.name"] == ["n3"] and "host.name" not in flat
    assert values(event, "User", cased=True) == ["a"]
    assert values(event, "USER", cased=True) == []
    assert values(event, "Host.Name", cased=True) == ["n1"]
    assert values({"a.B": {"c": 1}, "a": {"B.c": 2, "b.c": 3}}, "a.B.c", cased=True) == [1, 2]
    assert get(event, "user", cased=True) == "b"
    assert get(event, "USER", cased=True) is MISSING
    assert get(event, "Host.Name", cased=True) == "n1"
    assert get({"Host": {"name": "x"}}, "host.name", cased=True) is MISSING
    assert get({"a": [{"B": None}, {"B": 2}]}, "a.B", cased=True) == 2
    assert event_time({"TS": 1704067200}, ("ts",), cased=True) is None
    assert event_time({"TS": 1704067200, "ts": "x", "Ts": 5}, ("TS", "ts")) == 1704067200.0
    assert event_time({"ts": "x", "TS": 1704067200}, ("ts", "TS"), cased=True) == 1704067200.0


def _nest(depth: int, leaf: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"a": leaf}
    for _ in range(depth):
        event = {"a": event}
    return event


def test_depth_limit_is_the_same_for_every_reader() -> None:
    path = ".".join(["a"] * (MAX_DEPTH + 1))
    assert values(_nest(MAX_DEPTH, "x"), path) == ["x"] == flatten(_nest(MAX_DEPTH, "x"))[path]
    assert get(_nest(MAX_DEPTH, "x"), path) == "x"
    deeper = path + ".a"
    assert values(_nest(MAX_DEPTH + 1, "x"), deeper) == [] and deeper not in flatten(_nest(MAX_DEPTH + 1, "x"))
    assert get(_nest(MAX_DEPTH + 1, "x"), deeper) is MISSING


def test_alert_matching_reads_fields_through_the_model() -> None:
    from service.alerting.matching import field_value, fields_match

    event = {"Host": {"Name": "web-1", "ip": ["10.0.0.1", "10.0.0.2"]}, "tags": [{"t": "prod"}]}
    alert = Alert.__new__(Alert)
    object.__setattr__(alert, "event", event)
    object.__setattr__(alert, "matched", (("rule.only", "m"),))
    assert field_value(alert, "host.name") == "web-1"
    assert field_value(alert, "host.ip") == "10.0.0.1"
    assert field_value(alert, "rule.only") == "m"
    assert field_value(alert, "absent") is None
    assert fields_match(alert, {"host.ip": "10.0.0.2"})  # any element matches
    assert fields_match(alert, {"tags.t": "prod"})
    assert fields_match(alert, {"rule.only": "m"})
    assert not fields_match(alert, {"absent": "x"})
    assert fields_match(alert, {"absent": ""})


# -- the lookup is defined by the Sigma engine's flattening ---------------------------------

_KEYS = st.sampled_from(["a", "A", "b", "a.b", "A.b", "", "a.", "c", "ts"])
_LEAVES = st.none() | st.booleans() | st.integers(-2, 3) | st.sampled_from(["x", "Y", "2024-01-01T00:00:00Z", "1e3"])
_VALUES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
                       max_leaves=12)
_EVENTS = st.dictionaries(_KEYS, _VALUES, max_size=4)
_PATHS = st.sampled_from(["a", "A", "a.b", "A.B", "b", "", "a.", "a..b", ".a", "a.b.b", "a.a", "c", "TS"])


@settings(max_examples=600, deadline=None)
@given(_EVENTS, _PATHS)
def test_values_and_get_agree_with_flatten(event: dict[str, Any], path: str) -> None:
    want = flatten(event).get(path.lower(), [])
    got = values(event, path)
    assert len(got) == len(want) and all(g is w or g == w for g, w in zip(got, want, strict=True))
    one = get(event, path)
    if all(v is None for v in want):
        assert one is MISSING
    else:
        assert any(one is v for v in want)


@settings(max_examples=600, deadline=None)
@given(_EVENTS, _PATHS)
def test_cased_values_and_get_agree_with_cased_flatten(event: dict[str, Any], path: str) -> None:
    want = flatten(event, cased=True).get(path, [])
    got = values(event, path, cased=True)
    assert len(got) == len(want) and all(g is w or g == w for g, w in zip(got, want, strict=True))
    one = get(event, path, cased=True)
    if all(v is None for v in want):
        assert one is MISSING
    else:
        assert any(one is v for v in want)


@settings(max_examples=300, deadline=None)
@given(_EVENTS, st.booleans())
def test_event_time_is_the_first_readable_field(event: dict[str, Any], cased: bool) -> None:
    fields = ("ts", "A.b", "c", "a.")
    expected = None
    for name in fields:
        one = get(event, name, cased)
        if one is not MISSING and to_epoch(one) is not None:
            expected = parse_timestamp(one)
            break
    assert event_time(event, fields, cased) == expected

