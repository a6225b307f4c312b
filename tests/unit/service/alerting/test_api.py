"""The alerts and silences API over the local store."""

from __future__ import annotations

from pathlib import Path

from detectors.alert import iso_time
from tests.support.alerts import alert, make_client, rule


def test_alert_queries(tmp_path: Path) -> None:
    client, router, _ = make_client(tmp_path)
    t0 = 1_700_000_000.0
    docs = [alert(i, r=rule("r-a" if i % 2 else "r-b", "critical" if i == 3 else "medium", title=f"T{i % 2}"),
                  ts=t0 + i, event={"user": f"user{i}", "cmd": "needle" if i == 4 else "x"}).to_document()
            for i in range(10)]
    router.store.upsert(docs)
    r = client.get("/api/v1/alerts", params={"limit": 3})
    body = r.json()
    assert r.status_code == 200 and body["total"] == 10 and len(body["items"]) == 3
    assert [d["@timestamp"] for d in body["items"]] == [iso_time(t0 + i) for i in (9, 8, 7)]
    page2 = client.get("/api/v1/alerts", params={"limit": 3, "offset": 3}).json()
    assert [d["@timestamp"] for d in page2["items"]] == [iso_time(t0 + i) for i in (6, 5, 4)]
    assert client.get("/api/v1/alerts", params={"rule": "r-a"}).json()["total"] == 5
    assert client.get("/api/v1/alerts", params={"rule": "T0"}).json()["total"] == 5  # by name
    assert client.get("/api/v1/alerts", params={"min_level": "high"}).json()["total"] == 1
    assert client.get("/api/v1/alerts", params={"level": "high"}).json()["total"] == 0  # level: exactly these
    assert client.get("/api/v1/alerts", params={"level": ["critical", "MEDIUM"]}).json()["total"] == 10
    ranged = client.get("/api/v1/alerts", params={"since": iso_time(t0 + 2), "until": str(t0 + 5)}).json()
    assert ranged["total"] == 3
    found = client.get("/api/v1/alerts", params={"q": "needle"}).json()
    assert found["total"] == 1 and "needle" in found["items"][0]["event"]["original"]
    assert client.get("/api/v1/alerts", params={"q": "100%_"}).json()["total"] == 0
    one = client.get(f"/api/v1/alerts/{docs[0]['event']['id']}")
    assert one.status_code == 200 and one.json()["rule"]["author"] == "Tester"
    assert client.get("/api/v1/alerts/nope").status_code == 404
    assert client.get("/api/v1/alerts", params={"level": "severe"}).status_code == 422
    assert client.get("/api/v1/alerts", params={"since": "yesterday"}).status_code == 422
    router.store.close()


def test_silences_create_list_expire(tmp_path: Path) -> None:
    client, router, clock = make_client(tmp_path)
    bad = client.post("/api/v1/silences", json={"match": {}, "duration_s": 60})
    assert bad.status_code == 422
    assert client.post("/api/v1/silences", json={"match": {"levels": ["loud"]}, "duration_s": 60}).status_code == 422
    created = client.post("/api/v1/silences", json={"match": {"rule_ids": ["r1"], "tags": ["attack.*"]},
                                                    "duration_s": 600, "comment": "deploy"})
    assert created.status_code == 201
    sid = created.json()["id"]
    listed = client.get("/api/v1/silences").json()["items"]
    assert [s["id"] for s in listed] == [sid] and listed[0]["active"] is True
    assert router.silences.silenced_by(alert(1), clock.now) is not None
    assert router.silences.silenced_by(alert(1, r=rule("r2")), clock.now) is None
    expired = client.delete(f"/api/v1/silences/{sid}")
    assert expired.status_code == 200 and expired.json()["active"] is False
    assert client.get("/api/v1/silences").json()["items"] == []
    assert len(client.get("/api/v1/silences", params={"expired": True}).json()["items"]) == 1
    assert router.silences.silenced_by(alert(1), clock.now) is None
    assert client.delete("/api/v1/silences/unknown").status_code == 404
    # silences persist in the store
    from service.alerting.silences import Silences
    reloaded = Silences(router.store)
    reloaded.load()
    assert [s.id for s in reloaded.list(clock.now, include_expired=True)] == [sid]
    router.store.close()
