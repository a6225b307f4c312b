"""The alert queue's filters, order, paging and counts (GET /api/v1/alerts and /api/v1/alerts/summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detectors.alert import build_alert
from detectors.model import LogSource, Match, Origin
from tests.support.alerts import alert, make_client, rule

NOW = 1_700_000_000.0


def total(client: Any, **params: Any) -> int:
    response = client.get("/api/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def seeded(tmp_path: Path) -> tuple[Any, Any, list[Any]]:
    client, router, clock = make_client(tmp_path)
    clock.now = NOW
    levels = ["informational", "low", "medium", "high", "critical"]
    alerts = []
    for i in range(20):
        r = rule(f"r{i % 4}", levels[i % 5], tags=("attack.execution", "attack.t1059.001") if i % 2 else
                 ("attack.persistence",))
        event = {"host": f"web-{i % 3}", "user": {"name": f"User{i % 2}"}, "cmd": f"run task-{i}"}
        alerts.append(alert(i, r=r, event=event, ts=NOW - i * 3600, product="linux" if i % 2 else "github"))
    router.store.upsert([a.to_document() for a in alerts])
    return client, router, alerts


def test_filters(tmp_path: Path) -> None:
    client, router, _ = seeded(tmp_path)
    try:
        assert total(client) == 20
        assert total(client, level=["high", "critical"]) == 8
        assert total(client, min_level="high") == 8 and total(client, min_level="medium") == 12
        assert total(client, rule="r1") == 5
        assert total(client, tag="T1059") == 10  # the technique finds its sub-technique
        assert total(client, tag="attack.t1059.001") == 10 and total(client, tag="TA0002") == 10
        assert total(client, tag="persistence") == 10
        assert total(client, product="LINUX") == 10 and total(client, product="github", tag="T1059") == 0
        assert total(client, host="web-0") == 7 and total(client, user="user1") == 10
        assert total(client, host="web-0", user="user1", min_level="high") == 2
        assert total(client, since="24h") == 20 and total(client, since="now-2d", until="now") == 19  # until is exclusive
        assert total(client, since="5h") == 6 and total(client, since="now-5h", until="now-2h") == 3
        assert total(client, since=str(NOW - 3600)) == 2
        assert total(client, status="new") == 20 and total(client, status=["acknowledged", "resolved"]) == 0
        assert total(client, q="task-13") == 1 and total(client, q="TASK-1") == 11
        assert total(client, q="cmd") == 0 and total(client, q="host") == 0  # key names are not searched
        for bad in ({"level": "loud"}, {"min_level": "x"}, {"status": "open"}, {"time_field": "x"},
                    {"cursor": "abc"}, {"since": "5 minutes"}, {"host": "h" * 300}):
            assert client.get("/api/v1/alerts", params=bad).status_code == 422, bad
    finally:
        router.store.close()


def test_newest_detection_first_and_cursor_paging(tmp_path: Path) -> None:
    client, router, alerts = seeded(tmp_path)
    late = build_alert(Match(rule=rule("late"), fields=()), {"x": 1}, Origin(input="http", key="late"),
                       event_time=NOW - 10 * 86_400, now=NOW + 60, logsource=LogSource())
    router.store.upsert([late.to_document()])
    try:
        first = client.get("/api/v1/alerts", params={"limit": 1}).json()
        assert first["items"][0]["event"]["id"] == late.id  # detected last, though its event is the oldest
        assert total(client, since="1h", time_field="event") == 2 and total(client, since="1h") == 3
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 6, **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/v1/alerts", params=params).json()
            seen += [d["event"]["id"] for d in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [late.id] + [a.id for a in alerts]
        by_offset = client.get("/api/v1/alerts", params={"limit": 6, "offset": 6}).json()
        assert [d["event"]["id"] for d in by_offset["items"]] == seen[6:12]
    finally:
        router.store.close()


def test_summary_counts_with_the_same_filters(tmp_path: Path) -> None:
    client, router, alerts = seeded(tmp_path)
    try:
        client.patch(f"/api/v1/alerts/{alerts[0].id}", json={"status": "acknowledged"})
        body = client.get("/api/v1/alerts/summary", params={"min_level": "high"}).json()
        assert body["total"] == 8 and body["by_level"] == {"high": 4, "critical": 4}
        assert body["by_status"] == {"new": 8}
        assert sum(r["count"] for r in body["by_rule"]) == 8 and not body["rules_truncated"]
        everything = client.get("/api/v1/alerts/summary").json()
        assert everything["by_status"] == {"new": 19, "acknowledged": 1}
        assert {r["rule_id"]: r["count"] for r in everything["by_rule"]} == {"r0": 5, "r1": 5, "r2": 5, "r3": 5}
        assert client.get("/api/v1/alerts/summary", params={"level": "nope"}).status_code == 422
    finally:
        router.store.close()


def test_pages_are_the_same_whichever_plan(tmp_path: Path, monkeypatch: Any) -> None:
    """A query matching many alerts walks the detection-time index and probes its lists; the page
    is the one a few matches would give."""
    client, router, _ = seeded(tmp_path)
    try:
        queries: list[dict[str, Any]] = [{"tag": "T1059"}, {"q": "task-1"}, {"q": "ta"}, {"tag": "execution", "q": "run"}]
        few = [client.get("/api/v1/alerts", params={**p, "limit": 4}).json() for p in queries]
        monkeypatch.setattr("service.alerting.queries.WALK_ABOVE", 0)
        many = [client.get("/api/v1/alerts", params={**p, "limit": 4}).json() for p in queries]
        assert [[d["event"]["id"] for d in page["items"]] for page in few] == \
            [[d["event"]["id"] for d in page["items"]] for page in many]
        assert [page["total"] for page in few] == [page["total"] for page in many] == [10, 11, 20, 10]
    finally:
        router.store.close()
