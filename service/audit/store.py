"""The audit trail's table in the local SQLite store (``audit`` in ``alerts.db``).

It shares the alert store's connection, lock and fault handling (a corrupt file
is moved aside and replaced, errors are counted as store errors), so it needs no
second writer on the same file. Rows are append-only; :meth:`AuditStore.prune`
deletes those past the retention.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from service.alerting.store import AlertStore


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None
    action: str | None = None
    """Exact action, or a prefix ending in ``.`` (``silence.`` for every silence action)."""
    actor: str | None = None
    outcome: str | None = None
    limit: int = 100


class AuditStore:
    """Insert, query and prune audit entries (plain dicts, see :class:`service.audit.trail.AuditEntry`)."""

    def __init__(self, store: AlertStore) -> None:
        self._store = store

    def insert(self, entry: dict[str, Any]) -> None:
        row = (entry["time"], entry["actor"], entry["action"], entry["outcome"], orjson.dumps(entry))
        self._store.call("audit_insert", lambda db: db.execute(
            "INSERT INTO audit (ts, actor, action, outcome, doc) VALUES (?, ?, ?, ?, ?)", row))

    def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        """Newest first."""
        where: list[str] = []
        args: list[Any] = []
        if q.since is not None:
            where.append("ts >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("ts < ?")
            args.append(q.until)
        if q.action:
            if q.action.endswith("."):
                where.append("substr(action, 1, ?) = ?")
                args += [len(q.action), q.action]
            else:
                where.append("action = ?")
                args.append(q.action)
        if q.actor:
            where.append("actor = ?")
            args.append(q.actor)
        if q.outcome:
            where.append("outcome = ?")
            args.append(q.outcome)
        clause = (" WHERE " + " AND ".join(where)) if where else ""

        def read(db: sqlite3.Connection) -> list[Any]:
            return db.execute(f"SELECT doc FROM audit{clause} ORDER BY ts DESC, seq DESC LIMIT ?",
                              [*args, q.limit]).fetchall()

        return [orjson.loads(r[0]) for r in self._store.call("audit_query", read)]

    def prune(self, before: float) -> int:
        """Delete entries older than ``before``; returns how many."""
        return int(self._store.call("audit_prune", lambda db: db.execute(
            "DELETE FROM audit WHERE ts < ?", (before,)).rowcount))
