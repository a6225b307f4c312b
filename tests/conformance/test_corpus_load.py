"""Every SigmaHQ rule and every example of the specification loads and compiles."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import yaml

from detectors.sigma import LoadResult
from service.cli.rules_cmd import error_line
from service.rules import load_rules
from tests.conformance.conftest import SIGMAHQ_FOLDERS

pytestmark = pytest.mark.conformance

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def _problems(result: LoadResult) -> str:
    return "\n".join(error_line(e) for e in result.errors)


def test_every_sigmahq_rule_compiles(sigmahq: LoadResult) -> None:
    assert not sigmahq.errors, f"{len(sigmahq.errors)} SigmaHQ rules failed:\n{_problems(sigmahq)}"


def test_without_a_pipeline_only_placeholder_rules_fail(shared_dir: Path) -> None:
    """``|expand`` placeholders need site values; without them the rule is refused, clearly."""
    result = load_rules([shared_dir / "sigmahq" / folder for folder in SIGMAHQ_FOLDERS])
    expanding = {
        str(p) for folder in SIGMAHQ_FOLDERS for p in (shared_dir / "sigmahq" / folder).rglob("*.yml")
        if "|expand" in p.read_text(encoding="utf-8")
    }
    assert {e.source for e in result.errors} == expanding
    assert all("placeholder" in e.reason for e in result.errors)


def test_every_sigmahq_file_yields_its_rule(sigmahq: LoadResult, shared_dir: Path) -> None:
    files = [p for folder in SIGMAHQ_FOLDERS for p in (shared_dir / "sigmahq" / folder).rglob("*.yml")]
    rs = sigmahq.ruleset
    assert len(rs.rules) + len(rs.correlations) == len(files) == 3757
    assert len({r.id for r in rs.rules}) == len(rs.rules)
    assert {r.ruleset for r in rs.rules} == set(SIGMAHQ_FOLDERS) - {"rules-dfir"}  # rules-dfir: README only
    assert all(r.author for r in rs.rules), "the Detection Rule License needs every rule's author"


SCHEMA = ("sigma-specification", "tests", "schema")
STUB_RULE = """\
title: Stub for {ref}
{key}: {ref}
{extra}author: conformance test
logsource:
    category: stub
detection:
    selection:
        stub: 1
    condition: selection
"""


def _schema_files(kind: str) -> list[str]:
    from tests.conftest import SPEC

    folder = SPEC / "tests" / "schema" / kind
    return sorted(p.name for p in folder.glob("*.yml")) if folder.is_dir() else ["absent.yml"]


def _stub_base_rules(correlation_file: Path, into: Path) -> Path:
    """Base rules the example correlation refers to (the examples ship without them)."""
    into.mkdir()
    for doc in yaml.safe_load_all(correlation_file.read_text(encoding="utf-8")):
        for i, ref in enumerate((doc or {}).get("correlation", {}).get("rules", [])):
            is_id = UUID_RE.fullmatch(str(ref)) is not None
            extra = "" if is_id else f"id: {uuid.uuid5(uuid.NAMESPACE_URL, str(ref))}\n"
            text = STUB_RULE.format(ref=ref, key="id" if is_id else "name", extra=extra)
            (into / f"stub_{i}.yml").write_text(text, encoding="utf-8")
    return into


@pytest.mark.parametrize("name", _schema_files("rules"))
def test_specification_rule_examples_load(shared_dir: Path, name: str) -> None:
    result = load_rules([shared_dir.joinpath(*SCHEMA, "rules", name)])
    assert not result.errors, _problems(result)
    assert len(result.ruleset.rules) == 1


@pytest.mark.parametrize("name", _schema_files("filter"))
def test_specification_filter_examples_load(shared_dir: Path, name: str) -> None:
    result = load_rules([shared_dir.joinpath(*SCHEMA, "filter", name)])
    assert not result.errors, _problems(result)


@pytest.mark.parametrize("name", _schema_files("correlation"))
def test_specification_correlation_examples_load(shared_dir: Path, tmp_path: Path, name: str) -> None:
    path = shared_dir.joinpath(*SCHEMA, "correlation", name)
    stubs = _stub_base_rules(path, tmp_path / "stubs")
    result = load_rules([path, stubs])
    assert not result.errors, _problems(result)
    rs = result.ruleset
    assert len(rs.correlations) == 1, "the correlation must be parsed and kept"
    info, correlation = rs.correlations[0]
    assert info.kind == "correlation"
    assert info.source == str(path)
    assert correlation.rules, "its rule references are kept"


def test_correlation_with_unknown_rules_is_reported(shared_dir: Path) -> None:
    path = shared_dir.joinpath(*SCHEMA, "correlation", "temporal.yml")
    result = load_rules([path])
    assert len(result.errors) == 1 and "recon_cmd_a" in result.errors[0].reason
