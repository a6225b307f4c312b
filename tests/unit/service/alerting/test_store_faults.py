"""The local alert store under faults: the real error surfaces, a corrupt file is moved aside, nothing is lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from service.alerting.store import AlertStore, StoreError
from tests.support.alerts import alert
from tests.support.faults import FAST_RETRY, sample, sink_up
from tests.support.waits import until


def fill(store: AlertStore) -> None:
    """Make the database 'full': no page may be added beyond the current ones."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")


def docs(n: int, start: int = 0) -> list[dict[str, object]]:
    out = []
    for i in range(start, start + n):
        d = alert(i).to_document()
        d["message"] = "x" * 4000
        out.append(d)
    return out


def test_disk_full_raises_the_real_error(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "alerts.db")
    store.open()
    fill(store)
    before = sample("pipesentry_store_errors_total", reason="full")
    with pytest.raises(StoreError, match="full") as info:
        store.upsert(docs(50))
    assert "cannot rollback" not in str(info.value)
    assert sample("pipesentry_store_errors_total", reason="full") == before + 1
    store._db.execute("PRAGMA max_page_count=1073741823")
    assert store.upsert(docs(3)) == 3  # the connection is usable again
    store.close()


async def test_store_full_marks_the_sink_down_and_recovers(tmp_path: Path) -> None:
    router = AlertRouter(AlertingSettings.model_validate({"sinks": [{"type": "store", "retry": FAST_RETRY}]}),
                         tmp_path)
    await router.start()
    try:
        fill(router.store)
        await router.submit([alert(i, event={"cmd": "x" * 4000}) for i in range(50)])
        await until(lambda: sink_up("store") == 0, what="sink_up 0 while the store is full")
        assert not router.health()["alert_sinks_no_local_fault"]
        router.store._db.execute("PRAGMA max_page_count=1073741823")
        await router.wait_idle(10)
        assert router.store.count() == 50
        await until(lambda: sink_up("store") == 1 and all(router.health().values()), what="recovery")
    finally:
        await router.stop()


def test_corrupt_database_at_start_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    path.write_bytes(b"not a database at all " * 500)
    before = sample("pipesentry_store_recoveries_total")
    store = AlertStore(path)
    store.open()  # moves the corrupt file aside
    assert store.upsert(docs(2)) == 2
    aside = list(tmp_path.glob("alerts.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")
    assert sample("pipesentry_store_recoveries_total") == before + 1
    store.close()


async def test_database_corrupted_while_stopped_recovers_and_delivers_from_the_spool(tmp_path: Path) -> None:
    settings = AlertingSettings.model_validate({"sinks": [{"type": "store", "retry": FAST_RETRY}]})
    router = AlertRouter(settings, tmp_path)
    await router.start()
    await router.submit([alert(i, event={"cmd": "y" * 500}) for i in range(300)])
    await router.wait_idle(10)
    await router.stop()
    db = tmp_path / "alerting" / "alerts.db"
    data = bytearray(db.read_bytes())
    for i in range(8192, len(data), 4096):  # leave the header, break the b-tree pages
        data[i:i + 64] = os.urandom(64)
    db.write_bytes(bytes(data))
    for extra in (db.with_name("alerts.db-wal"), db.with_name("alerts.db-shm")):
        extra.unlink(missing_ok=True)
    before = sample("pipesentry_store_recoveries_total")
    again = AlertRouter(settings, tmp_path)
    await again.start()
    try:
        await again.submit([alert(1000 + i) for i in range(5)])
        await again.wait_idle(10)
        await until(lambda: again.store.count() == 5, what="new alerts in the fresh store")
        assert sample("pipesentry_store_recoveries_total") == before + 1
        assert list((tmp_path / "alerting").glob("alerts.db.corrupt-*"))
    finally:
        await again.stop()
