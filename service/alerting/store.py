"""Local SQLite alert store: the API's source of alerts and silences.

One file under the data directory, WAL mode, ``synchronous=NORMAL`` (a commit
survives a process crash; the spool in front of the store sink covers the rest).
Alerts are upserted by id, so re-delivery or a suppression count update
replaces the row instead of adding one. Calls are short and synchronous; the
router serialises writes through one connection guarded by a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from detectors.model import level_rank

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
"""


def parse_time(value: str) -> float:
    """RFC 3339 (``Z`` accepted) to unix seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class AlertQuery:
    rule: str | None = None
    """Rule id or exact rule name."""
    level: str | None = None
    """Minimum level."""
    since: float | None = None
    until: float | None = None
    text: str | None = None
    """Substring of the message, rule name or matched values (case-insensitive)."""
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    items: list[dict[str, Any]]


class AlertStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- alerts --------------------------------------------------------------
    def upsert(self, docs: Iterable[Mapping[str, Any]]) -> int:
        rows = [
            (d["event"]["id"], parse_time(d["@timestamp"]), d["rule"]["id"], d["rule"]["name"],
             d["pipesentry"]["level"], level_rank(d["pipesentry"]["level"]), d.get("message", ""),
             orjson.dumps(d))
            for d in docs
        ]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO alerts (id, ts, rule_id, rule_name, level, rank, message, doc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc=excluded.doc, "
                    "message=excluded.message", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def get(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def query(self, q: AlertQuery) -> Page:
        where: list[str] = []
        args: list[Any] = []
        if q.rule:
            where.append("(rule_id = ? OR rule_name = ?)")
            args += [q.rule, q.rule]
        if q.level:
            where.append("rank >= ?")
            args.append(level_rank(q.level))
        if q.since is not None:
            where.append("ts >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("ts < ?")
            args.append(q.until)
        if q.text:
            pattern = "%" + q.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(message LIKE ? ESCAPE '\\' OR CAST(doc AS TEXT) LIKE ? ESCAPE '\\')")
            args += [pattern, pattern]
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM alerts{clause}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT doc FROM alerts{clause} ORDER BY ts DESC, id LIMIT ? OFFSET ?",
                                    [*args, q.limit, q.offset]).fetchall()
        return Page(total=total, items=[orjson.loads(r[0]) for r in rows])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def prune(self, before: float) -> int:
        """Delete alerts older than ``before`` (retention)."""
        with self._lock:
            return self._db.execute("DELETE FROM alerts WHERE ts < ?", (before,)).rowcount

    # --- silences ------------------------------------------------------------
    def save_silence(self, silence_id: str, starts_at: float, ends_at: float, doc: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT INTO silences (id, starts_at, ends_at, doc) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT(id) DO UPDATE SET ends_at=excluded.ends_at, doc=excluded.doc",
                             (silence_id, starts_at, ends_at, orjson.dumps(doc)))

    def load_silences(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM silences ORDER BY starts_at").fetchall()
        return [orjson.loads(r[0]) for r in rows]
