"""The REST API major the Elasticsearch sink declares (``compatible-with=N``), without a server.

What real Elasticsearch 8 and 9 nodes accept is in tests/integration/test_sinks_elasticsearch_client.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from elastic_transport import AsyncTransport, HttpHeaders
from pydantic import ValidationError

from service.alerting.sinks.elasticsearch import (
    ElasticsearchSinkSettings,
    accepted_majors,
    compat_transport_class,
)

CLIENT_HEADERS = {
    "accept": "application/vnd.elasticsearch+json; compatible-with=8",
    "content-type": "application/vnd.elasticsearch+x-ndjson; compatible-with=8",
    "authorization": "ApiKey abc",
}


async def sent_headers(monkeypatch: pytest.MonkeyPatch, compat_major: int | None) -> dict[str, str]:
    seen: list[dict[str, str]] = []

    async def parent(self: Any, method: str, target: str, **kwargs: Any) -> None:
        seen.append(dict(kwargs["headers"]))

    monkeypatch.setattr(AsyncTransport, "perform_request", parent)
    cls = compat_transport_class()
    transport = cls.__new__(cls)  # no node pool: the parent's request is replaced above
    transport.compat_major = compat_major
    await transport.perform_request("POST", "/_bulk", headers=HttpHeaders(CLIENT_HEADERS), body=b"")
    return seen[0]


async def test_declares_the_chosen_major(monkeypatch: pytest.MonkeyPatch) -> None:
    headers = await sent_headers(monkeypatch, 9)
    assert headers["accept"] == "application/vnd.elasticsearch+json; compatible-with=9"
    assert headers["content-type"] == "application/vnd.elasticsearch+x-ndjson; compatible-with=9"
    assert headers["authorization"] == "ApiKey abc"  # other headers untouched


async def test_plain_media_types_for_the_version_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    headers = await sent_headers(monkeypatch, 0)
    assert headers["accept"] == "application/json"
    assert headers["content-type"] == "application/x-ndjson"


async def test_unknown_server_keeps_what_the_client_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await sent_headers(monkeypatch, None) == CLIENT_HEADERS


def test_a_server_accepts_its_major_and_the_previous_one() -> None:
    assert accepted_majors(8) == (7, 8)
    assert accepted_majors(9) == (8, 9)


def test_compatible_with_is_auto_or_a_known_major() -> None:
    assert ElasticsearchSinkSettings(name="es").compatible_with == "auto"
    assert ElasticsearchSinkSettings.model_validate({"name": "es", "compatible_with": 9}).compatible_with == 9
    with pytest.raises(ValidationError):
        ElasticsearchSinkSettings.model_validate({"name": "es", "compatible_with": 10})
