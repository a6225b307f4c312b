"""``Redactor.document``'s one copy-on-write walk with a per-document memo and the clean-text cache, against
the walk it replaced (kept below as the reference: a fresh copy of everything, each string redacted where it
is met, through the public ``text`` and ``value``): the same bytes and the same counts, in the same order."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.alert import build_alert
from detectors.model import LogSource, Match, Origin, RuleInfo
from detectors.redaction import DOCUMENT_RULE_KEYS, FORMATS, MARKER, Redactor, secret_name

KEY = b"d" * 32
AWS_ID = "AKIAQX3T7FJ2LMNOPQRS"
GITHUB = "ghp_R8x2Lk9Qm4Np7Tv1Wy3Zb6Cd0Ef5Gh8Jk2Mn"
SAMPLES = [spec.sample for spec in FORMATS]


def reference(r: Redactor, doc: Mapping[str, Any], counts: MutableMapping[str, int]) -> dict[str, Any]:
    """The document walk before the memo: rule keys kept, every other string redacted where it is met,
    ``pipesentry.matched`` by field name, ``pipesentry.details`` by key name, in that order. (It raised on an
    entry of ``matched`` that is not a mapping, or skipped it with the rest when no string held an anchor:
    such an entry is now redacted as a plain value.)"""

    def entry(e: Any) -> Any:
        if not isinstance(e, Mapping):
            return deep(e)
        name, value = e.get("field"), e.get("value")
        return {**e, "value": r.value(value, counts) if isinstance(name, str) and secret_name(name) else deep(value)}

    def deep(value: Any, by_name: bool = False) -> Any:
        if isinstance(value, str):
            return r.text(value, counts)
        if isinstance(value, Mapping):
            return {k: r.value(v, counts) if by_name and isinstance(k, str) and secret_name(k)
                    and not isinstance(v, Mapping | list | tuple) else deep(v, by_name) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [deep(v, by_name) for v in value]
        return value

    out: dict[str, Any] = {k: v if k in DOCUMENT_RULE_KEYS else None for k, v in doc.items()}
    src = doc.get("pipesentry")
    for k, v in doc.items():
        if k in DOCUMENT_RULE_KEYS:
            continue
        if k == "pipesentry" and isinstance(src, Mapping):
            out[k] = {pk: pv if pk in ("matched", "details", *DOCUMENT_RULE_KEYS) else deep(pv)
                      for pk, pv in src.items()}
        else:
            out[k] = deep(v)
    if isinstance(src, Mapping):
        ps = out["pipesentry"]
        if isinstance(src.get("matched"), list):
            ps["matched"] = [entry(e) for e in src["matched"]]
        elif "matched" in src:
            ps["matched"] = deep(src["matched"])
        if "details" in src:
            ps["details"] = deep(src["details"], by_name=True)
    return out


words = st.sampled_from(["/etc/passwd", "aws", "eu-west-1", "key", "token", "https://x.example/a", "deploy", "",
                         "Pass", "[REDACTED:jwt:h=00000000]", "***", "AKIA", "ghp_", "db_password=", "\u0130", "é"])
text = st.lists(st.one_of(words, st.sampled_from(SAMPLES), st.sampled_from([AWS_ID, GITHUB]), st.text(max_size=6)),
                max_size=5).map(" ".join)
names = st.sampled_from(["message", "user", "db_password", "token", "api_key", "url", "cmd", "CommandLine",
                         "details", "group", "tags", "rule"])
scalars = st.one_of(text, st.integers(-5, 5), st.none(), st.booleans(), st.floats(allow_nan=False, width=32))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(names, inner, max_size=4)), max_leaves=12)


def rule_of(title: str) -> RuleInfo:
    return RuleInfo(id="r-1", title=title, level="high", author="t", tags=("attack.credential-access",),
                    description="d")


@st.composite
def alert_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents of real alerts: events whose values repeat (a matched value is also an entity field and part
    of ``event.original``), secret-named fields, details with secret keys."""
    shared = draw(text)
    event: dict[str, Any] = draw(st.dictionaries(names, json_values, max_size=5))
    event.update({"user": {"name": shared}, "CommandLine": shared, "url": {"full": draw(text)},
                  "source": {"ip": "10.0.0.1"}})
    fields = draw(st.lists(st.tuples(names, st.one_of(st.just(shared), json_values)), max_size=4))
    details = draw(st.one_of(st.none(), st.dictionaries(names, json_values, max_size=4)))
    match = Match(rule=rule_of(draw(text)), fields=tuple(fields), details=details)
    alert = build_alert(match, event, Origin(input="kafka", topic="t", partition=0, offset=draw(st.integers(0, 9))),
                        event_time=1.7e9, now=1.7e9, logsource=LogSource(product="linux", category="process_creation"))
    return alert.to_document()


documents = st.one_of(alert_documents(),
                      st.dictionaries(st.sampled_from(["pipesentry", "event", "message", "rule", "tags", "url", "x"]),
                                      json_values, max_size=5),
                      st.fixed_dictionaries({"pipesentry": st.dictionaries(
                          st.sampled_from(["matched", "details", "origin", "rule_source", "level"]), json_values,
                          max_size=4)}))


def check(r: Redactor, doc: dict[str, Any]) -> dict[str, Any]:
    before = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
    counts: dict[str, int] = {}
    expected: dict[str, int] = {}
    want = reference(r, doc, expected)
    out = r.document(doc, counts)
    assert orjson.dumps(out) == orjson.dumps(want)
    assert list(counts.items()) == list(expected.items())
    assert orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS) == before  # the input is not changed
    return out


SHARED = Redactor(KEY)
"""One redactor for every example: its clean-text cache carries texts from one document to the next."""


@settings(max_examples=600, deadline=None)
@given(documents)
def test_document_equals_the_reference_walk(doc: dict[str, Any]) -> None:
    out = check(SHARED, doc)
    assert check(Redactor(KEY), doc) == out  # an empty cache gives the same


@settings(max_examples=200, deadline=None)
@given(alert_documents())
def test_no_known_secret_survives_in_an_alert(doc: dict[str, Any]) -> None:
    out = SHARED.document(doc)
    scanned = orjson.dumps({k: v for k, v in out.items() if k not in DOCUMENT_RULE_KEYS}).decode()
    for secret in (AWS_ID, GITHUB):  # the rule's own metadata (a title naming a key) is not scanned
        assert secret not in scanned
    assert SHARED.document(orjson.loads(orjson.dumps(out))) == out  # idempotent


def test_a_repeated_secret_is_counted_each_time_and_marked_alike() -> None:
    doc = {"event": {"original": "x"}, "user": {"name": f"id {AWS_ID}"},
           "pipesentry": {"matched": [{"field": "cmd", "value": f"id {AWS_ID}"}], "details": {"note": f"id {AWS_ID}"}}}
    counts: dict[str, int] = {}
    out = SHARED.document(doc, counts)
    assert counts == {"aws-access-key-id": 3}
    marked = {out["user"]["name"], out["pipesentry"]["matched"][0]["value"], out["pipesentry"]["details"]["note"]}
    assert len(marked) == 1 and MARKER.search(marked.pop())


def test_a_document_without_secrets_is_a_copy_of_the_input() -> None:
    doc = {"message": "m", "event": {"original": "/etc/passwd"}, "pipesentry": {"matched": [], "level": "high"}}
    out = SHARED.document(doc)
    assert out == doc and out is not doc
