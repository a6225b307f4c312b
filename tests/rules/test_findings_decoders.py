"""SARIF, ZAP, Checkov and Trivy reports -> one event per finding, registered as decoders."""

from __future__ import annotations

import orjson
import pytest

from detectors.model import LogSource
from service.decoders import DecodeError, build_decoder, decoder_names
from service.decoders.findings import FindingContext, decode_checkov, decode_sarif, decode_trivy, decode_zap
from service.rules import load_rules
from tests.conftest import PROJECT_RULES
from tests.support.fixtures import finding_report

CTX = FindingContext(repository="acme/payments", branch="refs/heads/release/2026.11", commit="4f2a9c1e")

SARIF, ZAP, CHECKOV, TRIVY = (finding_report(name) for name in ("codeql.sarif", "zap", "checkov", "trivy"))


def _raw(doc: object) -> bytes:
    return orjson.dumps(doc)


def test_sarif_one_event_per_result_with_normalised_severity() -> None:
    events = decode_sarif(_raw(SARIF), CTX)
    assert len(events) == 2
    sqli, logging = events
    assert sqli["severity"] == "high"  # security-severity 8.8 is the CVSS high band, whatever the level says
    assert sqli["cwe"] == ["CWE-89"]
    assert sqli["location"] == "src/report.py:40"
    assert sqli["status"] == "open"
    assert sqli["branch"] == "release/2026.11" and sqli["repository"] == "acme/payments"
    assert sqli["tool"] == "CodeQL" and sqli["scan_type"] == "sast"
    assert logging["rule_id"] == "py/clear-text-logging"  # found through ruleIndex
    assert logging["severity"] == "medium" and logging["status"] == "suppressed"
    assert logging["cwe"] == ["CWE-312"]


def test_sarif_version_control_provenance_wins_over_options() -> None:
    doc = {**SARIF, "runs": [{**SARIF["runs"][0], "versionControlProvenance": [
        {"repositoryUri": "https://github.com/acme/web", "revisionId": "abc123", "branch": "main"}]}]}
    event = decode_sarif(_raw(doc), CTX)[0]
    assert (event["repository"], event["branch"], event["commit"]) == ("https://github.com/acme/web", "main", "abc123")


def test_zap_one_event_per_alert() -> None:
    events = decode_zap(_raw(ZAP), CTX)
    assert [e["severity"] for e in events] == ["high", "medium"]
    sqli = events[0]
    assert sqli["rule_id"] == "40018" and sqli["cwe"] == ["CWE-89"] and sqli["instances"] == 2
    assert sqli["location"] == "https://staging.shop.acme.io/products?id=1"
    assert sqli["target"] == "https://staging.shop.acme.io" and sqli["scan_type"] == "dast"
    assert sqli["help_uri"] == "https://cheatsheetseries.owasp.org/cheatsheets/SQL_Injection_Prevention_Cheat_Sheet.html"
    assert "help_uri" not in events[1]


def test_checkov_failed_and_skipped_checks_from_every_framework() -> None:
    events = decode_checkov(_raw(CHECKOV), CTX)
    assert [(e["rule_id"], e["status"], e["severity"]) for e in events] == [
        ("CKV_AWS_20", "failed", "unknown"), ("CKV_AWS_24", "skipped", "high")]
    assert events[0]["location"] == "/infra/s3.tf:12" and events[0]["target"] == "aws_s3_bucket.exports"
    assert events[1]["message"] == "migration"
    assert decode_checkov(_raw(CHECKOV[0]), CTX)[0]["rule_id"] == "CKV_AWS_20"  # single-object form


def test_trivy_vulnerabilities_failed_misconfigurations_and_secrets() -> None:
    events = decode_trivy(_raw(TRIVY), CTX)
    kinds = [(e["scan_type"], e["rule_id"], e["severity"]) for e in events]
    assert kinds == [("container", "CVE-2024-45337", "critical"), ("container", "CVE-2023-45853", "unknown"),
                     ("iac", "AVD-DS-0002", "high"), ("secret", "aws-access-key-id", "critical")]
    assert events[0]["fixed_version"] == "0.31.0" and "fixed_version" not in events[1]
    assert events[3]["location"] == "/app/.env:3"


@pytest.mark.parametrize("decode", [decode_sarif, decode_zap, decode_checkov, decode_trivy])
def test_bad_input_is_a_decode_error_with_a_reason(decode) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecodeError) as exc:
        decode(b"{not json", CTX)
    assert exc.value.reason == "invalid_json"
    with pytest.raises(DecodeError) as exc:
        decode(b'{"hello": "world"}', CTX)
    assert exc.value.reason == "not_a_report"
    with pytest.raises(DecodeError) as exc:
        decode(b"[]" + b" " * 100, FindingContext(max_bytes=50))
    assert exc.value.reason == "too_large"


def test_registered_with_options() -> None:
    assert {"sarif", "zap", "checkov", "trivy"} <= set(decoder_names())
    decode = build_decoder("trivy", {"branch": "main", "repository": "acme/payments"})
    assert decode(_raw(TRIVY))[0]["branch"] == "main"
    with pytest.raises(ValueError, match="unknown findings decoder option"):
        build_decoder("sarif", {"brnch": "main"})
    with pytest.raises(ValueError, match="max_bytes"):
        build_decoder("zap", {"max_bytes": 0})


def test_decoded_findings_trigger_the_finding_rules() -> None:
    """End to end: report -> decoder -> rule pack."""
    rs = load_rules([PROJECT_RULES / "findings"]).ruleset
    titles: set[str] = set()
    for decode, doc in ((decode_sarif, SARIF), (decode_zap, ZAP), (decode_checkov, CHECKOV), (decode_trivy, TRIVY)):
        for event in decode(_raw(doc), CTX):
            titles.update(m.rule.title for m in rs.evaluate(event, LogSource("appsec", "security_finding")))
    assert titles == {
        "Critical SAST Finding On A Release Branch",
        "High-Risk DAST Alert Against A Release Build",
        "Critical IaC Misconfiguration On A Release Branch",
        "Critical Finding Suppressed In Source On A Release Branch",
        "Critical Vulnerability With An Available Fix In A Release Artifact",
        "Secret Found In A Built Artifact Or Image",
    }
    feature = FindingContext(branch="feature/x")
    for event in decode_trivy(_raw(TRIVY), feature):
        hits = {m.rule.title for m in rs.evaluate(event, LogSource("appsec", "security_finding"))}
        assert hits <= {"Secret Found In A Built Artifact Or Image"}
