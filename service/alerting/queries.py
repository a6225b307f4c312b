"""The alert queue's filters as SQL over ``alert_state`` and the index tables (no I/O: :mod:`.store` runs it).

Every filter is an indexed lookup or a range on an indexed column; ``text`` (a
substring of the search text) is a phrase query of the trigram index
``alert_text_fts``, or a scan of ``alert_text`` for texts under three characters
or a SQLite without FTS5's trigram tokenizer. Pages are newest first by detection time (``detected``), ties by
insertion order; a :class:`Cursor` continues after the last row of a page
without SQLite walking the skipped rows as an offset does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from detectors.model import level_rank

from .indexing import normalise_tag

TIME_FIELDS = ("detected", "event")
"""``detected``: when pipesentry raised the alert (the queue's order); ``event``: the event's own time."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last row's detection time and row id."""

    detected: float
    row: int

    def encode(self) -> str:
        return f"{self.detected!r}~{self.row}"

    @staticmethod
    def decode(text: str) -> Cursor:
        """Raises ``ValueError`` for anything :meth:`encode` does not write."""
        m = re.fullmatch(r"(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)~(\d{1,19})", text)
        if m is None:
            raise ValueError("not a cursor")
        detected, row = float(m.group(1)), int(m.group(2))
        if detected != detected or row >= 2**63:  # NaN, or past SQLite's integers
            raise ValueError("not a cursor")
        return Cursor(detected, row)


@dataclass(frozen=True, slots=True)
class AlertQuery:
    rule: str | None = None
    """Rule id or exact rule name."""
    levels: tuple[str, ...] = ()
    """Any of these levels."""
    min_level: str | None = None
    """This level or above."""
    statuses: tuple[str, ...] = ()
    assignee: str | None = None
    assigned: bool | None = None
    """True: has an assignee; False: has none."""
    tag: str | None = None
    """A rule tag (``attack.t1059``, ``T1059``, ``execution``, ``TA0002``); a technique finds its
    sub-techniques too."""
    product: str | None = None
    service: str | None = None
    category: str | None = None
    host: str | None = None
    user: str | None = None
    since: float | None = None
    until: float | None = None
    time_field: str = "detected"
    text: str | None = None
    """Substring of one value of the alert (case-insensitive; never a key name)."""
    limit: int = 50
    offset: int = 0
    cursor: Cursor | None = None


MIN_FTS_TEXT = 3
"""Shorter ``q`` texts are found by scanning the search text (a trigram index needs three characters)."""


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


WALK_ABOVE = 2000
"""A page of a query matching more alerts walks the detection-time index (:func:`where`'s ``walk``)."""


def where(q: AlertQuery, *, fts: bool = True, walk: bool = False) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (empty or starting with a space) and its arguments. ``fts``: the store has
    the trigram index ``alert_text_fts`` (else ``q`` scans the search text). ``walk``: the tag and
    text lists are only probed (``+id IN``), so a page walks the detection-time index instead of
    looking up every listed alert and sorting them: right when they hold many alerts."""
    clauses: list[str] = []
    args: list[Any] = []
    if q.rule:
        clauses.append("(rule_id = ? OR rule_name = ?)")
        args += [q.rule, q.rule]
    if q.levels:
        ranks = sorted({level_rank(lv) for lv in q.levels})
        clauses.append(f"rank IN ({','.join('?' * len(ranks))})")
        args += ranks
    if q.min_level:
        clauses.append("rank >= ?")
        args.append(level_rank(q.min_level))
    if q.statuses:
        clauses.append(f"status IN ({','.join('?' * len(q.statuses))})")
        args += list(q.statuses)
    if q.assignee is not None:
        clauses.append("assignee = ?")
        args.append(q.assignee)
    if q.assigned is not None:
        clauses.append("assignee IS NOT NULL" if q.assigned else "assignee IS NULL")
    for column in ("product", "service", "category"):
        value = getattr(q, column)
        if value:
            clauses.append(f"{column} = ?")
            args.append(value.lower())
    probe = "+" if walk else ""
    if q.tag:
        clauses.append(f"{probe}id IN (SELECT alert_id FROM alert_tags WHERE tag = ?)")
        args.append(normalise_tag(q.tag))
    for kind in ("host", "user"):
        value = getattr(q, kind)
        if value:
            clauses.append("id IN (SELECT alert_id FROM alert_entities WHERE kind = ? AND value = ?)")
            args += [kind, value.strip().lower()]
    column = "detected" if q.time_field == "detected" else "ts"
    if q.since is not None:
        clauses.append(f"{column} >= ?")
        args.append(q.since)
    if q.until is not None:
        clauses.append(f"{column} < ?")
        args.append(q.until)
    if q.text:
        text = q.text.lower()
        if fts and len(text) >= MIN_FTS_TEXT:  # a phrase of trigrams: a substring, found by the index
            clauses.append(f"{probe}seq IN (SELECT rowid FROM alert_text_fts WHERE alert_text_fts MATCH ?)")
            args.append(_phrase(text))
        else:
            clauses.append(f"{probe}seq IN (SELECT seq FROM alert_text WHERE instr(body, ?) > 0)")
            args.append(text)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def page_sql(q: AlertQuery, *, fts: bool = True, matching: int = 0) -> tuple[str, list[Any]]:
    """The page's rows of ``alert_state``: (rowid, id, triage columns...), newest detection first;
    ``matching``: how many alerts the query matches (the count, run first)."""
    clause, args = where(q, fts=fts, walk=matching > WALK_ABOVE)
    if q.cursor is not None:
        keyset = "(detected < ? OR (detected = ? AND rowid < ?))"
        clause = f"{clause} AND {keyset}" if clause else f" WHERE {keyset}"
        args = [*args, q.cursor.detected, q.cursor.detected, q.cursor.row]
    sql = (f"SELECT rowid, id, status, disposition, assignee, detected, last_seen, deliveries, updated, "
           f"(SELECT COUNT(*) FROM alert_notes n WHERE n.alert_id = alert_state.id) FROM alert_state{clause} "
           f"ORDER BY detected DESC, rowid DESC LIMIT ? OFFSET ?")
    return sql, [*args, q.limit, 0 if q.cursor is not None else q.offset]
