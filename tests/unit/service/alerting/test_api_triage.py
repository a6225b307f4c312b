"""Alert triage through the API: the workflow, notes, history, bulk changes, the actor and the audit trail."""

from __future__ import annotations

from pathlib import Path

import httpx

from service import metrics
from service.api import create_app
from tests.support.alerts import alert, make_client, rule
from tests.support.api import ANALYST, READER, auth, build_ctx


def dispositions(rule_id: str, disposition: str) -> float:
    value = metrics.REGISTRY.get_sample_value("pipesentry_alert_dispositions_total",
                                              {"rule_id": rule_id, "disposition": disposition})
    return value or 0.0


def test_acknowledge_assign_note_resolve(tmp_path: Path) -> None:
    client, router, _ = make_client(tmp_path)
    a = alert(1, r=rule("triage-r1"))
    router.store.upsert([a.to_document()])
    url = f"/api/v1/alerts/{a.id}"
    try:
        acked = client.patch(url, json={"status": "acknowledged", "assignee": "bob"})
        assert acked.status_code == 200, acked.text
        body = acked.json()
        assert (body["status"], body["assignee"], body["rule_id"]) == ("acknowledged", "bob", "triage-r1")
        assert [c["field"] for c in body["changes"]] == ["status", "assignee"]
        assert client.patch(url, json={"status": "acknowledged"}).json()["changes"] == []  # already so
        assert client.patch(url, json={"status": "new"}).status_code == 409
        assert client.patch(url, json={"status": "resolved"}).status_code == 422  # no disposition
        assert client.patch(url, json={}).status_code == 422
        assert client.patch(url, json={"status": "closed"}).status_code == 422
        assert client.patch(url, json={"owner": "x"}).status_code == 422
        assert client.patch(url, json={"assignee": "a\nb"}).status_code == 422
        assert client.patch("/api/v1/alerts/nope", json={"status": "acknowledged"}).status_code == 404
        noted = client.post(f"{url}/notes", json={"text": "seen on <b>h1</b>"})
        assert noted.status_code == 201 and noted.json()["author"] == "anonymous"
        assert client.post(f"{url}/notes", json={"text": ""}).status_code == 422
        assert client.post("/api/v1/alerts/nope/notes", json={"text": "x"}).status_code == 404
        before = dispositions("triage-r1", "false_positive")
        resolved = client.patch(url, json={"status": "resolved", "disposition": "false_positive", "assignee": None})
        assert resolved.status_code == 200 and resolved.json()["assignee"] is None
        assert dispositions("triage-r1", "false_positive") == before + 1
        shown = client.get(url).json()
        assert shown["rule"]["id"] == "triage-r1"
        triage = shown["triage"]
        assert (triage["status"], triage["disposition"], triage["assignee"]) == ("resolved", "false_positive", None)
        assert [n["text"] for n in triage["notes"]] == ["seen on <b>h1</b>"]
        history = client.get(f"{url}/history").json()["items"]
        assert [(h["field"], h["old"], h["new"]) for h in history] == [
            ("status", "new", "acknowledged"), ("assignee", None, "bob"), ("note", None, "1"),
            ("status", "acknowledged", "resolved"), ("disposition", None, "false_positive"),
            ("assignee", "bob", None)]
        assert {h["actor"] for h in history} == {"anonymous"}
        assert client.get("/api/v1/alerts/nope/history").status_code == 404
        listed = client.get("/api/v1/alerts", params={"status": "resolved"}).json()
        assert listed["total"] == 1 and listed["items"][0]["triage"]["notes"] == 1
    finally:
        router.store.close()


def test_bulk_changes_each_alert_that_fits(tmp_path: Path) -> None:
    client, router, _ = make_client(tmp_path)
    alerts = [alert(i) for i in range(4)]
    router.store.upsert([a.to_document() for a in alerts])
    try:
        client.patch(f"/api/v1/alerts/{alerts[3].id}", json={"status": "resolved", "disposition": "benign"})
        ids = [a.id for a in alerts] + ["nope"]
        done = client.post("/api/v1/alerts/bulk", json={"ids": ids, "status": "acknowledged", "assignee": "ana"})
        assert done.status_code == 200, done.text
        body = done.json()
        assert (body["changed"], body["unchanged"], body["not_found"], body["conflicts"]) == (4, 0, 1, 0)
        again = client.post("/api/v1/alerts/bulk", json={"ids": ids[:2], "status": "new"}).json()
        assert again["conflicts"] == 2 and "cannot go" in again["items"][0]["detail"]
        assert client.post("/api/v1/alerts/bulk", json={"ids": ids, "status": "resolved"}).status_code == 422
        assert client.post("/api/v1/alerts/bulk", json={"ids": ids}).status_code == 422
        assert client.post("/api/v1/alerts/bulk", json={"ids": ["x"] * 501, "status": "new"}).status_code == 422
        assert client.post("/api/v1/alerts/bulk", json={"ids": [], "status": "new"}).status_code == 422
        assert client.post("/api/v1/alerts/bulk", json={"ids": ["x" * 129], "status": "new"}).status_code == 422
        assert client.get("/api/v1/alerts", params={"assignee": "ana"}).json()["total"] == 4
        assert client.get("/api/v1/alerts", params={"assigned": "false"}).json()["total"] == 0
    finally:
        router.store.close()


async def test_the_actor_is_the_token_name_and_each_action_is_audited(tmp_path: Path) -> None:
    ctx, alerts = build_ctx(tmp_path)
    a = alert(1)
    alerts.store.upsert([a.to_document()])
    transport = httpx.ASGITransport(app=create_app(ctx), client=("192.0.2.9", 5000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            url = f"/api/v1/alerts/{a.id}"
            refused = await client.patch(url, json={"status": "acknowledged"}, headers=auth(READER))
            assert refused.status_code == 403
            assert (await client.get(f"{url}/history", headers=auth(READER))).json()["items"] == []
            ok = await client.patch(url, json={"status": "acknowledged"}, headers=auth(ANALYST))
            assert ok.status_code == 200
            assert (await client.post(f"{url}/notes", json={"text": "secret-ish note"},
                                      headers=auth(ANALYST))).status_code == 201
            assert (await client.post("/api/v1/alerts/bulk", json={"ids": [a.id], "status": "new"},
                                      headers=auth(ANALYST))).status_code == 200
            history = (await client.get(f"{url}/history", headers=auth(READER))).json()["items"]
            assert {h["actor"] for h in history} == {"triage"}
            assert ctx.audit is not None
            await ctx.audit.flush()
            from service.audit.store import AuditQuery

            entries = list(reversed(ctx.audit.query(AuditQuery(action="alert."))))
    finally:
        alerts.store.close()
    assert [(e["action"], e["actor"], e["client"], e["outcome"]) for e in entries] == [
        ("alert.triage", "triage", "192.0.2.9", "ok"), ("alert.note", "triage", "192.0.2.9", "ok"),
        ("alert.triage_bulk", "triage", "192.0.2.9", "ok")]
    assert entries[0]["object"] == a.id and entries[0]["detail"] == {"status": {"from": "new", "to": "acknowledged"}}
    assert "secret-ish" not in str(entries[1])
    assert entries[2]["detail"]["conflict"] == 1 and entries[2]["detail"]["changed_ids"] == []


def test_the_dispositions_rule_label_is_bounded() -> None:
    from service.alerting.triage_api import RuleLabels

    label = RuleLabels(cap=2)
    assert [label(r) for r in ("a", "b", "c", "a", "d", "b")] == ["a", "b", "other", "a", "other", "b"]
