"""Compiling rule texts: metadata, multi-document files, collections, correlations, errors."""

from __future__ import annotations

import pytest

from detectors.model import LogSource
from detectors.sigma import RuleError, RuleText, compile_ruleset
from tests.support.sigma import agree, build, rule_yaml

GOOD = rule_yaml({"sel": {"F": "x"}, "condition": "sel"}, id="11111111-1111-4111-8111-111111111111",
                 title="good")


def compile_texts(*texts: str) -> tuple[list[RuleError], list[str]]:
    result = compile_ruleset([RuleText(f"f{i}.yml", t, "unit") for i, t in enumerate(texts)])
    return result.errors, [r.id for r in result.ruleset.rules]


def test_metadata() -> None:
    text = rule_yaml(
        {"sel": {"F": "x"}, "condition": "sel"}, id="22222222-2222-4222-8222-222222222222",
        title="Meta", level="high", author="Jane", description="d", status="test", name="meta_rule",
        date="2024-01-02", modified="2024-02-03", references=["https://x"], tags=["attack.t1059"],
        falsepositives=["admins"], license="DRL-1.1",
        logsource={"product": "windows", "category": "process_creation"})
    result = compile_ruleset([RuleText("rules/meta.yml", text, "project")])
    assert result.errors == []
    info = result.ruleset.rules[0]
    assert (info.id, info.title, info.level, info.author, info.status) == (
        "22222222-2222-4222-8222-222222222222", "Meta", "high", "Jane", "test")
    assert (info.date, info.modified, info.name, info.license) == ("2024-01-02", "2024-02-03", "meta_rule", "DRL-1.1")
    assert info.tags == ("attack.t1059",) and info.references == ("https://x",)
    assert info.falsepositives == ("admins",)
    assert info.logsource == LogSource("windows", "process_creation")
    assert (info.ruleset, info.source, info.kind) == ("project", "rules/meta.yml", "sigma")
    assert result.ruleset.get("meta_rule") is info
    assert result.ruleset.get("22222222-2222-4222-8222-222222222222") is info


def test_defaults_for_missing_metadata() -> None:
    text = "title: bare\nlogsource: {product: x}\ndetection:\n  sel: {F: x}\n  condition: sel\n"
    result = compile_ruleset([RuleText("bare.yml", text)])
    info = result.ruleset.rules[0]
    assert (info.level, info.author, info.license, info.description) == ("medium", "unknown", None, "")
    assert info.id == "bare.yml#1"


def test_invalid_yaml_is_an_error_and_others_compile() -> None:
    errors, ids = compile_texts("title: [unclosed\n", GOOD)
    assert ids == ["11111111-1111-4111-8111-111111111111"]
    assert len(errors) == 1 and errors[0].source == "f0.yml" and "YAML" in errors[0].reason


@pytest.mark.parametrize(("detection", "needle"), [
    ({"sel": {"F|nosuchmod": "x"}, "condition": "sel"}, "nosuchmod"),
    ({"sel": {"F|re": "(unclosed"}, "condition": "sel"}, "(unclosed"),
    ({"sel": {"F|re": "((a+)+)\\1"}, "condition": "sel"}, "catastrophic"),
    ({"sel": {"F": "x"}, "condition": "sel and missing"}, "missing"),
    ({"sel": {"F|expand": "%nothing%"}, "condition": "sel"}, "placeholder"),
    ({"sel": {"F": "x"}, "condition": "sel | count() > 5"}, "pipe"),
])
def test_broken_rules_become_errors(detection: dict[str, object], needle: str) -> None:
    bad = rule_yaml(detection, id="33333333-3333-4333-8333-333333333333", title="bad")
    errors, ids = compile_texts(bad, GOOD)
    assert ids == ["11111111-1111-4111-8111-111111111111"]
    assert len(errors) == 1, errors
    error = errors[0]
    assert (error.source, error.rule_id, error.title) == ("f0.yml", "33333333-3333-4333-8333-333333333333", "bad")
    assert needle in error.reason


def test_garbage_documents_do_not_raise() -> None:
    errors, ids = compile_texts("just a string", "- a\n- b\n", "title: x\n", "{}", GOOD)
    assert ids == ["11111111-1111-4111-8111-111111111111"]
    assert len(errors) >= 3


def test_skip_invalid_false_still_reports_and_builds_good_rules() -> None:
    result = compile_ruleset([RuleText("a.yml", "title: [\n"), RuleText("b.yml", GOOD)], skip_invalid=False)
    assert result.errors and [r.id for r in result.ruleset.rules] == ["11111111-1111-4111-8111-111111111111"]


def test_duplicate_ids_are_reported() -> None:
    errors, ids = compile_texts(GOOD, GOOD)
    assert ids == ["11111111-1111-4111-8111-111111111111"]
    assert "duplicate" in errors[0].reason


def test_multi_document_with_global_and_repeat() -> None:
    text = """action: global
title: shared
logsource: {product: test}
detection:
  condition: sel
---
id: 44444444-4444-4444-8444-444444444444
detection:
  sel: {F: one}
---
action: repeat
id: 55555555-5555-4555-8555-555555555555
detection:
  sel: {F: two}
"""
    result = compile_ruleset([RuleText("multi.yml", text)])
    assert result.errors == []
    ruleset = result.ruleset
    assert [r.id for r in ruleset.rules] == ["44444444-4444-4444-8444-444444444444",
                                            "55555555-5555-4555-8555-555555555555"]
    assert [m.rule.id for m in agree(ruleset, {"F": "two"})] == ["55555555-5555-4555-8555-555555555555"]


def test_correlations_are_kept() -> None:
    base = rule_yaml({"sel": {"F": "x"}, "condition": "sel"}, id="66666666-6666-4666-8666-666666666666",
                     name="base_rule")
    corr = """title: many
id: 77777777-7777-4777-8777-777777777777
correlation:
  type: event_count
  rules: [base_rule]
  group-by: [User]
  timespan: 5m
  condition: {gte: 3}
level: high
"""
    result = compile_ruleset([RuleText("r.yml", base + "---\n" + corr)])
    assert result.errors == []
    (info, rule), = result.ruleset.correlations
    assert info.kind == "correlation" and info.id == "77777777-7777-4777-8777-777777777777"
    assert rule.group_by == ["User"]
    assert result.ruleset.get("77777777-7777-4777-8777-777777777777") is info
    assert [r.id for r in result.ruleset.rules] == ["66666666-6666-4666-8666-666666666666"]


def test_correlation_with_unknown_rule_is_an_error() -> None:
    corr = """title: c
id: 88888888-8888-4888-8888-888888888888
correlation: {type: event_count, rules: [nope], group-by: [U], timespan: 5m, condition: {gte: 3}}
"""
    result = compile_ruleset([RuleText("c.yml", corr)])
    assert len(result.errors) == 1 and result.ruleset.correlations == ()


def test_match_fields_report_positive_items() -> None:
    ruleset = build(rule_yaml({"sel": {"Image|endswith": "\\x.exe", "CommandLine|contains": "-e"},
                               "keywords": ["boom"], "filter": {"User": "admin"},
                               "condition": "sel and keywords and not filter"}))
    (match,) = agree(ruleset, {"Image": "C:\\x.exe", "CommandLine": "x -e y", "User": "bob", "M": "boom!"})
    assert match.fields == (("Image", "C:\\x.exe"), ("CommandLine", "x -e y"), ("", "boom!"))
