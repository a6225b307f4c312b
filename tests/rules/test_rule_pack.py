"""The project's rule pack (``sigma-rules/``): metadata, validation and the events beside each rule.

Every rule file ``X.yml`` has ``X.events.json`` next to it with events in the source's real
schema: ``match`` events the rule must fire on and realistic ``nomatch`` near-misses it must
not. Detection rules are evaluated through the engine with the rule's log source (and the
processing pipeline the file names); correlation rules get ordered event sequences run
through the correlation engine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from detectors.correlation import CorrelatingEvaluator, compile_correlations
from detectors.model import LogSource
from detectors.sigma import Ruleset
from service.cli import main as cli_main
from service.rules import load_rules
from tests.conftest import PROJECT_RULES

RULE_FILES = sorted(p for p in PROJECT_RULES.rglob("*.yml") if p.parent.name != "pipelines")
PIPELINES = PROJECT_RULES / "pipelines"
TACTICS = {
    "reconnaissance", "resource-development", "initial-access", "execution", "persistence",
    "privilege-escalation", "stealth", "defense-impairment", "defense-evasion", "credential-access",
    "discovery", "lateral-movement", "collection", "command-and-control", "exfiltration", "impact",
}
ATTACK_TAG = re.compile(r"^attack\.(t\d{4}(\.\d{3})?|[a-z-]+)$")
SIGMA_CHECK_EXCLUDED = ("attacktag", "d3_fendtag")
"""Validators that download MITRE ATT&CK / D3FEND data at run time (no network here); the
ATT&CK tag format and tactic names are checked by this module instead."""


def _doc(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), path
    return doc


def _events(path: Path) -> dict[str, Any]:
    events_path = path.with_name(path.name[: -len(".yml")] + ".events.json")
    assert events_path.is_file(), f"{path.name}: no {events_path.name} beside it"
    data = json.loads(events_path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


DETECTION_FILES = [p for p in RULE_FILES if "correlation" not in _doc(p)]
CORRELATION_FILES = [p for p in RULE_FILES if "correlation" in _doc(p)]


def _chained_names() -> set[str]:
    """Names of correlation rules referenced by another correlation (chain building blocks)."""
    names: set[str] = set()
    for path in CORRELATION_FILES:
        names.update(_doc(path)["correlation"]["rules"])
    return names


@cache
def _ruleset(pipeline: str | None = None) -> Ruleset:
    pipelines = [PROJECT_RULES / pipeline] if pipeline else []
    result = load_rules([PROJECT_RULES], pipelines)
    assert not result.errors, result.errors
    return result.ruleset


def _logsource(doc: dict[str, Any]) -> LogSource:
    ls = doc["logsource"]
    return LogSource(product=ls.get("product"), category=ls.get("category"), service=ls.get("service"))


def _rel(path: Path) -> str:
    return str(path.relative_to(PROJECT_RULES))


def test_pack_loads_without_errors_and_is_large_enough() -> None:
    result = load_rules([PROJECT_RULES])
    assert result.errors == []
    assert len(result.ruleset.rules) >= 60
    assert len(result.ruleset.rules) == len(DETECTION_FILES)
    assert len(result.ruleset.correlations) == len(CORRELATION_FILES) >= 4


def test_every_pipeline_compiles_the_pack() -> None:
    for pipeline in sorted(PIPELINES.glob("*.pipeline")):
        result = load_rules([PROJECT_RULES], [pipeline])
        assert result.errors == [], pipeline.name
        assert len(result.ruleset.rules) == len(DETECTION_FILES)


@pytest.mark.parametrize("path", RULE_FILES, ids=_rel)
def test_metadata(path: Path) -> None:
    doc = _doc(path)
    for key in ("id", "title", "description", "author", "date", "status", "level", "references", "falsepositives"):
        assert doc.get(key), f"{_rel(path)}: {key} missing"
    assert uuid.UUID(doc["id"]).version == 4
    assert doc["author"] == "pipesentry project"
    assert doc["level"] in ("informational", "low", "medium", "high", "critical")
    assert all(str(r).startswith("https://") for r in doc["references"])
    assert all(isinstance(f, str) and f.strip() for f in doc["falsepositives"])
    tags = doc.get("tags") or []
    attack = [t for t in tags if t.startswith("attack.")]
    assert attack, f"{_rel(path)}: no ATT&CK tag"
    for tag in attack:
        assert ATTACK_TAG.match(tag), tag
        name = tag.split(".", 1)[1]
        assert (name.startswith("t") and name[1].isdigit()) or name in TACTICS, f"unknown tactic {tag}"


def test_ids_and_names_are_unique() -> None:
    docs = [_doc(p) for p in RULE_FILES]
    ids = [d["id"] for d in docs]
    names = [d["name"] for d in docs if "name" in d]
    assert len(ids) == len(set(ids))
    assert len(names) == len(set(names))


def test_rules_are_our_own_not_copies_of_sigmahq(shared_dir: Path) -> None:
    """No id or title is shared with the SigmaHQ corpus."""
    ours = {(_doc(p)["id"], _doc(p)["title"].lower()) for p in RULE_FILES}
    our_ids = {i for i, _ in ours}
    our_titles = {t for _, t in ours}
    for path in (shared_dir / "sigmahq").rglob("*.yml"):
        text = path.read_text(encoding="utf-8", errors="replace")
        m_id = re.search(r"^id:\s*(\S+)", text, re.M)
        m_title = re.search(r"^title:\s*(.+)$", text, re.M)
        assert not (m_id and m_id.group(1) in our_ids), path
        assert not (m_title and m_title.group(1).strip().lower() in our_titles), path


@pytest.mark.parametrize("path", DETECTION_FILES, ids=_rel)
def test_detection_rule_events(path: Path) -> None:
    doc = _doc(path)
    data = _events(path)
    assert data.get("match") and data.get("nomatch"), f"{_rel(path)}: needs match and nomatch events"
    ruleset = _ruleset(data.get("pipeline"))
    ls = _logsource(doc)
    for event in data["match"]:
        ids = {m.rule.id for m in ruleset.evaluate(event, ls)}
        assert doc["id"] in ids, f"{_rel(path)} did not match {event}"
    for event in data["nomatch"]:
        ids = {m.rule.id for m in ruleset.evaluate(event, ls)}
        assert doc["id"] not in ids, f"{_rel(path)} matched near-miss {event}"


def _run_sequence(ruleset: Ruleset, sequence: list[dict[str, Any]]) -> set[str]:
    engine, errors = compile_correlations(ruleset)
    assert not errors
    evaluator = CorrelatingEvaluator(ruleset, engine)
    fired: set[str] = set()
    for item in sequence:
        matches = evaluator.evaluate(item["event"], LogSource.parse(item["logsource"]), float(item["ts"]))
        fired.update(m.rule.id for m in matches)
    fired.update(m.rule.id for m in evaluator.flush())
    return fired


@pytest.mark.parametrize("path", CORRELATION_FILES, ids=_rel)
def test_correlation_rule_sequences(path: Path) -> None:
    doc = _doc(path)
    if doc.get("name") in _chained_names():
        # A chain building block: with the chain's default generate: false it never alerts on its
        # own; the chain's own sequences exercise it.
        assert not path.with_name(path.name[:-4] + ".events.json").exists()
        return
    data = _events(path)
    assert data.get("match") and data.get("nomatch")
    ruleset = _ruleset()
    for sequence in data["match"]:
        assert doc["id"] in _run_sequence(ruleset, sequence), f"{_rel(path)}: sequence did not fire"
    for sequence in data["nomatch"]:
        assert doc["id"] not in _run_sequence(ruleset, sequence), f"{_rel(path)}: near-miss sequence fired"


def test_web_rules_through_the_envoy_pipeline() -> None:
    """The webserver rules see Envoy/Istio JSON access logs once the Envoy pipeline maps the fields."""
    rs = _ruleset("pipelines/envoy.pipeline")
    ls = LogSource(product="envoy", category="webserver")
    base = {"start_time": "2026-11-25T23:45:12.000Z", "method": "GET", "protocol": "HTTP/1.1", "response_code": 200,
            "user_agent": "curl/8.5.0", "authority": "api.acme.internal", "downstream_remote_address": "203.0.113.77:4052"}
    titles = {m.rule.title for m in rs.evaluate({**base, "path": "/files?name=..%2f..%2fetc%2fpasswd"}, ls)}
    assert "Path Traversal Attempt In Request URI" in titles
    titles = {m.rule.title for m in rs.evaluate({**base, "path": "/.env"}, ls)}
    assert "Sensitive File Served By Web Server" in titles
    assert not rs.evaluate({**base, "path": "/api/v1/orders?page=2"}, ls)


def test_ecs_pipeline_maps_elastic_agent_fields() -> None:
    rs = _ruleset("pipelines/ecs.pipeline")
    cases = [
        (LogSource("github", None, "audit"), {"event": {"action": "protected_branch.destroy"}, "user": {"name": "m"},
                                               "github": {"repo": "acme/payments"}},
         "GitHub Branch Protection Or Ruleset Removed"),
        (LogSource("kubernetes", "application", "audit"),
         {"kubernetes": {"audit": {"verb": "create", "user": {"username": "m@acme.io"},
                                   "objectRef": {"resource": "pods", "namespace": "prod", "subresource": "exec"}}}},
         "Kubernetes Exec Or Attach Into A Production Pod"),
        (LogSource("aws", None, "cloudtrail"),
         {"event": {"action": "CreateAccessKey", "provider": "iam.amazonaws.com"},
          "aws": {"cloudtrail": {"user_identity": {"type": "Root"}}}},
         "AWS Access Key Created For The Root User"),
        (LogSource("linux", None, "auditd"), {"auditd": {"log": {"record_type": "EXECVE", "a0": "chmod", "a1": "4755"}}},
         "Setuid Or Setgid Bit Set On A File"),
        (LogSource("nginx", "webserver"), {"url": {"original": "/?q=%7B%7B7*7%7D%7D", "path": "/"},
                                           "http": {"response": {"status_code": 200}}},
         "Server-Side Template Or Expression Injection In Request URI"),
    ]
    for ls, event, title in cases:
        assert title in {m.rule.title for m in rs.evaluate(event, ls)}, title
    # Raw (non-ECS) events no longer match once the ECS pipeline is applied.
    assert not rs.evaluate({"action": "protected_branch.destroy", "repo": "acme/payments"}, LogSource("github", None, "audit"))


def test_pipesentry_rules_check_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["rules", "check", str(PROJECT_RULES)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{len(DETECTION_FILES)} rules, {len(CORRELATION_FILES)} correlations, 0 filters, 0 errors" in out


@pytest.mark.skipif(shutil.which("sigma") is None, reason="sigma-cli is not installed")
def test_sigma_cli_check_passes() -> None:
    cmd = ["sigma", "check", "--fail-on-error", "--fail-on-issues"]
    for validator in SIGMA_CHECK_EXCLUDED:
        cmd += ["--exclude", validator]
    proc = subprocess.run([*cmd, str(PROJECT_RULES)], capture_output=True, text=True, timeout=120, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Found 0 errors, 0 condition errors and 0 issues." in output, output
    assert "Traceback" not in output



def test_auth_rules_on_the_syslog_decoder_output() -> None:
    """The linux/auth rules use the field names the project's syslog decoder produces (5424 and 3164)."""
    from service.decoders import build_decoder

    decode = build_decoder("syslog", {})
    rs = _ruleset()
    ls = LogSource("linux", None, "auth")
    lines = {
        b"<38>1 2026-11-25T23:41:07Z prod-bastion-1 sshd 48211 - - Failed password for invalid user admin "
        b"from 203.0.113.77 port 51122 ssh2": "SSH Authentication Failure",
        b"<38>Nov 25 23:41:08 prod-bastion-1 sshd[48211]: Accepted password for deploy from 203.0.113.77 "
        b"port 51190 ssh2": "SSH Successful Login",
        b"<85>Nov 25 23:41:09 prod-bastion-1 sudo:   deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; "
        b"COMMAND=/bin/bash": "Interactive Root Shell Through sudo",
        b"<86>1 2026-11-25T23:42:00Z prod-bastion-1 useradd 51002 - - new user: name=sysupd, UID=0, GID=0, "
        b"home=/root, shell=/bin/bash, from=/dev/pts/0": "Linux User Created With UID 0",
    }
    for raw, title in lines.items():
        (event,) = decode(raw)
        assert {m.rule.title for m in rs.evaluate(event, ls)} == {title}, raw


def test_sigmahq_rules_run_side_by_side_on_our_schemas(shared_dir: Path) -> None:
    """Same log sources and field names as SigmaHQ: their rules fire on the demo's attack events."""
    from service.demo.corpus import generate
    from service.demo.sources import BY_NAME

    rules = shared_dir / "sigmahq" / "rules"
    paths = [rules / "application" / "github", rules / "application" / "kubernetes", rules / "cloud" / "aws",
             rules / "web" / "webserver_generic", rules / "linux" / "auditd", PROJECT_RULES]
    result = load_rules(paths, [PIPELINES / "nginx.pipeline"])
    assert not [e for e in result.errors if str(PROJECT_RULES) in e.source]
    fired: dict[str, set[str]] = {}
    for item in generate(7):
        if item.story is not None:
            for match in result.ruleset.evaluate(item.event, BY_NAME[item.source].logsource):
                fired.setdefault(match.rule.ruleset, set()).add(match.rule.title)
    theirs = set().union(*(titles for name, titles in fired.items() if name != PROJECT_RULES.name))
    assert {"Potential Remote Command Execution In Pod Container", "AWS CloudTrail Important Change",
            "Path Traversal Exploitation Attempts", "SQL Injection Strings In URI"} <= theirs
    assert len(fired[PROJECT_RULES.name]) >= 50
