"""Snapshot persistence: atomic writes, scopes, corrupt files moved aside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detectors.anomaly import AnomalyEngine, parse_checks
from service.state_store import StateStore, StateStoreError


def test_round_trip_per_scope_and_detector(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save("kafka:ci-logs:3", "anomaly", {"a": 1})
    store.save("kafka:ci-logs:3", "correlation", {"c": [1, 2]})
    store.save("local", "anomaly", {"b": 2.5})
    assert store.load("kafka:ci-logs:3", "anomaly") == {"a": 1}
    assert store.load("kafka:ci-logs:3", "correlation") == {"c": [1, 2]}
    assert store.load("local", "anomaly") == {"b": 2.5}
    assert store.load("kafka:ci-logs:4", "anomaly") is None
    assert store.scopes() == ["kafka:ci-logs:3", "local"]
    assert store.path("kafka:ci-logs:3", "anomaly") == tmp_path / "kafka%3Aci-logs%3A3" / "anomaly.json"


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for i in range(5):
        store.save("local", "anomaly", {"generation": i})
    assert store.load("local", "anomaly") == {"generation": 4}
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == ["anomaly.json"]


def test_scope_names_cannot_escape_the_root(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    path = store.save("../../etc", "anomaly", {})
    assert path.parent.parent == tmp_path / "state"
    assert store.scopes() == ["../../etc"]
    with pytest.raises(ValueError):
        store.path("local", "../x")
    with pytest.raises(ValueError):
        store.path("", "anomaly")


def test_corrupt_snapshot_is_moved_aside(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    target = store.save("local", "anomaly", {"ok": True})
    target.write_bytes(b'{"truncated": ')
    assert store.load("local", "anomaly") is None
    assert (target.parent / "anomaly.json.corrupt").read_bytes() == b'{"truncated": '
    assert not target.exists()
    target.write_text("[1, 2]")
    assert store.load("local", "anomaly") is None


def test_unwritable_location_raises_state_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = StateStore(blocker)
    with pytest.raises(StateStoreError):
        store.save("local", "anomaly", {"a": 1})
    with pytest.raises(ValueError):
        StateStore(tmp_path).save("local", "anomaly", {"bad": object()})


def test_delete(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save("local", "anomaly", {})
    assert store.delete("local", "anomaly") is True
    assert store.delete("local", "anomaly") is False
    assert store.scopes() == []


async def test_async_wrappers(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    await store.save_async("kafka:t:0", "anomaly", {"x": 1})
    assert await store.load_async("kafka:t:0", "anomaly") == {"x": 1}


def test_engine_snapshot_survives_a_restart_through_the_store(tmp_path: Path) -> None:
    specs, _ = parse_checks("{id: s, type: silence, by: [h], timeout: 1m, allowed_lateness: 0s}")
    first = AnomalyEngine(specs)
    for i in range(5):
        first.process({"h": "a"}, 1000.0 + i, None)
    StateStore(tmp_path).save("kafka:audit:0", "anomaly", first.snapshot())
    # another instance takes the partition over
    second = AnomalyEngine(specs)
    assert second.restore(StateStore(tmp_path).load("kafka:audit:0", "anomaly") or {}) == []
    (alert,) = second.advance(1100.0)
    assert json.loads(json.dumps(alert.details))["key"] == {"h": "a"}
