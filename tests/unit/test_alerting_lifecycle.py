"""Constructors only store configuration; ``start()``/``stop()`` do the I/O, once each."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from service.alerting.silences import Silences
from service.alerting.store import AlertStore
from service.app import Service
from service.config import Settings

from .alerting_helpers import Clock, alert


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
