"""No-token mode: other web sites cannot post through the operator's browser, nor rebind DNS to the API."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import metrics
from service.config import Settings
from tests.support.api import ADMIN, MATCHING, auth
from tests.support.api import build_api as build

NDJSON = {"content-type": "application/x-ndjson"}


def refused(reason: str) -> float:
    return metrics.HTTP_CROSS_SITE_REFUSED.labels(reason)._value.get()


def test_the_default_binds_to_loopback_without_tokens() -> None:
    api = Settings().api
    assert api.host == "127.0.0.1" and api.tokens == [] and api.allowed_hosts == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain; charset=utf-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
async def test_a_state_change_without_a_json_type_or_the_client_header_is_refused(
        tmp_path: Path, content_type: str | None) -> None:
    client, router, _ = build(tmp_path, tokens=False)
    headers = {"content-type": content_type} if content_type else {}
    before = refused("content_type")
    async with client:
        for path in ("/api/v1/events", "/api/v1/rules/reload"):
            response = await client.post(path, content=MATCHING, headers=headers)
            assert response.status_code == 403, response.text
            assert "application/json" in response.json()["detail"]
        assert (await client.delete("/api/v1/silences/x", headers=headers)).status_code == 403
    assert refused("content_type") == before + 3
    assert router.accepted == []


@pytest.mark.parametrize("headers", [{"content-type": "application/json"}, NDJSON,
                                     {"content-type": "Application/X-NDJSON; charset=utf-8"},
                                     {"X-Pipesentry-Client": "curl"}])
async def test_json_types_or_the_client_header_pass(tmp_path: Path, headers: dict[str, str]) -> None:
    client, router, _ = build(tmp_path, tokens=False)
    async with client:
        response = await client.post("/api/v1/events?category=ci_job_log", content=MATCHING, headers=headers)
    assert response.status_code == 200 and len(router.accepted) == 1


@pytest.mark.parametrize(("origin", "allowed"), [
    ("http://127.0.0.1:8080", True),
    ("http://evil.example", False),
    ("http://127.0.0.1:9999", False),   # another port is another origin
    ("http://localhost:8080", False),   # another name is another origin, even for the same server
    ("null", False),                    # sandboxed frames and file:// pages
])
async def test_only_the_servers_own_origin_is_accepted(tmp_path: Path, origin: str, allowed: bool) -> None:
    client, _, _ = build(tmp_path, tokens=False)
    before = refused("origin")
    async with client:
        read = await client.get("/api/v1/rules", headers={"Origin": origin})
        post = await client.post("/api/v1/events", content=MATCHING, headers={**NDJSON, "Origin": origin})
    assert (read.status_code, post.status_code) == ((200, 200) if allowed else (403, 403))
    assert refused("origin") == before + (0 if allowed else 2)


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1:8080", True), ("localhost:8080", True), ("[::1]:8080", True), ("LOCALHOST.", True),
    ("10.1.2.3:8080", True),            # an address: DNS rebinding always carries a name
    ("pipesentry.example:8080", True),  # api.allowed_hosts
    ("rebind.attacker.example:8080", False), ("", False), ("a b", False),
])
async def test_the_host_must_be_one_of_the_servers_names(tmp_path: Path, host: str, allowed: bool) -> None:
    client, _, _ = build(tmp_path, tokens=False, api={"allowed_hosts": ["pipesentry.example"]})
    before = refused("host")
    async with client:
        response = await client.get("/api/v1/rules", headers={"Host": host})
        health = await client.get("/healthz", headers={"Host": host})
    assert response.status_code == (200 if allowed else 403)
    assert health.status_code == 200  # probes and load balancers use any name
    if not allowed:
        assert "api.allowed_hosts" in response.json()["detail"] and refused("host") == before + 1


async def test_the_bind_address_and_a_wildcard(tmp_path: Path) -> None:
    client, _, _ = build(tmp_path, tokens=False, api={"host": "ingest.svc.local"})
    async with client:
        assert (await client.get("/api/v1/rules", headers={"Host": "ingest.svc.local:8080"})).status_code == 200
        assert (await client.get("/api/v1/rules", headers={"Host": "other.svc.local"})).status_code == 403
    client, _, _ = build(tmp_path, tokens=False, api={"allowed_hosts": ["*"]})
    async with client:
        assert (await client.get("/api/v1/rules", headers={"Host": "other.svc.local"})).status_code == 200


async def test_with_tokens_the_token_is_the_guard(tmp_path: Path) -> None:
    client, _, _ = build(tmp_path)
    async with client:
        response = await client.post("/api/v1/events", content=MATCHING,
                                     headers={**auth(ADMIN), "Host": "api.example", "Origin": "http://x.example",
                                              "content-type": "text/plain"})
        # the guard lets it through; the ingest route then refuses a text body for its JSON decoder
        assert response.status_code == 415
        assert "application/x-ndjson" in response.json()["detail"]
        response = await client.post("/api/v1/events", content=MATCHING,
                                     headers={**auth(ADMIN), "Host": "api.example", "Origin": "http://x.example",
                                              "content-type": "application/x-ndjson"})
    assert response.status_code == 200
