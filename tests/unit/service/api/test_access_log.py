"""The access log (``pipesentry.access``): one structured line per request, no query values or tokens,
ingest sampled by default."""

from __future__ import annotations

import json

import httpx
import pytest

from service.logs import JsonFormatter
from tests.support.api import ADMIN, MATCHING, READER, auth
from tests.support.security import captured, security_app


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("192.0.2.9", 1234)), base_url="http://t")


async def test_a_line_per_request_without_query_values_or_tokens(tmp_path):
    with security_app(tmp_path) as (app, _, _), captured("pipesentry.access") as log:
        async with client_for(app) as client:
            listed = await client.get("/api/v1/alerts", params={"q": "s3cr3t-search-term", "limit": 5},
                                      headers=auth(READER))
            assert listed.status_code == 200
            assert (await client.get("/api/v1/rules?token=abc123abc123abc123")).status_code == 401
    first, second = log.records
    line = json.loads(JsonFormatter().format(first))
    assert line["logger"] == "pipesentry.access"
    assert {k: line[k] for k in ("method", "path", "query", "status", "principal", "via", "client")} == {
        "method": "GET", "path": "/api/v1/alerts", "query": ["q", "limit"], "status": 200,
        "principal": "viewer", "via": "token", "client": "192.0.2.9"}
    assert line["bytes"] == len(listed.content) and line["duration_ms"] >= 0
    assert (second.status, second.query, second.principal) == (401, ["token"], "anonymous")  # type: ignore[attr-defined]
    text = " ".join(JsonFormatter().format(r) for r in log.records)
    assert "s3cr3t" not in text and "abc123" not in text and READER not in text


@pytest.mark.parametrize(("mode", "ingest_lines"), [("sampled", 2), ("all", 6), ("off", 0)])
async def test_ingest_is_sampled_by_default(tmp_path, mode, ingest_lines):
    api = {"access_log": mode, "access_log_sample_every": 3}
    with security_app(tmp_path, api=api) as (app, _, _), captured("pipesentry.access") as log:
        async with client_for(app) as client:
            for _ in range(6):
                assert (await client.post("/api/v1/events", content=MATCHING, headers=auth(ADMIN))).status_code == 200
            for _ in range(2):
                assert (await client.get("/healthz")).status_code == 200
    ingest = [r for r in log.records if r.path == "/api/v1/events"]  # type: ignore[attr-defined]
    others = [r for r in log.records if r.path == "/healthz"]  # type: ignore[attr-defined]
    assert len(ingest) == ingest_lines
    assert len(others) == (0 if mode == "off" else 2)
    if mode == "sampled":
        assert all(r.sample_every == 3 and r.principal == "ops" for r in ingest)  # type: ignore[attr-defined]
        assert all(not hasattr(r, "sample_every") for r in others)

