"""Rule conversion with the pySigma backends: one bad rule never stops the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.hunt.convert import PipelineError, build_pipeline, convert_rules
from service.hunt.hunt import HuntPlan, convert_plan
from service.hunt.rules import load_hunt_rules
from tests.support.fixtures import rule_text

GOOD = rule_text("curl_in_ci_log")

FIELDREF = """
title: Field reference
id: 22222222-2222-4222-8222-222222222222
logsource: {product: github, service: audit}
detection:
  sel:
    actor|fieldref: user
  condition: sel
"""

CORRELATION = """
title: Many curls
id: 33333333-3333-4333-8333-333333333333
correlation:
  type: event_count
  rules: [11111111-1111-4111-8111-111111111111]
  group-by: [repository]
  timespan: 5m
  condition: {gte: 3}
"""

PIPELINE = """
name: rename
priority: 10
transformations:
  - id: msg
    type: field_name_mapping
    mapping: {message: log.message}
"""




@pytest.mark.parametrize("target", ["elasticsearch", "opensearch"])
def test_bad_rules_are_listed_and_the_rest_converts(tmp_path: Path, target: str) -> None:
    root = tmp_path / "pack"
    root.mkdir()
    (root / "good.yml").write_text(GOOD)
    (root / "fieldref.yml").write_text(FIELDREF)
    (root / "broken.yml").write_text("title: [unclosed")
    conversion = convert_plan(HuntPlan(rules=(root,), target=target))  # type: ignore[arg-type]
    assert [q.rule.id for q in conversion.queries] == ["11111111-1111-4111-8111-111111111111"]
    assert conversion.queries[0].lucene == ("message:*curl\\ *",)
    assert conversion.queries[0].rule.author == "Jane Doe"
    [failure] = conversion.failures
    assert failure.rule.id == "22222222-2222-4222-8222-222222222222"
    assert "field reference" in failure.reason
    assert [e.source for e in conversion.errors] == [str(root / "broken.yml")]
    assert conversion.rules_per_s > 0


def test_correlations_and_their_quiet_building_blocks_are_listed(tmp_path: Path) -> None:
    root = tmp_path / "pack"
    root.mkdir()
    (root / "corr.yml").write_text(GOOD + "---\n" + CORRELATION)
    conversion = convert_plan(HuntPlan(rules=(root,)))
    assert conversion.queries == []
    assert [(f.rule.id, f.rule.kind, f.reason.split(":")[0]) for f in conversion.failures] == [
        ("11111111-1111-4111-8111-111111111111", "sigma", "building block of a correlation with generate"),
        ("33333333-3333-4333-8333-333333333333", "correlation", "correlation rule")]
    wanted = convert_plan(HuntPlan(rules=(root,), building_blocks=True))
    assert [q.rule.id for q in wanted.queries] == ["11111111-1111-4111-8111-111111111111"]
    (root / "corr.yml").write_text(GOOD + "---\n" + CORRELATION + "  generate: true\n")
    assert [q.rule.id for q in convert_plan(HuntPlan(rules=(root,))).queries] == [
        "11111111-1111-4111-8111-111111111111"]


def test_timestamp_part_modifiers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "hour.yml").write_text(GOOD.replace("    message|contains: 'curl '", "    ts|hour|lt: 8"))
    [failure] = convert_plan(HuntPlan(rules=(tmp_path,))).failures
    assert failure.reason.startswith("ts|hour: timestamp-part modifiers have no Lucene form")


def test_the_rule_packs_pipeline_applies(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(GOOD)
    (tmp_path / "rename.yml").write_text(PIPELINE)
    conversion = convert_plan(HuntPlan(rules=(tmp_path / "good.yml",), pipelines=(tmp_path / "rename.yml",)))
    assert conversion.queries[0].lucene == ("log.message:*curl\\ *",)


def test_the_same_rules_convert_again_after_a_pipeline_ran(tmp_path: Path) -> None:
    """Pipelines mutate rules: each conversion takes its own copy."""
    (tmp_path / "good.yml").write_text(GOOD)
    loaded = load_hunt_rules([tmp_path / "good.yml"], [])
    pipeline = build_pipeline([PIPELINE], [], "elasticsearch")
    first, _ = convert_rules(loaded.rules, "elasticsearch", pipeline)
    second, _ = convert_rules(loaded.rules, "opensearch", None)
    assert first[0].lucene == ("log.message:*curl\\ *",)
    assert second[0].lucene == ("message:*curl\\ *",)


def test_unusable_pipelines_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(GOOD)
    with pytest.raises(PipelineError, match="cannot read pipeline"):
        convert_plan(HuntPlan(rules=(tmp_path,), pipelines=(tmp_path / "missing.yml",)))
    with pytest.raises(PipelineError, match="no backend pipeline 'nope'"):
        build_pipeline([], ["nope"], "elasticsearch")
    with pytest.raises(PipelineError, match="invalid processing pipeline"):
        build_pipeline(["transformations: 3"], [], "elasticsearch")


def test_a_backend_pipeline_is_added_by_name() -> None:
    pipeline = build_pipeline([], ["ecs_kubernetes"], "opensearch")
    assert pipeline is not None and pipeline.items
