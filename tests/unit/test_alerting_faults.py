"""Faults under the router: a full disk, a corrupt spool or store loses nothing and never stalls silently."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter

from .alerting_helpers import alert
from .fault_helpers import DiskFaults, sample, until

FAST_RETRY = {"initial_backoff_s": 0.01, "max_backoff_s": 0.05, "breaker_failures": 100, "breaker_reset_s": 0.05}


def store_router(tmp_path: Path, **kw: Any) -> AlertRouter:
    settings = AlertingSettings.model_validate(
        {"sinks": [{"type": "store", "retry": FAST_RETRY}], **kw})
    return AlertRouter(settings, tmp_path)


def sink_up(name: str) -> float:
    return sample("pipesentry_sink_up", sink=name)


async def test_cursor_write_enospc_is_loud_and_delivery_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    faults = DiskFaults(monkeypatch)
    router = store_router(tmp_path)
    await router.start()
    try:
        faults.active.add("cursor")
        with caplog.at_level(logging.WARNING):
            await router.submit([alert(i) for i in range(3)])
            await until(lambda: sink_up("store") == 0, what="sink_up 0 while the cursor cannot be written")
        assert not all(router.health().values())
        assert any(getattr(r, "sink", None) == "store" and r.levelno >= logging.ERROR for r in caplog.records)
        assert sample("pipesentry_spool_errors_total", sink="store", op="cursor") >= 1
        faults.active.clear()
        await router.submit([alert(i) for i in range(3, 6)])
        await router.wait_idle(10)
        assert router.store.count() == 6
        await until(lambda: sink_up("store") == 1, what="sink_up back to 1")
        assert all(router.health().values())
    finally:
        await router.stop()
