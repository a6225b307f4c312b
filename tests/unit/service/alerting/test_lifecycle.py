"""Constructors only store configuration; ``start()``/``stop()`` do the I/O, once each."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.alerting.config import AlertingSettings, SpoolSettings
from service.alerting.router import AlertRouter
from service.alerting.silences import Silences
from service.alerting.sinks.settings import RetrySettings
from service.alerting.store import AlertStore, StoreError
from service.alerting.worker import SinkWorker
from service.app import Service
from service.config import Settings
from tests.support.alerts import Clock, ListSink, alert


def _settings() -> AlertingSettings:
    return AlertingSettings.model_validate({
        "sinks": [{"type": "store"}, {"type": "stdout"}, {"type": "null", "durable": True}],
        "receivers": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/x"}],
        "routes": [{"receivers": ["hook"]}],
    })


def test_router_constructor_touches_no_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    router = AlertRouter(_settings(), data)
    assert not data.exists()
    assert router.workers == {}


def test_service_constructor_touches_no_file(tmp_path: Path) -> None:
    Service(Settings.model_validate({"data_dir": str(tmp_path / "data")}))
    assert not (tmp_path / "data").exists()


def test_store_and_silences_open_on_demand(tmp_path: Path) -> None:
    path = tmp_path / "db" / "alerts.db"
    store = AlertStore(path)
    silences = Silences(store)
    assert not path.parent.exists()
    store.open()
    store.open()  # a second open is a no-op
    silences.load()
    assert path.exists() and silences.list(0.0) == []
    store.close()
    store.close()  # idempotent


async def test_start_twice_and_stop_twice(tmp_path: Path) -> None:
    clock = Clock()
    router = AlertRouter(_settings(), tmp_path, clock=clock)
    await router.start()
    workers = dict(router.workers)
    await router.start()  # guarded: the same workers, no second set of tasks
    assert router.workers == workers
    await router.submit([alert(1)])
    await asyncio.wait_for(router.workers["store"].wait_idle(), 10)  # the webhook has no server: it retries
    assert router.store.count() == 1
    await router.stop(drain_s=0)  # the webhook's page stays spooled
    await router.stop()  # idempotent
    again = AlertRouter(_settings(), tmp_path, clock=clock)
    await again.start()
    assert again.store.count() == 1  # what the first run stored is read back after a restart
    await again.stop(drain_s=0)


async def test_stop_closes_in_reverse_order(tmp_path: Path) -> None:
    """Sinks stop (and drain into the store) before the store closes; workers stop last-first."""
    router = AlertRouter(_settings(), tmp_path)
    await router.start()
    order: list[str] = []
    for name, w in router.workers.items():
        original = w.stop

        async def stop(drain_s: float = 5.0, _n: str = name, _orig=original) -> None:  # type: ignore[no-untyped-def]
            order.append(_n)
            await _orig(drain_s=drain_s)

        w.stop = stop  # type: ignore[method-assign]
    store_close = router.store.close

    def close() -> None:
        order.append("store-closed")
        store_close()

    router.store.close = close  # type: ignore[method-assign]
    await router.stop()
    assert order == ["hook", "null", "stdout", "store", "store-closed"]


class CountingSink(ListSink):
    def __init__(self) -> None:
        super().__init__("counting")
        self.starts = self.stops = 0

    async def start(self) -> None:
        self.starts += 1

    async def stop(self) -> None:
        self.stops += 1


async def test_worker_starts_and_stops_its_sink_once(tmp_path: Path) -> None:
    for durable in (False, True):
        sink = CountingSink()
        worker = SinkWorker(sink, durable=durable, batch_size=10, retry=RetrySettings(),
                            spool_dir=tmp_path / f"spool-{durable}", spool=SpoolSettings(),
                            dead_letter=tmp_path / "dead.jsonl")
        await worker.start()
        await worker.start()
        await worker.stop()
        await worker.stop()
        assert (sink.starts, sink.stops) == (1, 1), durable
        await worker.start()  # a stopped worker may start again
        await worker.stop()
        assert (sink.starts, sink.stops) == (2, 2), durable


async def test_a_failed_start_leaves_nothing_open_and_can_be_retried(tmp_path: Path) -> None:
    settings = AlertingSettings.model_validate({"sinks": [{"type": "stdout"}, {"type": "store"}]})
    blocker = tmp_path / "alerting" / "spool"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the spool directory goes")
    router = AlertRouter(settings, tmp_path)
    with pytest.raises(OSError):
        await router.start()
    assert router.workers == {} and router.supervisor.status() == {}
    with pytest.raises(StoreError, match="not open"):
        router.store.count()
    blocker.unlink()
    await router.start()
    assert router.store.count() == 0 and set(router.workers) == {"stdout", "store"}
    await router.stop()
