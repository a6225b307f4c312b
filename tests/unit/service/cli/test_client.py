"""``pipesentry alerts`` and ``pipesentry silences`` against the API application (ASGI transport)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import orjson
import pytest

from service.alerting.router import AlertRouter
from service.api import create_app
from service.cli import client_cmd, main
from tests.support.alerts import alert, rule
from tests.support.api import ADMIN, ANALYST, READER, build_ctx

URL = "http://127.0.0.1:8080"


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlertRouter:
    """The API with three stored alerts; the CLI's requests go to it in process."""
    ctx, alerts = build_ctx(tmp_path)
    app = create_app(ctx)
    monkeypatch.setattr(client_cmd, "transport_factory", lambda: httpx.ASGITransport(app=app))
    monkeypatch.delenv("PIPESENTRY_TOKEN", raising=False)
    monkeypatch.delenv("PIPESENTRY_URL", raising=False)
    alerts.store.upsert([
        alert(1, r=rule("r-low", level="low"), ts=1_700_000_000.0).to_document(),
        alert(2, r=rule("r-high", level="high"), ts=1_700_000_100.0).to_document(),
        alert(3, r=rule("r-crit", level="critical"), ts=1_700_000_200.0).to_document(),
    ])
    return alerts


def token_file(tmp_path: Path, token: str) -> str:
    path = tmp_path / f"token-{token[:5]}"
    path.write_text(token + "\n")
    return str(path)


def lines(out: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def test_alerts_list_filters_and_formats(service: AlertRouter, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    auth = ["--url", URL, "--token-file", token_file(tmp_path, READER)]
    assert main(["alerts", "list", *auth, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert sorted(str(d["rule"]["id"]) for d in lines(out)) == ["r-crit", "r-high", "r-low"]  # type: ignore[index]
    assert "3 of 3 alerts" in err
    assert main(["alerts", "list", *auth, "--min-level", "high", "--format", "json"]) == 0
    assert {str(d["rule"]["id"]) for d in lines(capsys.readouterr().out)} == {"r-high", "r-crit"}  # type: ignore[index]
    assert main(["alerts", "list", *auth, "--level", "low", "--level", "critical", "--format", "json"]) == 0
    assert {str(d["rule"]["id"]) for d in lines(capsys.readouterr().out)} == {"r-low", "r-crit"}  # type: ignore[index]
    assert main(["alerts", "list", *auth, "--status", "acknowledged", "--format", "json"]) == 0
    assert lines(capsys.readouterr().out) == []
    assert main(["alerts", "list", *auth, "--rule", "r-low", "--since", "1699999999", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["LEVEL"], r["RULE"]) for r in rows] == [("low", "Rule r-low")]
    assert main(["alerts", "list", *auth, "--since", "2023-11-14T22:15:00Z"]) == 0  # RFC 3339; table
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["TIME", "LEVEL", "ALERT_ID", "RULE"]
    assert len(table) == 1 + 2


def test_alerts_show_and_not_found(service: AlertRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PIPESENTRY_TOKEN", READER)  # the environment instead of a file
    monkeypatch.setenv("PIPESENTRY_URL", URL)
    assert main(["alerts", "list", "--format", "json", "--limit", "1"]) == 0
    first = lines(capsys.readouterr().out)[0]
    alert_id = str(first["pipesentry"]["alert_id"])  # type: ignore[index]
    assert main(["alerts", "show", alert_id]) == 0
    assert orjson.loads(capsys.readouterr().out)["pipesentry"]["alert_id"] == alert_id
    assert main(["alerts", "show", alert_id, "--format", "table"]) == 0
    assert any(row.split()[:2] == ["pipesentry.alert_id", alert_id] for row in capsys.readouterr().out.splitlines())
    assert main(["alerts", "show", "no-such-alert"]) == 1
    assert "not found" in capsys.readouterr().err


def test_refusals_and_unreachable_service(service: AlertRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alerts", "list", "--url", URL]) == 3  # no token
    err = capsys.readouterr().err
    assert "refused (401)" in err and "--token-file" in err
    wrong = token_file(tmp_path, "wrong-token-0123456789")
    assert main(["alerts", "list", "--url", URL, "--token-file", wrong]) == 3
    assert "wrong-token" not in capsys.readouterr().err  # the token never appears
    assert main(["alerts", "list", "--url", URL, "--token-file", str(tmp_path / "missing")]) == 2
    assert main(["alerts", "list", "--url", URL, "--token-file", token_file(tmp_path, READER),
                 "--since", "yesterday"]) == 2  # the API's 422
    assert "since" in capsys.readouterr().err
    monkeypatch.setattr(client_cmd, "transport_factory", lambda: None)
    assert main(["alerts", "list", "--url", "http://127.0.0.1:9", "--timeout", "5"]) == 3
    assert "cannot reach the service at http://127.0.0.1:9" in capsys.readouterr().err


def test_no_token_flag_exists(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--token", ADMIN], [f"--token={ADMIN}"]):
        with pytest.raises(SystemExit) as exc:
            main(["alerts", "list", *argv])
        assert exc.value.code == 2
        assert ADMIN not in capsys.readouterr().err


def test_silences_create_list_expire(service: AlertRouter, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    auth = ["--url", URL, "--token-file", token_file(tmp_path, ANALYST)]
    assert main(["silences", "create", *auth, "--rule", "r-low", "--field", "host=h1", "--field", "host=h2",
                 "--duration", "2h", "--comment", "maintenance", "--format", "json"]) == 0
    created = orjson.loads(capsys.readouterr().out)
    assert created["match"] == {"rule_ids": ["r-low"], "fields": {"host": ["h1", "h2"]}}
    assert created["created_by"] == "triage" and created["active"] is True
    assert created["ends_at"] - created["starts_at"] == pytest.approx(7200, abs=5)
    assert main(["silences", "list", *auth]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ID", "ACTIVE", "ENDS_AT", "CREATED_BY", "MATCH", "COMMENT"]
    assert table[1].startswith(created["id"]) and "maintenance" in table[1]
    assert main(["silences", "expire", *auth, created["id"], "--format", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["active"] is False
    assert main(["silences", "list", *auth, "--format", "json"]) == 0
    assert lines(capsys.readouterr().out) == []
    assert main(["silences", "list", *auth, "--expired", "--format", "json"]) == 0
    assert [s["id"] for s in lines(capsys.readouterr().out)] == [created["id"]]
    assert main(["silences", "expire", *auth, "nope"]) == 1
    # a silence of everything needs an admin: the analyst is refused (403 -> 3)
    assert main(["silences", "create", *auth, "--duration", "1h", "--comment", "all"]) == 3
    reader = ["--url", URL, "--token-file", token_file(tmp_path, READER)]
    assert main(["silences", "create", *reader, "--rule", "x", "--duration", "1h", "--comment", "c"]) == 3
    admin = ["--url", URL, "--token-file", token_file(tmp_path, ADMIN)]
    assert main(["silences", "create", *admin, "--rule", "x", "--ends-at", "2020-01-01T00:00:00Z",
                 "--comment", "in the past"]) == 2  # the API's 422


def test_silences_create_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--duration", "soon", "--comment", "c"], ["--comment", "c"],
                 ["--duration", "1h", "--ends-at", "1", "--comment", "c"], ["--duration", "1h"]):
        with pytest.raises(SystemExit) as exc:
            main(["silences", "create", "--url", URL, *argv])
        assert exc.value.code == 2
    assert main(["silences", "create", "--url", URL, "--field", "novalue", "--duration", "1h", "--comment", "c"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_duration_arg() -> None:
    assert [client_cmd.duration_arg(t) for t in ("30", "30s", "90m", "2h", "1d", "1.5h")] == [
        30, 30, 5400, 7200, 86400, 5400]


def test_url_follows_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    monkeypatch.delenv("PIPESENTRY_URL", raising=False)
    config = tmp_path / "c.yml"
    config.write_text("api: {host: 0.0.0.0, port: 9123}\n")
    assert client_cmd.base_url(argparse.Namespace(url=None, config=config)) == "http://127.0.0.1:9123"
    assert client_cmd.base_url(argparse.Namespace(url="https://x.example/", config=None)) == "https://x.example"


async def test_against_a_running_service_located_by_its_config(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``pipesentry run`` as a child process on a free port; the CLI finds it through the same settings file."""
    import asyncio
    import contextlib

    from tests.support.api import INGESTER, MATCHING, TOKENS
    from tests.support.instances import Instance
    from tests.support.rules import CURL_RULE
    from tests.support.waits import until

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "curl.yml").write_text(CURL_RULE)
    instance = Instance(tmp_path, "svc", {"rules": {"paths": [str(rules)]}, "api": {"tokens": TOKENS}})
    try:
        await until(instance.ready, timeout=120, what="readiness", process=instance)
        async with httpx.AsyncClient(base_url=instance.url, timeout=30) as client:
            answer = await client.post("/api/v1/events?category=ci_job_log", content=MATCHING,
                                       headers={"Authorization": f"Bearer {INGESTER}",
                                                "content-type": "application/x-ndjson"})
            assert answer.status_code == 200, answer.text

            async def stored() -> bool:
                page = await client.get("/api/v1/alerts", headers={"Authorization": f"Bearer {READER}"})
                return bool(page.json().get("items"))

            await until(stored, timeout=60, what="the alert in the store", process=instance)
        monkeypatch.delenv("PIPESENTRY_URL", raising=False)
        monkeypatch.setenv("PIPESENTRY_TOKEN", READER)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = await asyncio.to_thread(main, ["alerts", "list", "--config", str(instance.config_path),
                                                  "--format", "json"])
        assert code == 0
        assert [d["rule"]["id"] for d in lines(out.getvalue())] != []  # type: ignore[index]
    finally:
        instance.stop()
