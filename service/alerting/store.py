"""Local SQLite alert store: the API's source of alerts and silences.

One file under the data directory, WAL mode, ``synchronous=NORMAL`` (a commit
survives a process crash; the spool in front of the store sink covers the rest).
Alerts are upserted by id, so re-delivery or a suppression count update
replaces the row instead of adding one. Calls are short and synchronous; the
router serialises writes through one connection guarded by a lock.

Faults: every SQLite error becomes a :class:`StoreError` carrying SQLite's own
message (a failed rollback never hides it) and is counted in
``pipesentry_store_errors_total{reason}``. A corrupt database (``SQLITE_CORRUPT``,
``SQLITE_NOTADB``), at start or later, is moved aside as
``alerts.db.corrupt-<UTC time>`` (with its -wal/-shm files), logged as an error,
counted in ``pipesentry_store_recoveries_total`` and replaced by a fresh one; the
failed call is retried once on it. Alerts not yet in the store stay in the store
sink's spool until delivered; silences are re-saved by the router
(``on_recovered``); older alerts stay in the moved-aside file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from detectors.model import level_rank
from service import metrics
from service.errors import RetriableError
from service.fileperms import private_dir, private_file

from .indexing import Indexed, index
from .queries import AlertQuery as AlertQuery
from .queries import Cursor, page_sql, where

log = logging.getLogger(__name__)
_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}
_FULL = {"SQLITE_FULL"}
_IO = {"SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    rule_id TEXT NOT NULL,
    rule_name TEXT NOT NULL,
    level TEXT NOT NULL,
    rank INTEGER NOT NULL,
    message TEXT NOT NULL,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts (rule_id, ts);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
"""

_TRIAGE_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_state (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    detected REAL NOT NULL,
    ts REAL NOT NULL,
    rank INTEGER NOT NULL,
    level TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    rule_name TEXT NOT NULL,
    product TEXT NOT NULL DEFAULT '',
    service TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'new',
    disposition TEXT,
    assignee TEXT,
    last_seen REAL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    updated REAL
);
CREATE INDEX IF NOT EXISTS alert_state_detected ON alert_state (detected, id);
CREATE INDEX IF NOT EXISTS alert_state_ts ON alert_state (ts);
CREATE INDEX IF NOT EXISTS alert_state_assignee ON alert_state (assignee, detected);
CREATE INDEX IF NOT EXISTS alert_state_rule ON alert_state (rule_id, detected);
CREATE INDEX IF NOT EXISTS alert_state_rule_name ON alert_state (rule_name, detected);
CREATE INDEX IF NOT EXISTS alert_state_rule_counts ON alert_state (rule_id, status, level, disposition);
CREATE INDEX IF NOT EXISTS alert_state_product ON alert_state (product, detected);
CREATE INDEX IF NOT EXISTS alert_state_service ON alert_state (service, detected);
CREATE INDEX IF NOT EXISTS alert_state_category ON alert_state (category, detected);
CREATE TABLE IF NOT EXISTS alert_tags (
    alert_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (alert_id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_tags_tag ON alert_tags (tag);
CREATE TABLE IF NOT EXISTS alert_entities (
    alert_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (alert_id, kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_entities_value ON alert_entities (kind, value);
CREATE TABLE IF NOT EXISTS alert_text (
    seq INTEGER PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_notes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    ts REAL NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_notes_alert ON alert_notes (alert_id, seq);
CREATE TABLE IF NOT EXISTS alert_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    field TEXT NOT NULL,
    old TEXT,
    new TEXT
);
CREATE INDEX IF NOT EXISTS alert_history_alert ON alert_history (alert_id, seq);
CREATE TRIGGER IF NOT EXISTS alerts_deleted AFTER DELETE ON alerts BEGIN
    DELETE FROM alert_text WHERE seq = (SELECT seq FROM alert_state WHERE id = old.id);
    DELETE FROM alert_state WHERE id = old.id;
    DELETE FROM alert_tags WHERE alert_id = old.id;
    DELETE FROM alert_entities WHERE alert_id = old.id;
    DELETE FROM alert_notes WHERE alert_id = old.id;
    DELETE FROM alert_history WHERE alert_id = old.id;
END;
"""
_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS alert_text_fts USING fts5(
    body, content='alert_text', content_rowid='seq', tokenize='trigram');
CREATE TRIGGER IF NOT EXISTS alert_text_added AFTER INSERT ON alert_text BEGIN
    INSERT INTO alert_text_fts (rowid, body) VALUES (new.seq, new.body);
END;
CREATE TRIGGER IF NOT EXISTS alert_text_removed AFTER DELETE ON alert_text BEGIN
    INSERT INTO alert_text_fts (alert_text_fts, rowid, body) VALUES ('delete', old.seq, old.body);
END;
CREATE TRIGGER IF NOT EXISTS alert_text_changed AFTER UPDATE ON alert_text BEGIN
    INSERT INTO alert_text_fts (alert_text_fts, rowid, body) VALUES ('delete', old.seq, old.body);
    INSERT INTO alert_text_fts (rowid, body) VALUES (new.seq, new.body);
END;
"""
"""The search text's trigram index (FTS5, SQLite 3.34+): ``q`` is a phrase query instead of a scan.
Kept in step with ``alert_text`` by triggers (an upsert, not ``INSERT OR REPLACE``, whose implicit
delete fires no trigger)."""

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a store with the triage tables.

Indexes serve the selective filters (rule, assignee, log source, times, entities) and the counts
(``alert_state_rule_counts`` covers the summary and the per-rule counts). Status and level have
none on purpose: with a handful of values each, SQLite would look up most rows one by one through
such an index; without one, a count reads the narrow table in order and a page walks the
detection-time index until it has its rows.

The queue's columns (detection time, level, rule, log source, triage state) live in the narrow
``alert_state`` table, not in ``alerts``: a filter or a count reads rows of ~150 bytes instead of
documents of kilobytes, and only the page's documents are read from ``alerts``."""
MIGRATION_BATCH = 2000
"""Rows of an older store indexed per transaction on open."""


class StoreError(RetriableError):
    """A store operation failed; ``reason`` is full, corrupt, io, closed (not opened yet) or other.
    A fault of this host (the store sink's worker treats it like a disk error)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _reason(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "") or ""
    base = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    if name in _CORRUPT or base in _CORRUPT:
        return "corrupt"
    if name in _FULL or base in _FULL:
        return "full"
    if name in _IO or base in _IO:
        return "io"
    return "other"


def parse_time(value: str) -> float:
    """RFC 3339 (``Z`` accepted) to unix seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    items: list[dict[str, Any]]
    """The alert documents, as stored."""
    triage: list[dict[str, Any]] = field(default_factory=list)
    """Each item's triage state (:meth:`AlertStore.query`), in the same order."""
    next_cursor: str | None = None
    """Continues after the last item (``None``: this was the last page)."""


def detection_time(doc: Mapping[str, Any], fallback: float) -> float:
    """When pipesentry raised the alert (``event.created``); ``fallback`` when absent or unreadable."""
    created = (doc.get("event") or {}).get("created")
    if isinstance(created, str):
        try:
            return parse_time(created)
        except ValueError:
            pass
    return fallback


def triage_row(row: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    """(status, disposition, assignee, detected, last_seen, deliveries, updated, notes) as the API shows it."""
    status, disposition, assignee, detected, last_seen, deliveries, updated, notes = row
    return {"status": status, "disposition": disposition, "assignee": assignee, "detected": detected,
            "last_seen": last_seen, "deliveries": deliveries, "updated": updated, "notes": notes}


def _write_index(db: sqlite3.Connection, extras: list[tuple[str, Indexed]]) -> None:
    """Tags, entities and search text of alerts whose ``alert_state`` rows are written already."""
    db.executemany("INSERT OR IGNORE INTO alert_tags (alert_id, tag) VALUES (?, ?)",
                   [(alert_id, tag) for alert_id, ix in extras for tag in ix.tags])
    db.executemany("INSERT OR IGNORE INTO alert_entities (alert_id, kind, value) VALUES (?, ?, ?)",
                   [(alert_id, kind, value) for alert_id, ix in extras for kind, value in ix.entities])
    # keyed by the alert's alert_state row: a text match is a list of those rows, no lookup by id
    db.executemany("INSERT INTO alert_text (seq, body) SELECT seq, ? FROM alert_state WHERE id = ? "
                   "ON CONFLICT(seq) DO UPDATE SET body = excluded.body WHERE body != excluded.body",
                   [(ix.search, alert_id) for alert_id, ix in extras])


def _migrate(db: sqlite3.Connection) -> bool:
    """Bring a store of an older version to :data:`SCHEMA_VERSION`: create the triage tables and give
    each alert without a state row one (``new``) and its index rows, a batch per transaction.
    Returns whether the trigram index exists (this SQLite has FTS5 with the trigram tokenizer)."""
    db.executescript(_TRIAGE_SCHEMA)
    had_fts = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'alert_text_fts'").fetchone() is not None
    try:
        db.executescript(_FTS_SCHEMA)
        fts = True
        if not had_fts:  # search text written while this SQLite had no trigram tokenizer: index it now
            db.execute("INSERT INTO alert_text_fts (alert_text_fts) VALUES ('rebuild')")
    except sqlite3.OperationalError as exc:  # no FTS5, or no trigram tokenizer (SQLite < 3.34)
        log.warning("alert store: no trigram index for text search (q scans instead)", extra={"error": str(exc)})
        fts = False
    done = 0
    while True:
        rows = db.execute("SELECT a.id, a.ts, a.doc FROM alerts a WHERE NOT EXISTS "
                          "(SELECT 1 FROM alert_state s WHERE s.id = a.id) LIMIT ?", (MIGRATION_BATCH,)).fetchall()
        if not rows:
            break
        db.execute("BEGIN")
        try:
            extras: list[tuple[str, Indexed]] = []
            states: list[tuple[Any, ...]] = []
            for alert_id, ts, blob in rows:
                try:
                    doc = orjson.loads(blob)
                    indexed = index(doc)
                    state = _state_row(alert_id, doc, indexed, ts, ts)
                    extras.append((alert_id, indexed))
                except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError, ValueError):
                    state = (alert_id, ts, ts, 0, "informational", "", "", "", "", "", ts)
                states.append(state)
            db.executemany(_INSERT_STATE, states)
            _write_index(db, extras)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        done += len(rows)
    if done:
        log.info("alert store migrated: alerts indexed for triage and filters", extra={"alerts": done})
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return fts


_INSERT_STATE = (
    "INSERT INTO alert_state (id, detected, ts, rank, level, rule_id, rule_name, product, service, category, "
    "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET deliveries = deliveries + 1, last_seen = excluded.last_seen")
"""A new alert's state row; a known one only counts the delivery (its triage state and detection time stay)."""


def _state_row(alert_id: str, doc: Mapping[str, Any], indexed: Indexed, ts: float, now: float) -> tuple[Any, ...]:
    level = doc["pipesentry"]["level"]
    return (alert_id, detection_time(doc, ts), ts, level_rank(level), level, doc["rule"]["id"],
            doc["rule"]["name"], indexed.product, indexed.service, indexed.category, now)


class AlertStore:
    """The SQLite file at ``path``; :meth:`open` creates or opens it, :meth:`close` closes it."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        """Unix seconds: when an alert was last delivered (``last_seen``), when triage changed it."""
        self._lock = threading.Lock()
        self.on_recovered: Callable[[], None] | None = None
        """Called (outside the lock) after a corrupt database was replaced by a fresh one."""
        self.recoveries = 0
        self._db_handle: sqlite3.Connection | None = None
        self.fts = True
        """The store has the trigram index of the search text (set on open)."""

    def open(self) -> None:
        """Create the directory and open (or create) the database; a corrupt one is moved aside.
        Opening an open store does nothing."""
        with self._lock:
            if self._db_handle is not None:
                return
            private_dir(self.path.parent)
            try:
                self._db_handle = self._connect()
            except sqlite3.DatabaseError as exc:
                if _reason(exc) != "corrupt":
                    raise StoreError(f"alert store {self.path}: {exc}", _reason(exc)) from exc
                self._move_aside(exc)
                self._db_handle = self._connect()

    @property
    def _db(self) -> sqlite3.Connection:
        if self._db_handle is None:
            raise StoreError(f"alert store {self.path} is not open", "closed")
        return self._db_handle

    @_db.setter
    def _db(self, db: sqlite3.Connection) -> None:
        self._db_handle = db

    def _connect(self) -> sqlite3.Connection:
        # created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the database's mode
        for path in (self.path, *(self.path.with_name(self.path.name + x) for x in ("-wal", "-shm"))):
            if path is self.path or path.exists():
                private_file(path)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self.fts = _migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: BaseException) -> None:
        """Rename the corrupt file (and its WAL) out of the way, loudly."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            src = self.path.with_name(self.path.name + suffix)
            if src.exists():
                src.replace(target.with_name(target.name + suffix))
        self.recoveries += 1
        metrics.STORE_RECOVERIES.inc()
        log.error("alert store is corrupt: moved aside, starting a fresh one", extra={
            "path": str(self.path), "moved_to": str(target), "error": repr(exc)})

    def _fail(self, exc: sqlite3.Error, op: str) -> StoreError:
        reason = _reason(exc)
        metrics.STORE_ERRORS.labels(reason=reason).inc()
        log.error("alert store operation failed", extra={"op": op, "reason": reason, "error": str(exc),
                                                         "path": str(self.path)})
        return StoreError(f"alert store {op} failed ({reason}): {exc}", reason)

    def _call(self, op: str, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` on the connection; a corrupt database is replaced and ``fn`` retried once."""
        recovered = False
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                error = self._fail(exc, op)
                if error.reason != "corrupt":
                    raise error from exc
                try:
                    self._db.close()
                    self._move_aside(exc)
                    self._db = self._connect()
                except (OSError, sqlite3.Error) as again:
                    raise StoreError(f"alert store is corrupt and cannot be replaced: {again}", "corrupt") from again
                recovered = True
                try:
                    result = fn(self._db)
                except sqlite3.Error as exc2:
                    raise self._fail(exc2, op) from exc2
        if recovered and self.on_recovered is not None:
            try:
                self.on_recovered()
            except Exception:
                log.exception("store recovery hook failed")
        return result

    def call(self, op: str, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` on the store's connection with the store's fault handling (the audit trail's own
        table lives in this file: :mod:`service.audit.store`)."""
        return self._call(op, fn)

    def close(self) -> None:
        """Close the database; closing a closed store does nothing."""
        with self._lock:
            if self._db_handle is not None:
                self._db_handle.close()
                self._db_handle = None

    # --- alerts --------------------------------------------------------------
    def upsert(self, docs: Iterable[Mapping[str, Any]]) -> int:
        """Insert new alerts; a known id gets the new document (suppression count) and a delivery
        counted, never a reset of its triage state, notes or detection time."""
        now = self.clock()
        rows: list[tuple[Any, ...]] = []
        states: list[tuple[Any, ...]] = []
        extras: list[tuple[str, Indexed]] = []
        for d in docs:
            indexed = index(d)
            ts = parse_time(d["@timestamp"])
            rows.append((d["event"]["id"], ts, d["rule"]["id"], d["rule"]["name"], d["pipesentry"]["level"],
                         level_rank(d["pipesentry"]["level"]), d.get("message", ""), orjson.dumps(d)))
            states.append(_state_row(d["event"]["id"], d, indexed, ts, now))
            extras.append((d["event"]["id"], indexed))

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO alerts (id, ts, rule_id, rule_name, level, rank, message, doc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc=excluded.doc, "
                    "message=excluded.message", rows)
                db.executemany(_INSERT_STATE, states)
                _write_index(db, extras)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already (disk full): keep the real error
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.warning("rollback after a failed store write failed", exc_info=True)
                raise

        self._call("upsert", write)
        return len(rows)

    def get(self, alert_id: str) -> dict[str, Any] | None:
        row = self._call("get", lambda db: db.execute("SELECT doc FROM alerts WHERE id = ?",
                                                      (alert_id,)).fetchone())
        return orjson.loads(row[0]) if row else None

    def query(self, q: AlertQuery) -> Page:
        """A page of alerts (newest detection first) with their triage state, and the total matching."""
        clause, args = where(q, fts=self.fts)

        def read(db: sqlite3.Connection) -> tuple[int, list[Any], dict[str, bytes]]:
            total = db.execute(f"SELECT COUNT(*) FROM alert_state{clause}", args).fetchone()[0]
            sql, page_args = page_sql(q, fts=self.fts, matching=total)  # the plan depends on how many
            rows = db.execute(sql, page_args).fetchall()
            ids = [r[1] for r in rows]
            docs = dict(db.execute(f"SELECT id, doc FROM alerts WHERE id IN ({','.join('?' * len(ids))})",
                                   ids).fetchall()) if ids else {}
            return int(total), rows, docs

        total, rows, docs = self._call("query", read)
        rows = [r for r in rows if r[1] in docs]
        items = [orjson.loads(docs[r[1]]) for r in rows]
        triage = [triage_row(r[2:]) for r in rows]
        last = rows[-1] if len(rows) == q.limit else None
        cursor = Cursor(float(last[5]), int(last[0])).encode() if last is not None else None
        return Page(total=total, items=items, triage=triage, next_cursor=cursor)

    def count(self) -> int:
        return int(self._call("count", lambda db: db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]))

    def prune(self, before: float) -> int:
        """Delete alerts older than ``before`` (retention)."""
        return int(self._call("prune", lambda db: db.execute("DELETE FROM alerts WHERE ts < ?", (before,)).rowcount))

    # --- silences ------------------------------------------------------------
    def save_silence(self, silence_id: str, starts_at: float, ends_at: float, doc: Mapping[str, Any]) -> None:
        self._call("save_silence", lambda db: db.execute(
            "INSERT INTO silences (id, starts_at, ends_at, doc) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET ends_at=excluded.ends_at, doc=excluded.doc",
            (silence_id, starts_at, ends_at, orjson.dumps(doc))))

    def load_silences(self) -> list[dict[str, Any]]:
        rows = self._call("load_silences",
                          lambda db: db.execute("SELECT doc FROM silences ORDER BY starts_at").fetchall())
        return [orjson.loads(r[0]) for r in rows]
