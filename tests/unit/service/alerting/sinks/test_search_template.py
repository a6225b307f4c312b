"""The search sink's index template: a node without the wildcard field type gets keyword instead."""

from __future__ import annotations

import json
from typing import Any

from service.alerting.sinks.elasticsearch import (
    ElasticsearchSink,
    ElasticsearchSinkSettings,
    _no_wildcard_type,
    without_wildcard,
)


class NoWildcard(Exception):
    status_code = 400


class Indices:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def put_index_template(self, *, name: str, body: dict[str, Any]) -> None:
        if '"wildcard"' in json.dumps(body):
            raise NoWildcard("mapper_parsing_exception: No handler for type [wildcard] declared on field [command_line]")
        self.bodies.append(body)


class Client:
    def __init__(self) -> None:
        self.indices = Indices()


def test_without_wildcard_keeps_everything_else() -> None:
    mappings = {"properties": {"a": {"type": "wildcard"}, "b": {"type": "keyword"}, "c": {"properties": {
        "d": {"type": "wildcard"}}}}}
    assert without_wildcard(mappings) == {"properties": {
        "a": {"type": "keyword", "ignore_above": 8191}, "b": {"type": "keyword"},
        "c": {"properties": {"d": {"type": "keyword", "ignore_above": 8191}}}}}


async def test_a_node_without_wildcard_gets_the_keyword_template() -> None:
    sink = ElasticsearchSink(ElasticsearchSinkSettings(flavor="opensearch"))
    client = Client()
    sink.client = client
    await sink.start()
    (body,) = client.indices.bodies
    command_line = body["template"]["mappings"]["properties"]["process"]["properties"]["command_line"]
    assert command_line == {"type": "keyword", "ignore_above": 8191}


def test_both_servers_ways_of_saying_there_is_no_wildcard_type() -> None:
    opensearch = "mapper_parsing_exception: No handler for type [wildcard] declared on field [command_line]"
    # Elasticsearch 8.19 / 9.x without the wildcard module (the integration-test distribution), composable template:
    elasticsearch = ("illegal_argument_exception: composable template [t] template after composition is invalid; "
                     "mapper_parsing_exception: The mapper type [wildcard] declared on field [command_line] does "
                     "not exist. It might have been created within a future version or requires a plugin")
    assert _no_wildcard_type(NoWildcard(opensearch)) and _no_wildcard_type(NoWildcard(elasticsearch))
    assert not _no_wildcard_type(NoWildcard("mapper_parsing_exception: The mapper type [flattened] ... does not exist"))


def test_ecs_named_data_stream_and_lifecycle_policy() -> None:
    from service.alerting.sinks.elasticsearch import index_template, target_index

    s = ElasticsearchSinkSettings(mode="datastream", namespace="prod", lifecycle_policy="pipesentry-alerts")
    body = index_template(s)
    assert body["index_patterns"] == ["logs-pipesentry.alerts-prod*"] and body["data_stream"] == {}
    assert body["template"]["settings"]["index.lifecycle.name"] == "pipesentry-alerts"
    assert target_index(s, {"@timestamp": "2025-06-15T00:00:00Z"}) == "logs-pipesentry.alerts-prod"
    ism = ElasticsearchSinkSettings(flavor="opensearch", mode="datastream", namespace="prod",
                                    lifecycle_policy="x")
    assert "index.lifecycle.name" not in index_template(ism)["template"]["settings"]  # ISM attaches itself
    dated = ElasticsearchSinkSettings(namespace="prod")  # namespace applies to data streams only
    assert target_index(dated, {"@timestamp": "2025-06-15T00:00:00Z"}) == "pipesentry-alerts-2025.06.15"


def test_policy_examples_are_consistent() -> None:
    import fnmatch

    from service.alerting.sinks.elasticsearch import DATA_STREAM_DATASET
    from tests.conftest import ROOT

    ilm = json.loads((ROOT / "deploy" / "search" / "pipesentry-alerts-ilm-policy.json").read_text())["policy"]
    assert set(ilm["phases"]) <= {"hot", "warm", "cold", "frozen", "delete"}
    assert "rollover" in ilm["phases"]["hot"]["actions"]
    ism = json.loads((ROOT / "deploy" / "search" / "pipesentry-alerts-ism-policy.json").read_text())["policy"]
    names = {state["name"] for state in ism["states"]}
    assert ism["default_state"] in names
    assert all(t["state_name"] in names for state in ism["states"] for t in state["transitions"])
    patterns = ism["ism_template"][0]["index_patterns"]
    assert any(fnmatch.fnmatch(f"{DATA_STREAM_DATASET}-prod", p) for p in patterns)
