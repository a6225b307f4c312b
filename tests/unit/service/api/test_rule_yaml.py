"""A rule's YAML read back from its file: only under the rules paths, only the rule's own document."""

from __future__ import annotations

from pathlib import Path

from detectors.model import RuleInfo
from service.api.rule_yaml import MAX_RULE_FILE_BYTES, rule_yaml

TWO = """title: First
id: 11111111-1111-1111-1111-111111111111
detection:
  sel: {a: 1}
  condition: sel
---
title: Second
id: '22222222-2222-2222-2222-222222222222'
detection:
  sel: {b: 2}
  condition: sel
"""


def test_the_rules_own_document(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "two.yml").write_text(TWO)
    second = RuleInfo(id="22222222-2222-2222-2222-222222222222", title="Second", source=str(rules / "two.yml"))
    text = rule_yaml(second, [rules])
    assert text is not None and text.startswith("title: Second") and "b: 2" in text and "a: 1" not in text
    by_title = RuleInfo(id="other", title="First", source=str(rules / "two.yml"))
    assert "a: 1" in (rule_yaml(by_title, [rules]) or "")
    assert rule_yaml(RuleInfo(id="x", title="Nope", source=str(rules / "two.yml")), [rules]) is None


def test_nothing_outside_the_rules_paths_or_too_large(tmp_path: Path) -> None:
    rules, other = tmp_path / "rules", tmp_path / "other"
    rules.mkdir()
    other.mkdir()
    (other / "r.yml").write_text("title: R\n")
    assert rule_yaml(RuleInfo(id="r", title="R", source=str(other / "r.yml")), [rules]) is None
    assert rule_yaml(RuleInfo(id="r", title="R", source=str(rules / "../other/r.yml")), [rules]) is None
    (rules / "big.yml").write_text("title: B\n" + "#" * MAX_RULE_FILE_BYTES)
    assert rule_yaml(RuleInfo(id="b", title="B", source=str(rules / "big.yml")), [rules]) is None
    assert rule_yaml(RuleInfo(id="t", title="T", source="request"), [rules]) is None
    assert rule_yaml(RuleInfo(id="t", title="T", source=str(rules / "gone.yml")), [rules]) is None
