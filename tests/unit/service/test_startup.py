"""Start-up: the API port is bound first, liveness is served while the rules load, the load's
progress is logged, and a second instance on a taken port fails first and clearly (``service.startup``)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from devservices.process import free_port
from service import app as app_module
from service.app import Service, StartupError
from service.config import Settings
from service.startup import BindError, LoadProgress, StartingApi, bind_api_socket, log_progress
from tests.support.rules import CURL_RULE
from tests.support.waits import until

REPO = Path(__file__).resolve().parents[3]


def settings(tmp_path: Path, port: int, **api: Any) -> Settings:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "curl.yml").write_text(CURL_RULE)
    return Settings(rules={"paths": [str(rules)], "watch": False},  # type: ignore[arg-type]
                    data_dir=tmp_path / "data", stdin={"enabled": False},  # type: ignore[arg-type]
                    api={"port": port, **api})  # type: ignore[arg-type]


async def get(url: str) -> httpx.Response | None:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.get(url)
    except httpx.HTTPError:
        return None


async def test_liveness_is_served_while_the_rules_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    real = app_module.compile_configured

    def slow_compile(*args: Any) -> Any:
        assert release.wait(60), "the test never released the rules load"
        return real(*args)

    monkeypatch.setattr(app_module, "compile_configured", slow_compile)
    port = free_port()
    service = Service(settings(tmp_path, port, metrics_public=True))
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(service.run(install_signals=False))
    base = f"http://127.0.0.1:{port}"
    try:
        await until(lambda: get(base + "/healthz"), 30, "/healthz while loading")
        health = await get(base + "/healthz")
        ready = await get(base + "/readyz")
        other = await get(base + "/api/v1/rules")
        scrape = await get(base + "/metrics")
        assert health is not None and health.status_code == 200 and health.json()["phase"] == "loading rules"
        assert ready is not None and ready.status_code == 503 and ready.json()["checks"] == {"rules_loaded": False}
        assert other is not None and other.status_code == 503 and other.headers["retry-after"] == "5"
        assert scrape is not None and scrape.status_code == 200 and "pipesentry_" in scrape.text
        assert not any(r.getMessage() == "pipesentry running" for r in caplog.records)
        release.set()

        async def ready_now() -> bool:
            response = await get(base + "/readyz")
            return response is not None and response.status_code == 200

        await until(ready_now, 60, "readiness after the load")
        health = await get(base + "/healthz")
        assert health is not None and health.json() == {"status": "ok"}
    finally:
        release.set()
        service.request_stop()
        await asyncio.wait_for(task, 60)
    loaded = [r for r in caplog.records if r.getMessage() == "rules loaded"]
    assert loaded and loaded[0].__dict__["files_read"] == 1 and loaded[0].__dict__["rules_compiled"] == 1
    assert "seconds" in loaded[0].__dict__


async def test_a_taken_port_fails_before_the_rules_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("rules compiled although the port is taken")

    monkeypatch.setattr(app_module, "compile_configured", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            await Service(settings(tmp_path, port)).run(install_signals=False)


def test_a_second_instance_reports_the_port_first_and_exits_non_zero(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPESENTRY_")}
        env["PYTHONPATH"] = str(REPO)
        done = subprocess.run([sys.executable, "-m", "service.cli", "run", "--port", str(port)], cwd=tmp_path,
                              stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=120)
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "\"pipesentry running\"" not in err and "rules loaded" not in err
    first = orjson.loads(err.splitlines()[0])
    assert first["level"] == "error" and first["port"] == port and str(port) in first["error"]
    assert f"cannot listen on 127.0.0.1:{port}" in err.splitlines()[-1]


def test_bind_error_names_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BindError, match=f"127.0.0.1:{port}: .*perhaps another pipesentry"):
            bind_api_socket("127.0.0.1", port)
    with pytest.raises(BindError, match="unknown host"):
        bind_api_socket("no-such-host.invalid", 0)
    sock = bind_api_socket("127.0.0.1", 0)
    sock.close()


def test_load_progress_counts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    progress = LoadProgress(clock=lambda: now[0])
    for step, count in (("read", 3), ("parsed", 2), ("compiled", 1), ("future-step", 9)):
        progress(step, count)
    now[0] = 2.25
    assert progress.fields() == {"files_read": 3, "files_parsed": 2, "rules_compiled": 1, "seconds": 2.2}

    async def main() -> None:
        done = asyncio.Event()
        ticker = asyncio.create_task(log_progress(progress, done, interval_s=0.01))
        await until(lambda: any(r.getMessage() == "loading rules" for r in caplog.records), 10, "a progress line")
        done.set()
        await ticker

    caplog.set_level(logging.INFO, logger="service.startup")
    asyncio.run(main())


async def test_starting_api_refuses_everything_else() -> None:
    transport = httpx.ASGITransport(app=StartingApi(metrics_public=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        assert (await client.get("/metrics")).status_code == 503
        assert (await client.post("/api/v1/events", content=b"{}")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200
