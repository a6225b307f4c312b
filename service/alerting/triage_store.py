"""Triage state in the alert store: status changes, notes, history and the counts behind the console.

It shares the alert store's connection, lock and fault handling (as the audit
trail's table does). A change is read, checked (:func:`.triage.plan`) and
written in one transaction under the store's lock, so two analysts acting on
the same alert at once cannot both move it from ``new``: the second sees the
first's result. Every field changed is a row of ``alert_history`` (actor, time,
field, old, new); notes are append-only rows of ``alert_notes``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .queries import AlertQuery, where
from .store import AlertStore, triage_row
from .triage import MAX_NOTES, FieldChange, TriageConflict, TriagePatch, TriageState, apply, plan

MAX_HISTORY = 1000
"""History rows one request returns (newest kept)."""
MAX_SUMMARY_RULES = 100
"""Rules listed by :meth:`TriageStore.summary` (the busiest)."""


@dataclass(frozen=True, slots=True)
class TriageResult:
    alert_id: str
    rule_id: str
    state: TriageState
    changes: list[FieldChange]


@dataclass(frozen=True, slots=True)
class RuleAlertStats:
    alerts: int
    resolved: int
    false_positives: int

    @property
    def false_positive_ratio(self) -> float | None:
        """False positives among the resolved alerts (``None``: none resolved yet)."""
        return round(self.false_positives / self.resolved, 4) if self.resolved else None

    def as_dict(self) -> dict[str, Any]:
        return {"alerts": self.alerts, "resolved": self.resolved, "false_positives": self.false_positives,
                "false_positive_ratio": self.false_positive_ratio}


_STATE = "SELECT rule_id, status, disposition, assignee FROM alert_state WHERE id = ?"


def _change(db: sqlite3.Connection, alert_id: str, patch: TriagePatch, actor: str,
            now: float) -> TriageResult | None:
    row = db.execute(_STATE, (alert_id,)).fetchone()
    if row is None:
        return None
    current = TriageState(status=row[1], disposition=row[2], assignee=row[3])
    changes = plan(current, patch)
    state = apply(current, changes)
    if changes:
        db.execute("UPDATE alert_state SET status = ?, disposition = ?, assignee = ?, updated = ? WHERE id = ?",
                   (state.status, state.disposition, state.assignee, now, alert_id))
        db.executemany("INSERT INTO alert_history (alert_id, ts, actor, field, old, new) VALUES (?, ?, ?, ?, ?, ?)",
                       [(alert_id, now, actor, c.field, c.old, c.new) for c in changes])
    return TriageResult(alert_id=alert_id, rule_id=row[0], state=state, changes=changes)


def _in_transaction(db: sqlite3.Connection, fn: Callable[[], Any]) -> Any:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn()
        db.execute("COMMIT")
        return result
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class TriageStore:
    """Triage reads and writes over an open :class:`AlertStore` (blocking: call in a worker thread)."""

    def __init__(self, store: AlertStore) -> None:
        self._store = store

    def change(self, alert_id: str, patch: TriagePatch, actor: str) -> TriageResult | None:
        """Apply ``patch``; ``None``: no such alert. Raises :class:`.triage.TriageError`."""
        now = self._store.clock()
        result: TriageResult | None = self._store.call("triage", lambda db: _in_transaction(
            db, lambda: _change(db, alert_id, patch, actor, now)))
        return result

    def change_many(self, ids: Iterable[str], patch: TriagePatch,
                    actor: str) -> list[tuple[str, TriageResult | None, str | None]]:
        """Apply ``patch`` to each alert in one transaction: (id, result or ``None`` if unknown, conflict
        reason if it did not fit that alert). Alerts that fit are changed even when others do not."""
        now = self._store.clock()
        unique = list(dict.fromkeys(ids))

        def each(db: sqlite3.Connection) -> list[tuple[str, TriageResult | None, str | None]]:
            out: list[tuple[str, TriageResult | None, str | None]] = []
            for alert_id in unique:
                try:
                    out.append((alert_id, _change(db, alert_id, patch, actor, now), None))
                except TriageConflict as exc:
                    out.append((alert_id, None, str(exc)))
            return out

        found: list[tuple[str, TriageResult | None, str | None]] = self._store.call(
            "triage_bulk", lambda db: _in_transaction(db, lambda: each(db)))
        return found

    def state(self, alert_id: str) -> dict[str, Any] | None:
        """The alert's triage state with its notes (oldest first), or ``None``."""

        def read(db: sqlite3.Connection) -> tuple[Any, list[Any]] | None:
            row = db.execute("SELECT status, disposition, assignee, detected, last_seen, deliveries, updated, "
                             "(SELECT COUNT(*) FROM alert_notes n WHERE n.alert_id = alert_state.id) "
                             "FROM alert_state WHERE id = ?", (alert_id,)).fetchone()
            if row is None:
                return None
            notes = db.execute("SELECT seq, ts, author, text FROM alert_notes WHERE alert_id = ? ORDER BY seq",
                               (alert_id,)).fetchall()
            return row, notes

        found = self._store.call("triage_state", read)
        if found is None:
            return None
        row, notes = found
        state = triage_row(row)
        state["notes"] = [{"id": n[0], "time": n[1], "author": n[2], "text": n[3]} for n in notes]
        return state

    def add_note(self, alert_id: str, author: str, text: str) -> dict[str, Any] | None:
        """Append a note; ``None``: no such alert. Raises :class:`TriageConflict` past ``MAX_NOTES``."""
        now = self._store.clock()

        def write(db: sqlite3.Connection) -> dict[str, Any] | None:
            if db.execute("SELECT 1 FROM alert_state WHERE id = ?", (alert_id,)).fetchone() is None:
                return None
            count = db.execute("SELECT COUNT(*) FROM alert_notes WHERE alert_id = ?", (alert_id,)).fetchone()[0]
            if count >= MAX_NOTES:
                raise TriageConflict(f"the alert holds {MAX_NOTES} notes already")
            seq = db.execute("INSERT INTO alert_notes (alert_id, ts, author, text) VALUES (?, ?, ?, ?)",
                             (alert_id, now, author, text)).lastrowid
            db.execute("INSERT INTO alert_history (alert_id, ts, actor, field, old, new) VALUES (?, ?, ?, ?, ?, ?)",
                       (alert_id, now, author, "note", None, str(seq)))
            return {"id": seq, "time": now, "author": author, "text": text}

        note: dict[str, Any] | None = self._store.call("triage_note", lambda db: _in_transaction(
            db, lambda: write(db)))
        return note

    def history(self, alert_id: str, limit: int = MAX_HISTORY) -> list[dict[str, Any]] | None:
        """The alert's changes, oldest first (the last ``limit``); ``None``: no such alert."""

        def read(db: sqlite3.Connection) -> list[Any] | None:
            if db.execute("SELECT 1 FROM alert_state WHERE id = ?", (alert_id,)).fetchone() is None:
                return None
            rows: list[Any] = db.execute(
                "SELECT seq, ts, actor, field, old, new FROM alert_history WHERE alert_id = ? "
                "ORDER BY seq DESC LIMIT ?", (alert_id, limit)).fetchall()
            return rows

        rows = self._store.call("triage_history", read)
        if rows is None:
            return None
        return [{"id": r[0], "time": r[1], "actor": r[2], "field": r[3], "old": r[4], "new": r[5]}
                for r in reversed(rows)]

    def summary(self, q: AlertQuery) -> dict[str, Any]:
        """Counts of the alerts ``q`` matches (paging ignored): total, by level, by status and by rule
        (the :data:`MAX_SUMMARY_RULES` busiest)."""
        clause, args = where(q, fts=self._store.fts)

        def read(db: sqlite3.Connection) -> tuple[list[Any], dict[str, str]]:
            # filtered: "+" keeps SQLite from walking the whole covering index in group order only to
            # look every row up for the filter; it uses the filter's own index and sorts the few rows
            group = "+rule_id, +status, +level" if clause else "rule_id, status, level"
            groups: list[Any] = db.execute(f"SELECT rule_id, status, level, COUNT(*) FROM alert_state{clause} "
                                           f"GROUP BY {group}", args).fetchall()
            counts: dict[str, int] = {}
            for rule_id, _, _, n in groups:
                counts[rule_id] = counts.get(rule_id, 0) + n
            top = sorted(counts, key=lambda r: (-counts[r], r))[:MAX_SUMMARY_RULES]
            names = {r: db.execute("SELECT rule_name FROM alert_state WHERE rule_id = ? LIMIT 1", (r,)).fetchone()[0]
                     for r in top}
            return groups, names

        groups, names = self._store.call("summary", read)
        by_level: dict[str, int] = {}
        by_status: dict[str, int] = {}
        by_rule: dict[str, int] = {}
        for rule_id, status, level, n in groups:  # one pass over the covering index, folded here
            by_level[level] = by_level.get(level, 0) + n
            by_status[status] = by_status.get(status, 0) + n
            by_rule[rule_id] = by_rule.get(rule_id, 0) + n
        return {"total": sum(by_level.values()), "by_level": by_level, "by_status": by_status,
                "by_rule": [{"rule_id": r, "rule_name": names[r], "count": by_rule[r]} for r in names],
                "rules_truncated": len(by_rule) > MAX_SUMMARY_RULES}

    def rule_stats(self) -> dict[str, RuleAlertStats]:
        """Per rule id: alerts stored, resolved, resolved as false positive."""
        rows = self._store.call("rule_stats", lambda db: db.execute(
            "SELECT rule_id, COUNT(*), SUM(status = 'resolved'), "
            "SUM(status = 'resolved' AND disposition = 'false_positive') FROM alert_state GROUP BY rule_id").fetchall())
        return {r[0]: RuleAlertStats(alerts=r[1], resolved=r[2] or 0, false_positives=r[3] or 0) for r in rows}


def dumps_detail(changes: list[FieldChange]) -> dict[str, Any]:
    """The changes as an audit entry's detail: ``{field: {"from": old, "to": new}}``."""
    return {c.field: {"from": c.old, "to": c.new} for c in changes}

