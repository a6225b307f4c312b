"""``eval``'s records: the JSON line rendered part by part is the printed document's, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from detectors.alert import build_alert
from detectors.model import Match, Origin, RuleInfo
from service.cli.eval_cmd import Record, alert_record

RULE = RuleInfo(id="r-1", title='Quote " and \\ in a title, 100% %d %b %%', level="high", author="Ann Ö",
                status=None, tags=("attack.execution", "attack.t1059"), ruleset="pack")
"""A title with ``%``: the line of an alert without fields is rendered from a ``%`` template."""


def record(fields: tuple[tuple[str, Any], ...], details: dict[str, Any] | None = None, line: int = 7) -> Record:
    alert = build_alert(Match(RULE, fields, details), {"a": 1}, Origin("stdin", key="k"), event_time=1.0, now=2.0)
    return Record(line, alert)


@pytest.mark.parametrize(("fields", "details"), [
    ((), None),
    ((("", "keyword hit"),), None),
    ((("Image", "C:\\x\\\"y\".exe"), ("n", 3), ("f", 1.5), ("b", True), ("none", None)), None),
    ((("when", datetime(2026, 1, 2, tzinfo=UTC)), ("list", [1, "two", {"x": None}])), {"alert_key": "g", "count": 3}),
    ((("uni", "é\u2028\U0001f600"),), {"nested": {"a": [1, 2]}}),
])
def test_json_line_is_the_document_dumped(fields: tuple[tuple[str, Any], ...], details: dict[str, Any] | None) -> None:
    rules: dict[int, tuple[RuleInfo, bytes, bytes]] = {}
    made = record(fields, details)
    expected = orjson.dumps(made.as_dict(), default=str, option=orjson.OPT_APPEND_NEWLINE)
    assert made.json(rules) == expected
    assert made.json(rules) == expected  # the rule's part from the cache
    made.case = "match[0]"
    made.line += 10
    assert made.json() == orjson.dumps(made.as_dict(), default=str, option=orjson.OPT_APPEND_NEWLINE)


def test_document_keys_in_printed_order() -> None:
    made = record((("f", "v"),), {"alert_key": "g"})
    made.case = "c"
    assert list(made.as_dict()) == ["line", "alert_id", "rule_id", "rule_title", "level", "rule_status", "rule_author",
                                    "rule_ruleset", "rule_kind", "tags", "matched", "details", "case"]
    assert alert_record(7, build_alert(Match(RULE, (("f", "v"),)), {}, Origin("stdin", key="k"), event_time=1.0,
                                       now=2.0))["matched"] == [{"field": "f", "value": "v"}]


@pytest.mark.parametrize("alert_id", ['quote"d', "back\\slash", "ctl\x01", "é1ß", "x" * 40])
def test_any_alert_id_renders_as_orjson_does(alert_id: str) -> None:
    made = record((("f", "v"),))
    made.alert_id = alert_id
    assert made.json() == orjson.dumps(made.as_dict(), default=str, option=orjson.OPT_APPEND_NEWLINE)
