"""The search sink's index template: a node without the wildcard field type gets keyword instead."""

from __future__ import annotations

import json
from typing import Any

from service.alerting.sinks.elasticsearch import (
    ElasticsearchSink,
    ElasticsearchSinkSettings,
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
