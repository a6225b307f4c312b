"""Faults under the router: a full disk, a corrupt spool or store loses nothing and never stalls silently."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.alerting.config import AlertingSettings, RetrySettings, SpoolSettings
from service.alerting.router import AlertRouter, RouterError
from service.alerting.worker import SinkWorker
from tests.support.alerts import ListSink, alert
from tests.support.faults import FAST_RETRY, DiskFaults, sample, sink_up
from tests.support.waits import until


def store_router(tmp_path: Path, **kw: Any) -> AlertRouter:
    settings = AlertingSettings.model_validate(
        {"sinks": [{"type": "store", "retry": FAST_RETRY}], **kw})
    return AlertRouter(settings, tmp_path)


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


@pytest.mark.parametrize("policy", ["batch", "always"])
@pytest.mark.parametrize("point", ["write", "fsync", "open", "cursor"])
async def test_enospc_at_each_spool_write_point(point: str, policy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """While a write point fails: refused or delivered, never lost; loud; after it clears, delivery resumes."""
    faults = DiskFaults(monkeypatch)
    router = store_router(tmp_path, spool={"segment_bytes": 4096, "fsync": policy})
    await router.start()
    accepted: list[str] = []
    refused = 0
    errors_before = sum(sample("pipesentry_spool_errors_total", sink="store", op=op)
                        for op in ("append", "fsync", "cursor", "io"))
    try:
        with caplog.at_level(logging.ERROR):
            faults.active.add(point)
            for round_ in range(6):
                batch = [alert(round_ * 10 + i, event={"cmd": "z" * 300}) for i in range(10)]
                try:
                    await router.submit(batch)
                    accepted += [a.id for a in batch]
                except RouterError:
                    refused += 1
            if point in ("write", "fsync", "open"):
                assert refused, "a failing spool must refuse the batch"
                assert not router.health()["alert_spools_accepting"]
            else:
                await until(lambda: sink_up("store") == 0, what="sink_up 0 while the cursor cannot be written")
                assert not router.health()["alert_sinks_no_local_fault"]
            assert faults.hits.get(point)
            assert any(r.levelno >= logging.ERROR for r in caplog.records)
            errors = sum(sample("pipesentry_spool_errors_total", sink="store", op=op)
                         for op in ("append", "fsync", "cursor", "io"))
            assert errors > errors_before
        faults.active.clear()
        late = [alert(100 + i) for i in range(5)]
        await router.submit(late)
        accepted += [a.id for a in late]
        await router.wait_idle(10)
        for alert_id in accepted:
            assert router.store.get(alert_id) is not None, alert_id
        await until(lambda: sink_up("store") == 1 and all(router.health().values()), what="recovery")
    finally:
        faults.active.clear()
        await router.stop()


async def test_dead_letter_write_failure_keeps_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected record whose dead-letter write fails is not acknowledged: it is retried, not lost."""
    faults = DiskFaults(monkeypatch)
    sink = ListSink("dl", reject=frozenset({3, 7}))
    worker = SinkWorker(sink, durable=True, batch_size=4, retry=RetrySettings(**FAST_RETRY),
                        spool_dir=tmp_path / "spool", spool=SpoolSettings(), dead_letter=tmp_path / "dl.jsonl")
    await worker.start()
    try:
        faults.active.add("dead_letter")
        worker.append([orjson.dumps({"n": i}) for i in range(10)])
        await until(lambda: faults.hits.get("dead_letter", 0) >= 2, what="dead-letter retries")
        assert sink_up("dl") == 0 and worker.fault is not None
        assert worker.spool is not None and worker.spool.pending >= 7  # the batch with n=3 is not acknowledged
        faults.active.clear()
        await asyncio.wait_for(worker.wait_idle(), 10)
        dead = [orjson.loads(line)["record"]["n"] for line in (tmp_path / "dl.jsonl").read_bytes().splitlines()]
        assert sorted(set(dead)) == [3, 7]
        assert {r["n"] for r in sink.got} == set(range(10)) - {3, 7}
        await until(lambda: sink_up("dl") == 1 and worker.fault is None, what="recovery")
    finally:
        await worker.stop(drain_s=0)


async def test_full_spool_fails_readiness_until_it_drains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    router = store_router(tmp_path, spool={"max_bytes": 8192})
    await router.start()
    sink = router.workers["store"].sink
    gate = asyncio.Event()
    real = sink.deliver

    async def held(records: list[dict[str, Any]]) -> Any:
        await gate.wait()
        return await real(records)

    monkeypatch.setattr(sink, "deliver", held)
    accepted: list[str] = []
    try:
        with pytest.raises(RouterError):
            for i in range(100):
                a = alert(i)
                await router.submit([a])
                accepted.append(a.id)
        assert not router.health()["alert_spools_accepting"]
        gate.set()
        await router.wait_idle(10)
        await until(lambda: all(router.health().values()), what="readiness once the spool drained")
        assert all(router.store.get(i) is not None for i in accepted)
    finally:
        gate.set()
        await router.stop()


async def test_a_loop_crash_is_restarted_and_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should anything escape the delivery loop, the supervisor restarts it; sink_up and readiness show the gap."""
    router = store_router(tmp_path)
    router.supervisor.initial_backoff_s = router.supervisor.max_backoff_s = 0.2
    await router.start()
    worker = router.workers["store"]
    before = sample("pipesentry_task_restarts_total", task="sink:store")
    real_step, real_fault = worker._step, worker._local_fault
    broken = {"on": True}

    async def step(spool: Any) -> None:
        if broken["on"]:
            raise RuntimeError("bug in the loop")
        await real_step(spool)

    def fault(exc: BaseException | None) -> None:
        if broken["on"]:
            raise RuntimeError("bug in the fault handler")
        real_fault(exc)

    monkeypatch.setattr(worker, "_step", step)
    monkeypatch.setattr(worker, "_local_fault", fault)
    try:
        await until(lambda: sample("pipesentry_task_restarts_total", task="sink:store") > before, what="restart")
        assert sink_up("store") == 0 and worker.fault is not None
        await router.submit([alert(i) for i in range(3)])  # accepted while the loop is down
        broken["on"] = False
        await router.wait_idle(10)
        assert router.store.count() == 3
        await until(lambda: sink_up("store") == 1 and all(router.health().values()), what="recovery")
    finally:
        broken["on"] = False
        await router.stop()
