"""What the console's pages compute: links only for http(s), local redirects, event rows, coverage, stages."""

from __future__ import annotations

import orjson
import pytest

from detectors.model import LogSource, RuleInfo
from service.console import views


@pytest.mark.parametrize(("value", "linked"), [
    ("https://attack.mitre.org/techniques/T1059/", True), ("http://x.example/a?b=c", True),
    ("javascript:alert(1)", False), (" JavaScript:alert(1)", False), ("data:text/html,<b>x</b>", False),
    ("//evil.example/", False), ("vbscript:x", False), ("https:///nohost", False), (42, False), ("x" * 3000, False),
])
def test_only_absolute_http_urls_become_links(value: object, linked: bool) -> None:
    assert (views.safe_url(value) is not None) is linked


@pytest.mark.parametrize(("value", "expected"), [
    ("/alerts/abc?x=1", "/alerts/abc?x=1"), ("/", "/"), (None, "/"), ("", "/"), ("//evil.example", "/"),
    ("/\\evil.example", "/"), ("https://evil.example/", "/"), ("alerts", "/"), ("/a\r\nSet-Cookie: x", "/"),
    ("javascript:alert(1)", "/"),
])
def test_redirect_targets_stay_on_this_server(value: str | None, expected: str) -> None:
    assert views.local_path(value) == expected


def test_event_rows_flatten_and_mark_the_matched_fields() -> None:
    original = orjson.dumps({"process": {"command_line": "curl x | sh"}, "user": "bob", "n": [1, 2]}).decode()
    rows, raw = views.event_rows(original, [{"field": "process.command_line", "value": "curl x | sh"}])
    assert not raw
    assert [(r.path, r.value, r.matched) for r in rows] == [
        ("process.command_line", "curl x | sh", True), ("user", "bob", False), ("n", "[1,2]", False)]
    rows, raw = views.event_rows('{"cut": "tru', [])
    assert raw and rows[0].value == '{"cut": "tru'


def test_attack_links_point_at_attack_pages() -> None:
    links = views.attack_links(("attack.t1059.001", "attack.execution", "attack.t1078"))
    urls = {link.text: link.url for link in links}
    assert urls["T1059.001"] == "https://attack.mitre.org/techniques/T1059/001/"
    assert urls["TA0002 Execution"] == "https://attack.mitre.org/tactics/TA0002/"


def _rule(rule_id: str, tags: tuple[str, ...], **ls: str) -> RuleInfo:
    return RuleInfo(id=rule_id, title=rule_id, tags=tags, logsource=LogSource(**ls))


def test_coverage_matrix_navigator_layer_and_stages() -> None:
    rules = [_rule("a", ("attack.execution", "attack.t1059"), product="github", service="audit"),
             _rule("b", ("attack.execution", "attack.persistence", "attack.t1059"), category="ci_job_log"),
             _rule("c", (), product="kubernetes"), _rule("d", ("attack.t1078",))]
    cov = views.coverage(rules)
    assert cov.cells[("T1059", "TA0002")] == 2 and cov.cells[("T1059", "TA0003")] == 1
    assert cov.cells[("T1078", "")] == 1 and cov.untagged == 1
    assert [t for t, _ in cov.tactics] == ["TA0002", "TA0003", ""]  # ATT&CK's order, untagged last
    layer = views.navigator_layer(cov)
    scored = {(t["techniqueID"], t.get("tactic")): t["score"] for t in layer["techniques"]}
    assert scored == {("T1059", "execution"): 2, ("T1059", "persistence"): 1, ("T1078", None): 1}
    assert layer["domain"] == "enterprise-attack" and layer["gradient"]["maxValue"] == 2
    stages = {s: n for s, n, _ in views.stages(rules)}
    assert stages == {"plan": 0, "code": 1, "build": 1, "test": 0, "release": 0, "deploy": 1, "monitor": 0,
                      "other": 1}


def test_group_key_reads_a_correlation_group_or_an_anomaly_key() -> None:
    assert views.group_key({"group": {"b": 2, "a": "x"}}) == (("a", "x"), ("b", "2"))
    assert views.group_key({"key": {"host": "h1"}}) == (("host", "h1"),)
    assert views.group_key({"group": {}}) == () and views.group_key(None) == () and views.group_key({"group": "x"}) == ()
