"""One table of field paths x event shapes x time values, run through the three readers of an
event: the Python model (``detectors/event.py``), the Sigma engine and the native screen.

- The engine matches ``field: x`` exactly when the model's ``values`` hold ``x``, and the
  screen built for that rule never clears an event the engine matches; both with field names
  in any case (the default) and compared as spelled (``rules.field_names: sensitive``).
- For an event the screen clears, the time it reports is the model's ``event_time`` (or the
  fallback when the model finds none), with the default time fields.

Time fields the screen reads only in their exact spelling outside lists: another case, a list
(as the value or on the way) or a mixed flat/nested spelling hands the event to Python.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.event import DEFAULT_TIME_FIELDS, MAX_DEPTH, event_time, values
from detectors.model import LogSource
from detectors.sigma.screen import AVAILABLE
from service.sources.base import Item
from tests.support.sigma import build, rule_yaml

LS = LogSource(product="test")
FALLBACK_MS = 1_700_000_000_999


def _deep(depth: int, path: list[str], leaf: Any) -> dict[str, Any]:
    """``leaf`` under ``path``, itself under ``depth`` levels of ``{"d": ...}``."""
    node: Any = leaf
    for key in reversed(path):
        node = {key: node}
    for _ in range(depth):
        node = {"d": node}
    return dict(node)


# (rule field, event): the rule asks ``field: x``
FIELD_CASES: list[tuple[str, dict[str, Any]]] = [
    ("a.b", {"a": {"b": "x"}}),
    ("a.b", {"a.b": "x"}),
    ("a.b.c", {"a.b": {"c": "x"}}),
    ("a.b.c", {"a": {"b.c": "x"}}),
    ("a.b", {"A": {"B": "X"}}),
    ("A.B", {"a": {"b": "x"}}),
    ("a.b", {"a": {"b": ["y", "x"]}}),
    ("a.b", {"a": [{"b": "y"}, {"b": "x"}]}),
    ("a.b", {"a": [[{"b": "x"}]]}),
    ("a.b", {"a.b": None, "a": {"b": "x"}}),
    ("a.b", {"a.b": "y", "a": {"b": "x"}}),
    ("a.b", {"a": {"b": "y"}}),
    ("a.b", {"a": {"c": "x"}}),
    ("a.b", {"a": "x"}),
    ("a.b", {"a": {"b": {"c": "x"}}}),
    ("a", {"a": []}),
    ("User", {"user": "x"}),
    ("User", {"User": "y", "user": "x"}),
    ("user", {"User": "x", "user": "y"}),
    ("a.B", {"a": {"B": "x"}}),
    ("a.B", {"a.B": "x"}),
    ("a.B.c", {"a.B": {"c": "x"}}),
    ("a.B", {"A": {"B": "x"}}),
    ("a.B", {"a.b": "x"}),
    ("d." * 20 + "a.b", _deep(20, ["a", "b"], "x")),
    ("d." * (MAX_DEPTH - 1) + "a", _deep(MAX_DEPTH - 1, ["a"], "x")),
]


@pytest.mark.parametrize("cased", [False, True], ids=["insensitive", "sensitive"])
@pytest.mark.parametrize(("field", "event"), FIELD_CASES)
def test_engine_and_screen_read_fields_as_the_model(field: str, event: dict[str, Any], cased: bool) -> None:
    ruleset = build(rule_yaml({"sel": {field: "x"}, "condition": "sel"}), cased_fields=cased)
    expected = any(type(v) is str and v.lower() == "x" for v in values(event, field, cased))
    assert bool(ruleset.evaluate(event, LS)) == expected
    screen = ruleset.screen(LS) if AVAILABLE else None
    if screen is not None:
        picked, _, decisions = screen.decide([orjson.dumps(event)], [0], None, 1 << 20, 64)
        if expected:
            assert picked == [0], "the screen cleared an event the engine matches"
        if picked and decisions[0] is not None:
            matched, undecided = decisions[0][:2]
            assert undecided or bool(matched) == expected, "the screen decided otherwise than the engine"


ISO = "2024-01-01T00:00:00Z"
T0 = 1704067200.0

# events whose time the screen and the model must read alike (none matches the rule)
TIME_CASES: list[dict[str, Any]] = [
    {"@timestamp": ISO},
    {"@timestamp": "2024-01-01T01:00:00+01:00"},
    {"@timestamp": "2024-01-01 00:00:00"},
    {"@timestamp": T0},
    {"@timestamp": T0 * 1000},
    {"timestamp": int(T0)},
    {"ts": ISO},
    {"event": {"created": ISO}},
    {"event.created": ISO},
    {"event.created": None, "event": {"created": ISO}},
    {"UtcTime": "2024-01-01 00:00:00.000"},
    {"@timestamp": None, "time": T0},
    {"@timestamp": True, "time": T0},
    {"@timestamp": {"x": 1}, "ts": T0},
    {"@timestamp": -1, "ts": T0},
    {"@timestamp": "1969-12-31T23:59:59Z"},
    {"msg": "no time"},
    {"time": "yesterday"},
]

# the screen hands these to Python, which reads them as the model does
PYTHON_TIME_CASES: list[dict[str, Any]] = [
    {"event": {"created": [ISO]}},
    {"@timestamp": [ISO, "2025-01-01T00:00:00Z"]},
    {"event": [{"created": ISO}]},
    {"Timestamp": ISO},
    {"utctime": "2024-01-01 00:00:00"},
    {"Event": {"Created": T0}},
    {"": {"ts": T0}},
]


@pytest.mark.parametrize("event", TIME_CASES + PYTHON_TIME_CASES)
def test_model_and_input_read_one_time(event: dict[str, Any]) -> None:
    ts = event_time(event, DEFAULT_TIME_FIELDS)
    item = Item(event, ("t", 0, 0), LS, DEFAULT_TIME_FIELDS, FALLBACK_MS / 1000)
    assert item.time() == (FALLBACK_MS / 1000 if ts is None else ts)


@pytest.mark.skipif(not AVAILABLE, reason="the native screen is not built (no Rust toolchain)")
@pytest.mark.parametrize("event", TIME_CASES + PYTHON_TIME_CASES)
def test_screen_reports_the_model_time(event: dict[str, Any]) -> None:
    screen = build(rule_yaml({"sel": {"never.here": "x"}, "condition": "sel"})).screen(LS)
    assert screen is not None
    picked, latest = screen.scan([orjson.dumps(event)], [FALLBACK_MS], list(DEFAULT_TIME_FIELDS), 1 << 20, 64)
    if picked:  # handed to Python, which reads the time itself
        return
    assert event not in PYTHON_TIME_CASES, "the screen read a time spelled in a way it does not read"
    ts = event_time(event, DEFAULT_TIME_FIELDS)
    assert latest == [FALLBACK_MS / 1000 if ts is None else ts]


_KEYS = st.sampled_from(["a", "A", "b", "a.b", "A.B", "c", "ts", "Ts", "event", "created", "event.created"])
_LEAVES = st.none() | st.booleans() | st.integers(0, 3) | st.sampled_from(["x", "X", "y", ISO, "1704067200"])
_VALUES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
                       max_leaves=10)
_EVENTS = st.dictionaries(_KEYS, _VALUES, max_size=4)
_RULES: dict[tuple[str, bool], Any] = {}


def _ruleset(field: str, cased: bool) -> Any:
    if (field, cased) not in _RULES:
        _RULES[field, cased] = build(rule_yaml({"sel": {field: "x"}, "condition": "sel"}), cased_fields=cased)
    return _RULES[field, cased]


@settings(max_examples=300, deadline=None)
@given(_EVENTS, st.sampled_from(["a", "a.b", "A.B", "b", "event.created", "c", "Ts"]), st.booleans())
def test_random_events_read_alike(event: dict[str, Any], field: str, cased: bool) -> None:
    ruleset = _ruleset(field, cased)
    expected = any(type(v) is str and v.lower() == "x" for v in values(event, field, cased))
    assert bool(ruleset.evaluate(event, LS)) == expected
    screen = ruleset.screen(LS) if AVAILABLE else None
    if screen is None:
        return
    picked, latest, decisions = screen.decide([orjson.dumps(event)], [FALLBACK_MS], list(DEFAULT_TIME_FIELDS),
                                              1 << 20, 64)
    if expected:
        assert picked == [0], "the screen cleared an event the engine matches"
    if picked and decisions[0] is not None:
        matched, undecided = decisions[0][:2]
        assert undecided or bool(matched) == expected, "the screen decided otherwise than the engine"
    elif not picked:
        ts = event_time(event, DEFAULT_TIME_FIELDS)
        assert latest == [FALLBACK_MS / 1000 if ts is None else ts]

