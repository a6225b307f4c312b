"""An independent Sigma matcher: pySigma-backend-sqlite's SQL run on Python's sqlite3.

Where plain SQLite departs from the Sigma specification the oracle is fixed,
never the engine under test:

- "All values are treated as case-insensitive strings": the backend's
  ``collate_nocase`` option emits ``COLLATE NOCASE`` on literal ``=``, and the
  oracle replaces SQLite's ASCII-only ``NOCASE`` collation and ``LIKE`` with
  Unicode-aware ones (``str.lower``), since rules and events carry non-ASCII text;
- values as strings: columns have TEXT affinity, so an event's ``4688`` and
  ``"4688"`` both equal a rule's ``4688``; numeric comparisons (``lt``, ``gte``
  ...) go through a ``num_cmp`` function that compares numerically;
- ``REGEXP`` is not built into SQLite: a Python function implements the spec's
  semantics (search anywhere in the value, case-sensitive unless ``(?i)``);
- ``cidr``: the backend expands a network into ``LIKE '10.%'`` prefixes, which
  is wrong for IPv6 (addresses have several text forms); the oracle emits a
  ``cidr_match(field, network)`` function call using :mod:`ipaddress` instead;
- keyword (field-less) values: the backend refuses them; the oracle emits
  ``EXISTS (SELECT 1 FROM json_each(logs._all) WHERE value ...)`` over a JSON
  array of the event's string values, reusing the backend's own string
  matching for the ``value`` column. A keyword is looked for anywhere in a
  value (full-text search, "searching for keywords across an entire event"),
  so the oracle adds ``*`` around it;
- events are flat: nested objects are flattened to dotted keys for the table
  (the specification's field names address nested data that way).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import operator
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from sigma.backends.sqlite import sqliteBackend
from sigma.conditions import ConditionFieldEqualsValueExpression, ConditionValueExpression
from sigma.conversion.state import ConversionState
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule
from sigma.types import SigmaCIDRExpression, SigmaCompareExpression, SigmaNumber, SigmaString, SpecialChars

TABLE = "logs"
ALL_VALUES = "_all"
"""Column holding a JSON array of every string value of the event (keyword search)."""


class OracleBackend(sqliteBackend):  # type: ignore[misc]
    """The SQLite backend with an exact CIDR test instead of LIKE prefixes."""

    def convert_condition_field_eq_val_cidr(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        value = cond.value
        assert isinstance(value, SigmaCIDRExpression)
        return f"cidr_match({self.escape_and_quote_field(cond.field)}, '{value.network}')"

    def convert_condition_field_compare_op_val(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        value = cond.value
        assert isinstance(value, SigmaCompareExpression)
        op = self.compare_operators[value.op]
        return f"num_cmp({self.escape_and_quote_field(cond.field)}, '{op}', {value.number.number})"

    def _keyword(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        value = cond.value
        if isinstance(value, SigmaString):  # full-text search: the keyword anywhere in a value
            star = SpecialChars.WILDCARD_MULTI
            value = value if value.startswith(star) else star + value
            value = value if value.endswith(star) else value + star
        elif isinstance(value, SigmaNumber):
            value = SpecialChars.WILDCARD_MULTI + SigmaString(str(value.number)) + SpecialChars.WILDCARD_MULTI
        inner = self.convert_condition(ConditionFieldEqualsValueExpression("value", value), state)
        return f"EXISTS (SELECT 1 FROM json_each({TABLE}.{ALL_VALUES}) WHERE {inner})"

    def convert_condition_val_str(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        return self._keyword(cond, state)

    def convert_condition_val_num(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        return self._keyword(cond, state)

    def convert_condition_val_re(self, cond: ConditionValueExpression, state: ConversionState) -> str:
        return self._keyword(cond, state)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _regexp(pattern: str | None, value: Any) -> int:
    if pattern is None or value is None:
        return 0
    compiled = _compiled(pattern)
    if compiled is None:
        return 0
    return 1 if compiled.search(value if isinstance(value, str) else str(value)) else 0


def _cidr_match(value: Any, network: str) -> int:
    if not isinstance(value, str):
        return 0
    try:
        return 1 if ipaddress.ip_address(value.strip()) in ipaddress.ip_network(network) else 0
    except ValueError:
        return 0


_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "=": operator.eq, "!=": operator.ne, "<>": operator.ne}


def _num_cmp(value: Any, op: str, number: float) -> int:
    if value is None:
        return 0
    try:
        return 1 if _OPS[op](float(value), number) else 0
    except (TypeError, ValueError):
        return 0


@functools.lru_cache(maxsize=8192)
def _like_regex(pattern: str, escape: str | None) -> re.Pattern[str]:
    out = []
    chars = iter(pattern)
    for c in chars:
        if escape is not None and c == escape:
            out.append(re.escape(next(chars, "")))
        elif c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _like(pattern: str | None, value: Any, escape: str | None = None) -> int | None:
    if pattern is None or value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return 1 if _like_regex(pattern, escape).fullmatch(text) else 0


def _nocase(a: str, b: str) -> int:
    a, b = a.lower(), b.lower()
    return (a > b) - (a < b)


def connect(unicode_case: bool = True) -> sqlite3.Connection:
    """An in-memory database with the oracle's functions.

    ``unicode_case=False`` keeps SQLite's own (ASCII-folding, much faster) ``LIKE``
    and ``NOCASE``: enough for event data whose letters are all ASCII.
    """
    conn = sqlite3.connect(":memory:")
    conn.create_function("regexp", 2, _regexp, deterministic=True)
    conn.create_function("cidr_match", 2, _cidr_match, deterministic=True)
    conn.create_function("num_cmp", 3, _num_cmp, deterministic=True)
    if unicode_case:
        conn.create_function("like", 2, _like, deterministic=True)
        conn.create_function("like", 3, _like, deterministic=True)
        conn.create_collation("NOCASE", _nocase)
    return conn


def flatten(event: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted keys (the table has one column per rule field)."""
    out: dict[str, Any] = {}
    for key, value in event.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def make_backend(pipelines: Sequence[str] = ()) -> OracleBackend:
    """The oracle backend; ``pipelines`` are processing pipeline YAML texts (as given to the engine)."""
    pipeline = None
    for text in pipelines:
        step = ProcessingPipeline.from_yaml(text)
        pipeline = step if pipeline is None else pipeline + step
    return OracleBackend(processing_pipeline=pipeline, collate_nocase=True)


def rule_sql(backend: OracleBackend, rule: SigmaRule) -> list[str]:
    """The backend's SQL for ``rule``; raises the backend's error when it cannot convert."""
    queries = backend.convert_rule(rule)
    return [q for q in queries if isinstance(q, str)]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run(conn: sqlite3.Connection, queries: Sequence[str], fields: Sequence[str],
        events: Sequence[dict[str, Any]]) -> set[int]:
    """Indexes of ``events`` that any of ``queries`` selects (``rowid`` = index + 1)."""
    load_table(conn, fields, events)
    return select(conn, queries)


def load_table(conn: sqlite3.Connection, fields: Sequence[str], events: Sequence[dict[str, Any]]) -> None:
    """(Re)create the ``logs`` table: one TEXT column per field, one row per event."""
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    columns = list(dict.fromkeys(fields, None))
    lowered: dict[str, str] = {}
    for name in columns:
        lowered.setdefault(name.lower(), name)  # SQLite column names are case-insensitive
    lowered.pop(ALL_VALUES, None)
    names = [*lowered.values(), ALL_VALUES]
    conn.execute(f"CREATE TABLE {TABLE} ({', '.join(_quote(n) + ' TEXT COLLATE NOCASE' for n in names)})")
    placeholders = ", ".join("?" for _ in names)
    rows = []
    for i, nested in enumerate(events, start=1):
        event = flatten(nested)
        folded = {k.lower(): v for k, v in event.items()}
        strings = json.dumps([v for v in event.values() if isinstance(v, str)])
        rows.append((i, *(folded.get(n.lower()) for n in names[:-1]), strings))
    conn.executemany(f"INSERT INTO {TABLE} (rowid, {', '.join(map(_quote, names))}) VALUES (?, {placeholders})",
                     rows)


def select(conn: sqlite3.Connection, queries: Sequence[str]) -> set[int]:
    """Indexes (rowid - 1) of the rows of ``logs`` that any of ``queries`` selects."""
    hits: set[int] = set()
    for query in queries:
        sql = query.replace("SELECT * FROM", "SELECT rowid FROM", 1)
        hits.update(row[0] - 1 for row in conn.execute(sql))
    return hits
