"""Sigma filters, processing pipelines and log-source routing."""

from __future__ import annotations

from detectors.model import LogSource
from detectors.sigma import RuleText, compile_ruleset
from tests.support.sigma import agree, build, rule_yaml

RULE_ID = "6f3e2987-db24-4c78-a860-b4f4095a7095"
RULE = rule_yaml({"sel": {"Image|endswith": "\\rar.exe"}, "condition": "sel"}, id=RULE_ID,
                 logsource={"product": "windows", "category": "process_creation"})
OTHER = rule_yaml({"sel": {"Image|endswith": "\\rar.exe"}, "condition": "sel"},
                  id="df0841c0-9846-4e9f-ad8a-7df91571771b",
                  logsource={"product": "windows", "category": "process_creation"})


def filter_doc(rules: str, logsource: str = "{category: process_creation, product: windows}",
               condition: str = "selection") -> str:
    return f"""title: Filter Administrator account
description: The valid administrator account start with adm_
logsource: {logsource}
filter:
  rules: {rules}
  selection:
    User|startswith: 'adm_'
  condition: {condition}
"""


EVENT_ADMIN = {"Image": "C:\\rar.exe", "User": "adm_bob"}
EVENT_USER = {"Image": "C:\\rar.exe", "User": "bob"}


def ids(ruleset: object, event: dict[str, str]) -> list[str]:
    return [m.rule.id for m in agree(ruleset, event)]  # type: ignore[arg-type]


def test_filter_suppresses_targeted_rule_only() -> None:
    result = compile_ruleset([RuleText("r.yml", RULE), RuleText("o.yml", OTHER),
                              RuleText("f.yml", filter_doc(f"[{RULE_ID}]"))])
    assert result.errors == []
    ruleset = result.ruleset
    assert ids(ruleset, EVENT_ADMIN) == ["df0841c0-9846-4e9f-ad8a-7df91571771b"]
    assert ids(ruleset, EVENT_USER) == [RULE_ID, "df0841c0-9846-4e9f-ad8a-7df91571771b"]
    assert [f.title for f in ruleset.filters] == ["Filter Administrator account"]


def test_filter_any_and_logsource_scope() -> None:
    ruleset = compile_ruleset([RuleText("r.yml", RULE), RuleText("f.yml", filter_doc("any"))]).ruleset
    assert ids(ruleset, EVENT_ADMIN) == []
    linux = compile_ruleset([RuleText("r.yml", RULE),
                             RuleText("f.yml", filter_doc("any", "{product: linux}"))]).ruleset
    assert ids(linux, EVENT_ADMIN) == [RULE_ID]


def test_filter_in_same_file_and_them() -> None:
    text = RULE + "---\n" + filter_doc(f"[{RULE_ID}]", condition="1 of them")
    ruleset = compile_ruleset([RuleText("r.yml", text)]).ruleset
    assert ids(ruleset, EVENT_ADMIN) == []
    assert ids(ruleset, EVENT_USER) == [RULE_ID]


MAPPING = """
name: ecs
priority: 10
transformations:
  - id: ecs_fields
    type: field_name_mapping
    mapping:
      Image: process.executable
      User: [user.name, user.id]
"""


def test_pipeline_field_mapping_applies_to_rules_and_filters() -> None:
    result = compile_ruleset([RuleText("r.yml", RULE), RuleText("f.yml", filter_doc(f"[{RULE_ID}]"))],
                             pipelines=[MAPPING])
    assert result.errors == []
    ruleset = result.ruleset
    assert ids(ruleset, {"process": {"executable": "C:\\rar.exe"}, "user": {"name": "bob"}}) == [RULE_ID]
    assert ids(ruleset, {"process": {"executable": "C:\\rar.exe"}, "user": {"id": "adm_1"}}) == []
    assert ids(ruleset, EVENT_USER) == []  # original field names no longer apply
    (match,) = agree(ruleset, {"process.executable": "c:\\RAR.exe"})
    assert match.fields == (("process.executable", "c:\\RAR.exe"),)


def test_pipeline_with_logsource_condition() -> None:
    pipeline = """
name: only linux
priority: 10
transformations:
  - id: linux_map
    type: field_name_mapping
    mapping: {Image: exe}
    rule_conditions:
      - type: logsource
        product: linux
"""
    linux_rule = rule_yaml({"sel": {"Image": "sh"}, "condition": "sel"}, logsource={"product": "linux"})
    ruleset = build(RULE, linux_rule, pipelines=(pipeline,))
    assert len(agree(ruleset, {"exe": "sh"})) == 1
    assert len(agree(ruleset, {"Image": "C:\\rar.exe"})) == 1


def test_bad_pipeline_is_reported() -> None:
    result = compile_ruleset([RuleText("r.yml", RULE)], pipelines=["transformations: [{type: nope}]"])
    assert len(result.errors) == 1 and result.errors[0].source == "pipeline[0]"
    assert len(result.ruleset.rules) == 1


def test_logsource_routing() -> None:
    win = rule_yaml({"sel": {"F": "x"}, "condition": "sel"}, id="aaaaaaaa-0000-4000-8000-000000000001",
                    logsource={"product": "windows", "category": "process_creation"})
    any_windows = rule_yaml({"sel": {"F": "x"}, "condition": "sel"}, id="aaaaaaaa-0000-4000-8000-000000000002",
                            logsource={"product": "windows"})
    linux = rule_yaml({"sel": {"F": "x"}, "condition": "sel"}, id="aaaaaaaa-0000-4000-8000-000000000003",
                      logsource={"product": "linux", "service": "auditd"})
    ruleset = build(win, any_windows, linux)
    event = {"F": "x"}
    assert [m.rule.id[-1] for m in agree(ruleset, event)] == ["1", "2", "3"]
    assert [m.rule.id[-1] for m in agree(ruleset, event, LogSource("Windows", "process_creation"))] == ["1", "2"]
    assert [m.rule.id[-1] for m in agree(ruleset, event, LogSource("windows", "file_event"))] == ["2"]
    assert [m.rule.id[-1] for m in agree(ruleset, event, LogSource("linux", None, "auditd"))] == ["3"]
    assert [m.rule.id[-1] for m in agree(ruleset, event, LogSource("linux"))] == []
    assert agree(ruleset, event, LogSource("macos")) == []
