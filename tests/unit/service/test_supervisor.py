"""The service's background tasks are supervised: a crash is loud, counted, restarted, and readiness shows it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from service.app import Service
from service.config import Settings
from service.supervisor import Supervisor
from tests.support.faults import sample
from tests.support.rules import CURL_RULE
from tests.support.waits import until


def make_service(tmp_path: Path, **kw: Any) -> Service:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yml").write_text(CURL_RULE)
    settings = Settings(data_dir=tmp_path / "data", rules={"paths": [str(rules)], "watch": False},
                        api={"enabled": False}, stdin={"enabled": False}, alerting={"sinks": [{"type": "store"}]},
                        state={"heartbeat_interval_s": 0.02}, **kw)
    return Service(settings)


async def test_crashing_heartbeat_is_logged_restarted_and_fails_readiness(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    svc = make_service(tmp_path)
    svc.supervisor.initial_backoff_s = svc.supervisor.max_backoff_s = 0.05
    await svc.build()
    assert svc.detector is not None
    failing = {"on": True}
    real = svc.detector.heartbeat

    def heartbeat(*a: Any, **kw: Any) -> Any:
        if failing["on"]:
            raise RuntimeError("boom in heartbeat")
        return real(*a, **kw)

    svc.detector.heartbeat = heartbeat  # type: ignore[method-assign]
    before = sample("pipesentry_task_restarts_total", task="heartbeat")
    run = asyncio.create_task(svc.run(install_signals=False))
    try:
        with caplog.at_level(logging.ERROR):
            # readiness may be false at first for other reasons (start-up): wait for the crash itself too
            await until(lambda: sample("pipesentry_task_restarts_total", task="heartbeat") > before
                        and not svc.readiness().get("background_tasks_running", True),
                        what="a counted heartbeat crash, and readiness false while it is down")
        assert any(getattr(r, "task", None) == "heartbeat" and "boom" in r.getMessage() + str(r.exc_info)
                   for r in caplog.records)
        assert {"alert_sinks_running", "alert_sinks_no_local_fault", "alert_spools_accepting"} <= set(svc.readiness())
        failing["on"] = False
        await until(lambda: all(svc.readiness().values()), what="readiness back once the heartbeat runs")
        assert sample("pipesentry_task_up", task="heartbeat") == 1
    finally:
        svc.request_stop()
        await asyncio.wait_for(run, 30)


async def test_supervisor_backoff_is_capped_and_return_is_final() -> None:
    sup = Supervisor(initial_backoff_s=0.001, max_backoff_s=0.002)
    runs = {"n": 0}

    async def flaky() -> None:
        runs["n"] += 1
        if runs["n"] < 5:
            raise ValueError(f"crash {runs['n']}")

    task = sup.spawn("flaky", flaky)
    await asyncio.wait_for(task, 5)
    assert runs["n"] == 5
    assert sup.down() == []
    state = sup.state("flaky")
    assert state is not None and state.restarts == 4 and state.finished


async def test_supervisor_gives_up_when_told_and_reports_down() -> None:
    sup = Supervisor(initial_backoff_s=0.001)

    async def crash() -> None:
        raise OSError("gone")

    await asyncio.wait_for(sup.spawn("once", crash, restart=lambda: False), 5)
    assert sup.down() == ["once"]
    assert sample("pipesentry_task_up", task="once") == 0


async def test_readyz_follows_a_stuck_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: the cursor cannot be written; /readyz must not stay ready, and it recovers."""
    from tests.support.alerts import alert
    from tests.support.faults import DiskFaults

    faults = DiskFaults(monkeypatch)
    svc = make_service(tmp_path)
    await svc.build()
    run = asyncio.create_task(svc.run(install_signals=False))
    try:
        await until(lambda: svc.router._started, what="router started")
        faults.active.add("cursor")
        await svc.router.submit([alert(i) for i in range(3)])
        await until(lambda: not svc.readiness()["alert_sinks_no_local_fault"], what="readiness false")
        faults.active.clear()
        await svc.router.submit([alert(i) for i in range(3, 6)])
        await svc.router.wait_idle(10)
        assert svc.router.store.count() == 6
        await until(lambda: all(svc.readiness().values()), what="readiness back")
    finally:
        faults.active.clear()
        svc.request_stop()
        await asyncio.wait_for(run, 30)
