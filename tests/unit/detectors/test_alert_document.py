"""``Alert.to_document`` against a plain rendering: a rule's parts are built once and reused, so a
document must equal one built from scratch, byte for byte, and a change to one document (the router
sets ``suppressed_count``, sinks may add fields) must never show in another alert's."""

from __future__ import annotations

import copy
import functools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import detectors.alert as alert_module
from detectors.alert import MAX_MATCHED_FIELDS, Alert, _shown, build_alert, iso_time
from detectors.entities import RESERVED, place
from detectors.model import LogSource, Match, Origin, RuleInfo


def plain_place(doc: dict[str, Any], entities: tuple[tuple[str, Any], ...]) -> None:
    """:func:`place` as a plain walk: ``setdefault`` at every step."""
    for name, value in entities:
        if name in RESERVED:
            continue
        *parents, leaf = name.split(".")
        node = doc
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node.setdefault(leaf, value)


def plain_document(alert: Alert) -> dict[str, Any]:
    """The document built field by field from the alert's public attributes, nothing reused."""
    rule = alert.rule
    origin: dict[str, Any] = {"input": alert.origin.input, "token": alert.origin.token()}
    for key in ("topic", "partition", "offset", "key"):
        if getattr(alert.origin, key) is not None:
            origin[key] = getattr(alert.origin, key)
    doc: dict[str, Any] = {
        "@timestamp": iso_time(alert.timestamp),
        "message": alert.summary(),
        "event": {"kind": "alert", "id": alert.id, "created": iso_time(alert.created), "severity": alert.severity,
                  "original": alert.original},
        "rule": {"id": rule.id, "uuid": rule.id, "name": rule.title, "description": rule.description,
                 "author": rule.author or "unknown", "reference": list(rule.references),
                 "version": rule.modified or rule.date or "", "ruleset": rule.ruleset, "license": rule.license or "",
                 "category": rule.kind},
        "tags": list(rule.tags),
        "pipesentry": {
            "alert_id": alert.id, "origin": origin, "logsource": alert.logsource.as_dict(), "level": alert.level,
            "severity_label": alert.level, "rule_kind": rule.kind, "rule_status": rule.status or "",
            "rule_source": rule.source, "falsepositives": list(rule.falsepositives),
            "matched": [{"field": n, "value": _shown(v)} for n, v in alert.matched[:MAX_MATCHED_FIELDS]],
            "original_truncated": alert.truncated, "original_size": alert.original_size, "suppressed_count": 0,
        },
    }
    plain_place(doc, alert.entities)
    if alert.threat:
        doc["threat"] = alert.threat.to_ecs()
    if alert.details:
        doc["pipesentry"]["details"] = orjson.loads(orjson.dumps(dict(alert.details), default=str,
                                                                 option=orjson.OPT_NON_STR_KEYS))
    return doc


def scribble(value: Any) -> None:
    """Change every container reachable from ``value`` in place (what a careless sink could do)."""
    if isinstance(value, dict):
        for inner in list(value.values()):
            scribble(inner)
        value["scribbled"] = True
    elif isinstance(value, list):
        for inner in value:
            scribble(inner)
        value.append("scribbled")


def dumped(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


TEXT = st.text(max_size=12)
TAGS = st.lists(st.sampled_from(["attack.execution", "attack.t1059.004", "attack.t1552", "attack.g0032",
                                 "attack.s0002", "attack.new_tactic", "cve.2021-44228", "attack.credential_access"])
                | TEXT, max_size=5)
RULES = st.builds(
    RuleInfo, id=TEXT, title=TEXT, level=st.sampled_from(["high", "low", "CRITICAL", "weird", ""]), author=TEXT,
    description=TEXT, status=st.none() | TEXT, date=st.none() | TEXT, modified=st.none() | TEXT,
    references=st.lists(TEXT, max_size=3).map(tuple), tags=TAGS.map(tuple),
    falsepositives=st.lists(TEXT, max_size=2).map(tuple), license=st.none() | TEXT, ruleset=TEXT, source=TEXT,
    kind=st.sampled_from(["sigma", "correlation", "anomaly"]))
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=1100) | st.floats(allow_nan=False)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                      max_leaves=6)
FIELD_NAMES = st.sampled_from(["user.name", "User", "host", "host.name", "Image", "SourceIp", "event.action",
                               "event.kind", "event", "sourceIPAddress", "eventName", "process.pid", "ProcessId",
                               "CommandLine", "source", "cloud.region", "x"])
EVENTS = st.dictionaries(FIELD_NAMES, VALUES, max_size=8)
LOGSOURCES = st.sampled_from([LogSource(), LogSource("linux", "process_creation"), LogSource("aws", service="cloudtrail"),
                              LogSource(product="github", service="audit"), LogSource(category="webserver")])
ORIGINS = st.sampled_from([Origin("kafka", "t", 1, 5), Origin("kafka", "t", 0, 9, key="k"), Origin("file", key="f:3")])
MATCHED = st.lists(st.tuples(TEXT, VALUES), max_size=MAX_MATCHED_FIELDS + 3).map(tuple)
DETAILS = st.none() | st.dictionaries(TEXT, st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) | TEXT | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6), max_size=3)
"""Integers within orjson's range (the plain rendering writes with orjson; larger ones: test_alert.py's
``test_details_past_64_bits_still_make_a_document``)."""


@settings(max_examples=300, deadline=None)
@given(rule=RULES, events=st.lists(st.tuples(EVENTS, MATCHED, DETAILS), min_size=1, max_size=3), logsource=LOGSOURCES,
       origin=ORIGINS, ts=st.floats(0, 4e9))
def test_documents_equal_the_plain_rendering_whatever_was_done_to_the_earlier_ones(
        rule: RuleInfo, events: list[tuple[dict[str, Any], tuple[tuple[str, Any], ...], dict[str, Any] | None]],
        logsource: LogSource, origin: Origin, ts: float) -> None:
    for event, matched, details in events:
        make = functools.partial(build_alert, Match(rule, matched, details), event, origin, event_time=ts,
                                 now=ts + 1, logsource=logsource)
        alert = make()
        doc = alert.to_document()
        assert doc == plain_document(alert)
        assert dumped(doc) == dumped(plain_document(alert))
        scribble(doc)  # the same alert and the rule's next alerts must not see it
        assert dumped(alert.to_document()) == dumped(plain_document(make()))


def test_alerts_of_one_rule_share_no_container() -> None:
    rule = RuleInfo(id="r", title="R", tags=("attack.t1059.004", "attack.execution"), references=("u",),
                    falsepositives=("fp",))
    docs = [build_alert(Match(rule, (("f", "v"),)), {"User": ["u", "v"]}, Origin("kafka", "t", 0, n), event_time=1.0,
                        now=2.0, logsource=LogSource(product="linux")).to_document() for n in range(2)]

    def containers(value: Any) -> list[int]:
        inner = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        return ([id(value)] if isinstance(value, dict | list) else []) + [i for v in inner for i in containers(v)]

    assert not set(containers(docs[0])) & set(containers(docs[1]))


@settings(max_examples=300, deadline=None)
@given(doc=st.dictionaries(FIELD_NAMES, VALUES, max_size=4),
       entities=st.lists(st.tuples(FIELD_NAMES | st.sampled_from(["a.b.c", "a", "a.b", "", "."]), VALUES),
                         max_size=6).map(tuple))
def test_place_puts_what_a_plain_setdefault_walk_puts(doc: dict[str, Any], entities: tuple[tuple[str, Any], ...]
                                                      ) -> None:
    expected, got = copy.deepcopy(doc), copy.deepcopy(doc)
    plain_place(expected, entities)
    place(got, entities)
    assert repr(got) == repr(expected)  # same keys in the same order, same values of the same types


def test_a_full_rule_cache_is_cleared_and_documents_stay_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alert_module, "_MAX_RULE_PARTS", 2)
    rules = [RuleInfo(id=f"r{n}", title=f"R{n}", level="low", tags=(f"attack.t10{n}0",)) for n in range(5)]
    for _ in range(2):
        for rule in rules:
            alert = build_alert(Match(rule), {"User": "u"}, Origin("kafka", "t", 0, 1), event_time=1.0, now=2.0)
            assert dumped(alert.to_document()) == dumped(plain_document(alert))
            assert len(alert_module._RULE_PARTS) <= 2
