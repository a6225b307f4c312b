"""Secrets stay secret: events full of secrets through ``pipesentry run`` and every sink and receiver.

CI log lines carrying an AWS key pair, a ``db_password=``, a GitHub token, a Slack token, a JWT, a
private key block and a password in a URL are posted to the HTTP input of a running instance whose
rules include the rule pack's own secret rules (so the alerts exist *because* of the secrets:
detection sees raw values). The alerts go to the real OpenSearch node and the real Alertmanager,
the local PagerDuty/Opsgenie/Slack/webhook receivers, stdout and the store; a second search sink
that nobody answers keeps its spool on disk, the webhook refuses one page for good (dead letter),
and an undecodable event lands in the dead letters of the input. Then every place is searched for
every secret: stdout, stderr (DEBUG logs), the API, OpenSearch, Alertmanager, what each receiver
received, and every file under the data directory (spool segments, SQLite files, dead letters,
saved page groups). The same secret must show the same marker everywhere, under the installation's
key, and every private file must be 0600 in a 0700 directory.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from detectors.redaction import Redactor
from devservices.alertmanager import AlertmanagerServer
from devservices.process import free_port
from devservices.search import SearchNode
from tests.conftest import PROJECT_RULES
from tests.integration.receivers import Opsgenie, PagerDuty, Receiver, Slack, Webhook
from tests.support.instances import Instance
from tests.support.waits import until

pytestmark = pytest.mark.integration

AWS_ID = "AKIAQX3T7FJ2LMNOPQRS"
AWS_SECRET = "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"
DB_PASSWORD = "Tr0ub4dor-and-3-horses"
GITHUB = "ghp_R8x2Lk9Qm4Np7Tv1Wy3Zb6Cd0Ef5Gh8Jk2Mn"
SLACK = "xoxb-2048-1234567890-AbCdEfGhIjKlMnOpQrStUvWx"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjaS1ib3QiLCJyb2xlIjoiZGVwbG95In0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbi0xMjM0NTY"
KEY_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\nc3Vic3RhbmNlCg==\n-----END RSA PRIVATE KEY-----"
URL_PASSWORD = "UrlPassw0rd-77-zz"

SECRETS = {"aws-access-key-id": AWS_ID, "aws-secret-key": AWS_SECRET, "db_password": DB_PASSWORD,
           "github-token": GITHUB, "slack-token": SLACK, "jwt": JWT, "private-key": KEY_BODY,
           "url-password": URL_PASSWORD}

LINES = [
    f"+ export AWS_ACCESS_KEY_ID={AWS_ID}",
    f"+ export AWS_SECRET_ACCESS_KEY={AWS_SECRET}",
    f"deploy: connecting with db_password={DB_PASSWORD}",
    f"+ git clone https://x-access-token:{GITHUB}@github.com/acme/payments",
    f"notify: SLACK_BOT_TOKEN={SLACK}",
    f"curl -H 'Authorization: Bearer {JWT}' https://api.acme.internal/deploy",
    f"cat deploy_key\n{PEM}",
    f"migrate --url postgres://app:{URL_PASSWORD}@db.internal:5432/app",
]

EVERY_LINE_ID = "5b1e0a7c-2222-4000-8000-000000000001"
EVERY_LINE_RULE = """
title: Deploy Step Output
id: ID
author: tests
logsource: {category: ci_job_log}
detection:
    sel: {message|contains: ['export', 'db_password', 'clone', 'SLACK', 'Bearer', 'PRIVATE KEY', 'postgres://']}
    condition: sel
level: high
""".replace("ID", EVERY_LINE_ID)
SECRET_RULES = ("ci_log_aws_access_key_id", "ci_log_aws_secret_access_key", "ci_log_github_token",
                "ci_log_slack_token", "ci_log_private_key")
"""Rule pack rules that fire on these lines: detection sees the raw values."""

FAST_RETRY = {"initial_backoff_s": 0.05, "max_backoff_s": 0.3, "breaker_failures": 3, "breaker_reset_s": 0.3}


def leaks(text: str) -> list[str]:
    forms = {name: {s, json.dumps(s)[1:-1]} for name, s in SECRETS.items()}
    return sorted(f"{name}: {form[:12]}…" for name, fs in forms.items() for form in fs if form in text)


def _rules_dir(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "every_line.yml").write_text(EVERY_LINE_RULE)
    for stem in SECRET_RULES:
        (rules / f"{stem}.yml").write_text((PROJECT_RULES / "ci" / f"{stem}.yml").read_text())
    return rules


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
async def test_no_secret_leaves_by_any_way(tmp_path: Path, search_node: SearchNode,
                                           alertmanager_server: AlertmanagerServer) -> None:
    slack, pd = await Slack().start(), await PagerDuty().start()
    og, hook = await Opsgenie(api_key="og-key-0001").start(), await Webhook(secret="hook-secret-0001").start()
    receivers: list[Receiver] = [slack, pd, og, hook]
    hook.fail_next, hook.fail_status = 1, 400  # one page refused for good (a 400): the worker's dead letter
    prefix = f"redact-{free_port()}"
    nobody = f"http://127.0.0.1:{free_port()}"
    route_all = [{"receivers": ["slack", "pd", "og", "hook", "am"]}]
    config: dict[str, Any] = {
        "log_level": "DEBUG",
        "rules": {"paths": [str(_rules_dir(tmp_path))], "watch": False},
        "http_ingest": {"enabled": True},
        "alerting": {
            "sinks": [{"type": "stdout", "full": True}, {"type": "store"},
                      {"type": "elasticsearch", "name": "search", "flavor": search_node.flavor,
                       "hosts": [search_node.url], "index_prefix": prefix, "retry": FAST_RETRY},
                      {"type": "elasticsearch", "name": "search-down", "flavor": "opensearch", "hosts": [nobody],
                       "index_prefix": prefix, "retry": FAST_RETRY}],
            "receivers": [
                {"type": "slack", "name": "slack", "webhook_url": slack.webhook_url, "retry": FAST_RETRY},
                {"type": "pagerduty", "name": "pd", "url": f"{pd.url}/v2/enqueue", "routing_key": "R0UTINGKEY",
                 "retry": FAST_RETRY},
                {"type": "opsgenie", "name": "og", "url": og.url, "api_key": "og-key-0001", "retry": FAST_RETRY},
                {"type": "webhook", "name": "hook", "url": f"{hook.url}/hook", "secret": "hook-secret-0001",
                 "retry": FAST_RETRY},
                {"type": "alertmanager", "name": "am", "url": alertmanager_server.url, "retry": FAST_RETRY}],
            "routes": route_all,
            "grouping": {"group_by": ["message"]},  # one page per line, each with its secret in the group
            "spool": {"fsync": "never"},
        },
    }
    instance = Instance(tmp_path, "redact", config)
    data = instance.dir / "data"
    api: list[str] = []
    try:
        await until(instance.ready, 90, "the instance to be ready")
        async with httpx.AsyncClient(base_url=instance.url, timeout=30,
                                     headers={"content-type": "application/x-ndjson"}) as client:
            body = "\n".join(json.dumps({"message": line, "job": "deploy", "n": n}) for n, line in enumerate(LINES))
            response = await client.post("/api/v1/events?category=ci_job_log", content=body)
            assert response.status_code == 200, response.text
            bad = await client.post("/api/v1/events?category=ci_job_log",
                                    content=f'{{"message": "db_password={DB_PASSWORD} {GITHUB}'.encode())
            assert bad.status_code == 400, bad.text
            api.append(bad.text)

            async def everything_arrived() -> bool:
                got = await client.get("/api/v1/alerts", params={"limit": 1000})
                return (got.status_code == 200 and got.json()["total"] >= len(LINES) + len(SECRET_RULES)
                        and len(pd.got.accepted) >= len(LINES) and len(slack.got.accepted) >= len(LINES)
                        and len(og.got.accepted) >= len(LINES) and len(hook.got.accepted) >= len(LINES) - 1
                        and len(alertmanager_server.alerts(rule_id=EVERY_LINE_ID)) >= len(LINES)
                        and _search_count(search_node, prefix) >= len(LINES) + len(SECRET_RULES))

            await until(everything_arrived, 60, "alerts in every sink and receiver")
            listed = (await client.get("/api/v1/alerts", params={"limit": 1000})).json()
            api.append(json.dumps(listed, ensure_ascii=False))
            for item in listed["items"][:5]:
                one = await client.get(f"/api/v1/alerts/{item['event']['id']}")
                api.append(one.text)
            metrics_text = (await client.get("/metrics")).text
        files_running = _files(data)  # spool segments of the sink nobody answers are still there
    finally:
        instance.stop()
        for receiver in receivers:
            await receiver.stop()
    files = {**files_running, **_files(data)}  # after stop: saved page groups, final store pages

    # detection saw the raw values: every rule pack secret rule fired
    fired = {a["rule"]["name"] for a in listed["items"]}
    assert len(fired) == 1 + len(SECRET_RULES), fired

    stdout = instance.stdout.read_text(errors="replace")
    stderr = instance.stderr.read_text(errors="replace")
    search_docs = json.dumps(_search_docs(search_node, prefix), ensure_ascii=False)
    am_alerts = json.dumps(alertmanager_server.alerts(), ensure_ascii=False)
    pages = {r.__class__.__name__: json.dumps([r.got.accepted, [b for b, _ in r.got.rejected]], ensure_ascii=False, default=str) for r in receivers}
    places = {"stdout": stdout, "logs": stderr, "api": "\n".join(api), "opensearch": search_docs,
              "alertmanager": am_alerts, "metrics": metrics_text, **pages}
    places.update({f"file {p.relative_to(data)}": b.decode("utf-8", "replace") for p, b in files.items()})
    assert any("spool/search-down" in str(p) for p in files_running), sorted(map(str, files_running))
    assert any(p.name == "hook.jsonl" for p in files), "the refused page's dead letter"
    assert (data / "dead-letters.ndjson").is_file(), "the undecodable event's dead letter"
    assert {name: leaks(text) for name, text in places.items() if leaks(text)} == {}

    # the same secret has the same marker everywhere, under the installation's key
    redactor = Redactor((data / "redaction.key").read_text().strip().encode())
    github = redactor.marker("github-token", GITHUB, "ghp_")
    aws_secret = redactor.marker("aws-secret-key", AWS_SECRET)
    for name in ("stdout", "api", "opensearch"):
        assert github in places[name] and aws_secret in places[name], name
    assert github in pages["PagerDuty"] and github in pages["Slack"]
    assert 'pipesentry_redactions_total{kind="github-token"}' in metrics_text

    # private files and directories
    for path in files:
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for directory in {p.parent for p in files if p.exists()}:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def _search_docs(node: SearchNode, prefix: str) -> list[Any]:
    httpx.post(f"{node.url}/{prefix}-*/_refresh", timeout=30)
    got = httpx.post(f"{node.url}/{prefix}-*/_search", json={"size": 1000}, timeout=30)
    return [h["_source"] for h in got.json().get("hits", {}).get("hits", [])] if got.status_code == 200 else []


def _search_count(node: SearchNode, prefix: str) -> int:
    return len(_search_docs(node, prefix))
