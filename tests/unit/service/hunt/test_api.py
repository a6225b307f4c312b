"""``POST /api/v1/hunts``: a background hunt, one at a time, alerts into the store, audited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api import create_app
from service.hunt.api import HuntJobs, hunt_router, store_writer
from tests.support.api import ADMIN, ANALYST, build_ctx
from tests.support.search import FakeSearchClient
from tests.support.waits import until

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
DOCS = {"logs-1": [{"_id": "a", "@timestamp": "2026-11-24T10:00:00Z", "message": "curl x | sh"},
                   {"_id": "b", "@timestamp": "2026-11-24T10:00:01Z", "message": "curl y | sh"}]}


class Env:
    def __init__(self, client: httpx.AsyncClient, search: FakeSearchClient, jobs: HuntJobs) -> None:
        self.client = client
        self.search = search
        self.jobs = jobs

    async def finished(self, hunt_id: str) -> dict[str, Any]:
        await until(lambda: self.jobs.jobs[hunt_id].state != "running", what=f"hunt {hunt_id} finished")
        doc: dict[str, Any] = (await self.client.get(f"/api/v1/hunts/{hunt_id}", headers=ADMIN_HEADERS)).json()
        return doc


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    ctx, alerts = build_ctx(tmp_path)
    search = FakeSearchClient(DOCS)
    jobs = HuntJobs(ctx.settings, store_writer(alerts), client_factory=lambda: search)
    ctx.routers = [r for r in ctx.routers if not any(getattr(x, "path", "").startswith("/api/v1/hunts")
                                                    for x in r.routes)] + [hunt_router(jobs)]
    app = create_app(ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ps.internal") as c:
        yield Env(c, search, jobs)
    await jobs.stop()
    alerts.store.close()


async def test_a_hunt_stores_its_alerts_once_however_often_it_runs(env: Env) -> None:
    started = await env.client.post("/api/v1/hunts", json={"since": "3650d", "index": "logs-*"},
                                    headers=ADMIN_HEADERS)
    assert started.status_code == 202, started.text
    first = await env.finished(started.json()["id"])
    assert first["state"] == "done", first
    assert first["rules_converted"] == 1 and first["hits"] == 2 and first["alerts_stored"] == 2
    page = (await env.client.get("/api/v1/alerts", headers=ADMIN_HEADERS)).json()
    assert page["total"] == 2
    assert {a["pipesentry"]["origin"]["token"] for a in page["items"]} == {"hunt:logs-1/a", "hunt:logs-1/b"}
    again = await env.client.post("/api/v1/hunts", json={"since": "3650d", "index": "logs-*"},
                                  headers=ADMIN_HEADERS)
    second = await env.finished(again.json()["id"])
    assert second["hits"] == 2
    assert (await env.client.get("/api/v1/alerts", headers=ADMIN_HEADERS)).json()["total"] == 2
    listed = (await env.client.get("/api/v1/hunts", headers=ADMIN_HEADERS)).json()["items"]
    assert [h["id"] for h in listed] == [second["id"], first["id"]]
    audit = (await env.client.get("/api/v1/audit", params={"action": "hunt.start"}, headers=ADMIN_HEADERS)).json()
    assert [e["object"] for e in audit["items"]] == [second["id"], first["id"]]


async def test_one_hunt_at_a_time(env: Env) -> None:
    env.search.gate = asyncio.Event()
    started = await env.client.post("/api/v1/hunts", json={"since": "30d"}, headers=ADMIN_HEADERS)
    assert started.status_code == 202
    await until(lambda: env.search.searches, what="the first hunt searching")
    busy = await env.client.post("/api/v1/hunts", json={}, headers=ADMIN_HEADERS)
    assert busy.status_code == 409
    env.search.gate.set()
    assert (await env.finished(started.json()["id"]))["state"] == "done"


async def test_bad_requests_and_roles(env: Env) -> None:
    bad = await env.client.post("/api/v1/hunts", json={"since": "yesterday"}, headers=ADMIN_HEADERS)
    assert bad.status_code == 422 and "expected a duration" in bad.text
    empty = await env.client.post("/api/v1/hunts", json={"since": "1d", "until": "2d"}, headers=ADMIN_HEADERS)
    assert empty.status_code == 422
    assert (await env.client.post("/api/v1/hunts", json={"url": "http://x"}, headers=ADMIN_HEADERS)).status_code == 422
    analyst = await env.client.post("/api/v1/hunts", json={}, headers={"Authorization": f"Bearer {ANALYST}"})
    assert analyst.status_code == 403
    assert (await env.client.get("/api/v1/hunts/nope", headers=ADMIN_HEADERS)).status_code == 404


async def test_a_failing_cluster_fails_the_hunt(env: Env) -> None:
    env.search.refuse = {"message": 503}
    started = await env.client.post("/api/v1/hunts", json={}, headers=ADMIN_HEADERS)
    result = await env.finished(started.json()["id"])
    assert result["state"] == "failed" and "search failed" in result["error"]
