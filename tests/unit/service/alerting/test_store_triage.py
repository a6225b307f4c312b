"""Triage state in the alert store: kept across re-delivery and restarts, migrated into older stores."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from service.alerting.store import SCHEMA_VERSION, AlertQuery, AlertStore
from service.alerting.triage import MAX_NOTES, TriageConflict, TriagePatch
from service.alerting.triage_store import TriageStore
from tests.support.alerts import alert, rule

OLD_SCHEMA = """
CREATE TABLE alerts (id TEXT PRIMARY KEY, ts REAL NOT NULL, rule_id TEXT NOT NULL, rule_name TEXT NOT NULL,
    level TEXT NOT NULL, rank INTEGER NOT NULL, message TEXT NOT NULL, doc BLOB NOT NULL);
CREATE INDEX alerts_ts ON alerts (ts);
CREATE TABLE silences (id TEXT PRIMARY KEY, starts_at REAL NOT NULL, ends_at REAL NOT NULL, doc BLOB NOT NULL);
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlertStore]:
    s = AlertStore(tmp_path / "alerts.db", clock=lambda: 1_800_000_000.0)
    s.open()
    yield s
    s.close()


def test_redelivery_counts_but_never_resets_triage(store: AlertStore) -> None:
    a = alert(1)
    store.upsert([a.to_document()])
    triage = TriageStore(store)
    triage.change(a.id, TriagePatch(status="acknowledged", assignee="bob", set_assignee=True), "ana")
    triage.add_note(a.id, "ana", "looked at it")
    again = a.to_document()
    again["pipesentry"]["suppressed_count"] = 7
    again["event"]["created"] = "2030-01-01T00:00:00.000Z"  # a replay detects it later: the first time stays
    store.upsert([again, again])
    state = triage.state(a.id)
    assert state is not None
    assert (state["status"], state["assignee"], state["deliveries"]) == ("acknowledged", "bob", 3)
    assert state["detected"] == a.created and [n["text"] for n in state["notes"]] == ["looked at it"]
    assert store.get(a.id)["pipesentry"]["suppressed_count"] == 7  # type: ignore[index]


def test_triage_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    a, b = alert(1), alert(2)
    first = AlertStore(path)
    first.open()
    first.upsert([a.to_document(), b.to_document()])
    TriageStore(first).change(a.id, TriagePatch(status="resolved", disposition="false_positive"), "ana")
    first.close()
    second = AlertStore(path)
    second.open()
    try:
        triage = TriageStore(second)
        assert triage.state(a.id)["disposition"] == "false_positive"  # type: ignore[index]
        assert [h["field"] for h in triage.history(a.id) or []] == ["status", "disposition"]
        assert second.query(AlertQuery(statuses=("new",))).total == 1
    finally:
        second.close()


def test_an_older_store_is_migrated_and_its_alerts_are_new(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    docs = [alert(i, r=rule("r1", tags=("attack.t1059.001",)), ts=1_700_000_000.0 + i).to_document()
            for i in range(5)]
    db.executemany("INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [(d["event"]["id"], 1_700_000_000.0, "r1", "Rule r1", "high", 3, d["message"], orjson.dumps(d))
                    for d in docs])
    db.commit()
    db.close()
    store = AlertStore(path)
    store.open()
    try:
        page = store.query(AlertQuery(limit=10))
        assert page.total == 5 and {t["status"] for t in page.triage} == {"new"}
        assert [d["event"]["id"] for d in page.items] == [d["event"]["id"] for d in reversed(docs)]  # by detection
        assert store.query(AlertQuery(tag="T1059", host="h1", user="ALICE")).total == 5
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        store.close()


def test_notes_are_bounded_and_history_records_each_field(store: AlertStore, monkeypatch: pytest.MonkeyPatch) -> None:
    a = alert(1)
    store.upsert([a.to_document()])
    triage = TriageStore(store)
    assert triage.add_note("nope", "ana", "x") is None and triage.history("nope") is None
    monkeypatch.setattr("service.alerting.triage_store.MAX_NOTES", 2)
    triage.add_note(a.id, "ana", "one")
    triage.add_note(a.id, "bob", "two")
    with pytest.raises(TriageConflict):
        triage.add_note(a.id, "ana", "three")
    assert MAX_NOTES > 2
    history = triage.history(a.id) or []
    assert [(h["actor"], h["field"]) for h in history] == [("ana", "note"), ("bob", "note")]


def test_bulk_changes_what_fits_and_reports_the_rest(store: AlertStore) -> None:
    a, b = alert(1), alert(2)
    store.upsert([a.to_document(), b.to_document()])
    triage = TriageStore(store)
    triage.change(b.id, TriagePatch(status="acknowledged"), "ana")
    results = triage.change_many([a.id, b.id, "nope", a.id], TriagePatch(status="new"), "bob")
    assert [(i, r is not None, c is not None) for i, r, c in results] == [
        (a.id, True, False), (b.id, False, True), ("nope", False, False)]


def test_pruned_alerts_take_their_triage_rows_along(store: AlertStore) -> None:
    a = alert(1, ts=1_000.0)
    store.upsert([a.to_document()])
    TriageStore(store).add_note(a.id, "ana", "x")
    assert store.prune(2_000.0) == 1
    for table in ("alert_state", "alert_tags", "alert_entities", "alert_text", "alert_notes", "alert_history"):
        assert store._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table


@pytest.mark.parametrize("fts", [True, False])
def test_text_search_finds_substrings_of_values(store: AlertStore, fts: bool) -> None:
    store.fts = fts and store.fts  # False: the scan a SQLite without the trigram tokenizer uses
    a = alert(1, event={"user": "alice", "host": "h1", "cmd": 'curl "https://x.example/a b" | sh'})
    b = alert(2, event={"user": "bob", "host": "h2", "cmd": "ls"})
    store.upsert([a.to_document(), b.to_document()])

    def found(text: str) -> int:
        return store.query(AlertQuery(text=text)).total

    assert found("X.EXAMPLE/A B") == 1 and found('"https') == 1 and found("ls") == 1 and found("h") == 2
    assert found("cmd") == 0 and found("curl https") == 0 and found("%") == 0
    changed = a.to_document()
    changed["message"] = "renamed zebra"
    store.upsert([changed])
    assert found("zebra") == 1
    store.prune(2e9)
    assert found("alice") == 0 and found("zebra") == 0
