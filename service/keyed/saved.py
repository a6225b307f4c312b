"""Stage 2's own state of one internal partition as it is saved beside its engines' snapshots
(:meth:`~service.keyed.stage2.KeyedDetector.export_scope`), and read back with every field checked:
a damaged document raises ``ValueError``/``TypeError``/:class:`~service.keyed.records.RecordError`
and the caller starts the partition's keyed state empty."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.keyed.records import MAX_LEVELS, VERSION, AnomalyRecord, StateRecord, Watermark, from_mapping

MAX_CHAIN_PARTITIONS = 100_000


@dataclass
class SavedState:
    marks: dict[tuple[str, int], float] = field(default_factory=dict)
    """The mark of every input partition heard of."""
    counts: dict[str, int] = field(default_factory=dict)
    """The partition count of every input topic."""
    idle: set[tuple[str, int]] = field(default_factory=set)
    chain: dict[int, float] = field(default_factory=dict)
    """Every internal partition's chain mark."""
    chain_count: int | None = None
    applied: dict[tuple[str, str, int], tuple[int, int]] = field(default_factory=dict)
    """The replay filter: (correlation or ``anomaly|<check>``, topic, partition) -> (offset, event index)."""
    pending: list[StateRecord | AnomalyRecord] = field(default_factory=list)
    """Records waiting for the watermark, both lanes, in (time, arrival) order."""
    released: tuple[float | None, ...] = (None, None)
    """The watermark each lane released last (the base lane's first; two or more)."""
    parents: Any = None
    """The first chained lane's engine snapshot."""
    arrived: list[int | None] = field(default_factory=list)
    """The internal offset each waiting record was read at (``pending``'s order; None: not saved by
    an older version)."""
    levels: dict[tuple[int, int], float] = field(default_factory=dict)
    """Every internal partition's chain marks of level 1 and above, by (level, partition)."""
    lanes: dict[int, Any] = field(default_factory=dict)
    """The engine snapshots of the chained lanes after the first (chains of more than one level)."""


def dump(state: SavedState, topic: str) -> dict[str, Any]:
    """The JSON document of ``state`` (``topic``: the internal topic, named in the chain marks)."""
    return {
        "marks": [[t, p, ts] for (t, p), ts in sorted(state.marks.items())],
        "counts": sorted([t, n] for t, n in state.counts.items()),
        "idle": sorted([t, p] for t, p in state.idle),
        "chain": [[topic, p, ts] for p, ts in sorted(state.chain.items())],
        "chain_count": state.chain_count,
        "applied": [[c, t, p, o, i] for (c, t, p), (o, i) in sorted(state.applied.items())],
        "pending": [orjson.loads(record.encode()) for record in state.pending],
        "released": [value if value is not None and math.isfinite(value) else None for value in state.released],
        "parents": state.parents,
        "arrived": state.arrived,
        "levels": [[level, p, ts] for (level, p), ts in sorted(state.levels.items())],
        "lanes": [[lane, document] for lane, document in sorted(state.lanes.items())],
    }


def load(saved: Any) -> SavedState:
    """:func:`dump`'s document read back (an older document lacks the newer fields: one before the
    lanes per chain level has two released watermarks, no level marks and no further lanes)."""
    if not isinstance(saved, dict):
        raise ValueError("not an object")
    state = SavedState()
    marks = from_mapping({"v": VERSION, "k": "w", "p": "snapshot", "s": saved.get("marks"),
                          "n": saved.get("counts"), "i": saved.get("idle")})
    assert isinstance(marks, Watermark)
    state.marks = {(t, p): ts for t, p, ts in marks.progress}
    state.counts = dict(marks.topics)
    state.idle = set(marks.idle)
    chain = from_mapping({"v": VERSION, "k": "w", "p": "snapshot", "s": saved.get("chain", []), "n": []})
    assert isinstance(chain, Watermark)
    state.chain = {p: ts for _, p, ts in chain.progress}
    count = saved.get("chain_count")
    if count is not None and (type(count) is not int or not 0 < count <= MAX_CHAIN_PARTITIONS):
        raise ValueError("bad chain partition count")
    state.chain_count = count
    rows = saved.get("applied")
    if not isinstance(rows, list):
        raise ValueError("applied is not a list")
    for row in rows:
        correlation, topic, partition, offset, *rest = row  # a first-slice document: no event index
        index = rest[0] if len(rest) == 1 else -1
        if not all(isinstance(v, str) for v in (correlation, topic)) or not all(
                type(v) is int and v >= 0 for v in (partition, offset)) or type(index) is not int or len(rest) > 1:
            raise ValueError("bad applied entry")
        state.applied[(correlation, topic, partition)] = (offset, index)
    for doc in saved.get("pending") or []:
        record = from_mapping(doc)
        if isinstance(record, Watermark):
            raise ValueError("a watermark among the waiting records")
        state.pending.append(record)
    released = saved.get("released")
    if released is not None:
        if not isinstance(released, list) or not 2 <= len(released) <= MAX_LEVELS + 1:
            raise ValueError("bad released watermarks")
        for value in released:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value)):
                raise ValueError("bad released watermark")
        state.released = tuple(None if value is None else float(value) for value in released)
    state.parents = saved.get("parents")
    arrived = saved.get("arrived")
    if arrived is None:  # an older document: its waiting records hold no commit back
        state.arrived = [None] * len(state.pending)
    elif not isinstance(arrived, list) or len(arrived) != len(state.pending) or not all(
            offset is None or (type(offset) is int and offset >= 0) for offset in arrived):
        raise ValueError("bad arrival offsets")
    else:
        state.arrived = list(arrived)
    levels = from_mapping({"v": VERSION, "k": "w", "p": "snapshot", "s": [], "n": [],
                           "c": [[p, level, ts] for level, p, ts in _triples(saved.get("levels", []))]})
    assert isinstance(levels, Watermark)
    state.levels = {(level, p): ts for p, level, ts in levels.chain}
    lanes = saved.get("lanes", [])
    if not isinstance(lanes, list):
        raise ValueError("lanes is not a list")
    for row in lanes:
        if not isinstance(row, list) or len(row) != 2 or type(row[0]) is not int or not 1 < row[0] <= MAX_LEVELS:
            raise ValueError("bad chained lane")
        state.lanes[row[0]] = row[1]
    return state


def _triples(rows: Any) -> list[Any]:
    """``levels`` rows, each a list of three (their items are checked as a watermark's)."""
    if not isinstance(rows, list) or not all(isinstance(row, list) and len(row) == 3 for row in rows):
        raise ValueError("bad chain level marks")
    return rows
