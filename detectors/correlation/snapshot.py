"""Snapshot and restore of :class:`~detectors.correlation.engine.CorrelationEngine` state.

The snapshot is plain JSON data in the shared envelope of :mod:`detectors.state`
(``kind="correlation"``; the shell decides where it is stored). Each
correlation's state is tagged with its :meth:`CorrelationSpec.fingerprint`:
on restore, state of a correlation that was removed or whose meaning changed
(type, rules, fields, timespan, condition) is dropped with a warning rather
than being misread. Deadlines are rebuilt from the windows; LRU order is kept.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from detectors.state import StateError, unwrap, wrap

if TYPE_CHECKING:
    from detectors.correlation.engine import CorrelationEngine


KIND = "correlation"


def _time(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _untime(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else -math.inf


def dump(engine: CorrelationEngine) -> dict[str, Any]:
    from detectors.correlation.engine import SNAPSHOT_VERSION

    correlations: dict[str, Any] = {}
    for node in engine._nodes:
        groups = []
        for key, window in node.groups.items():
            groups.append([
                list(key) if isinstance(key, tuple) else [key],
                {
                    "anchor": window.anchor,
                    "shown": list(window.shown),
                    "entries": [list(entry) for entry in window.entries],
                    "last_start": window.last_start,
                    "same_start": window.same_start,
                },
            ])
        correlations[node.spec.info.id] = {"fingerprint": node.spec.fingerprint(), "groups": groups}
    return wrap(KIND, SNAPSHOT_VERSION, {
        "now": _time(engine._now),
        "max_seen": _time(engine._max_seen),
        "seq": engine._seq,
        "counters": dict(engine.counters),
        "pending": [[ts, seq, dict(event), list(rule_ids), ref]
                    for ts, seq, event, rule_ids, ref in sorted(engine._pending, key=lambda p: (p[0], p[1]))],
        "correlations": correlations,
    })


def load(engine: CorrelationEngine, snapshot: Mapping[str, Any]) -> list[str]:
    from detectors.correlation.engine import SNAPSHOT_VERSION

    try:
        state = unwrap(snapshot, KIND, (SNAPSHOT_VERSION,))
    except StateError as exc:
        return [f"correlation state not restored: {exc}"]
    warnings: list[str] = []
    engine._now = _untime(state.get("now"))
    engine._max_seen = _untime(state.get("max_seen"))
    engine._seq = int(state.get("seq") or 0)
    for name, count in (state.get("counters") or {}).items():
        if isinstance(count, int):
            engine.counters[name] = count
    engine._pending = []
    for ts, seq, event, rule_ids, ref in state.get("pending") or []:
        known = [rule_id for rule_id in rule_ids if rule_id in engine._by_rule]
        if known:
            engine._pending.append((float(ts), int(seq), event, known, ref))
    heapq.heapify(engine._pending)
    engine._deadlines = []
    stored = state.get("correlations") or {}
    for node in engine._nodes:
        node.groups.clear()
        entry = stored.get(node.spec.info.id)
        if entry is None:
            continue
        if entry.get("fingerprint") != node.spec.fingerprint():
            warnings.append(f"correlation {node.spec.info.id}: definition changed, its window state was dropped")
            continue
        multi = not node.single
        for raw_key, data in entry.get("groups") or []:
            key = tuple(raw_key) if multi else raw_key[0]
            window = node.spec.new_window()
            for at, slot, value, ref in data.get("entries") or []:
                window.entries.append((float(at), int(slot), value, ref))
            window.rebuild()
            window.anchor = data.get("anchor")
            window.shown = tuple(data.get("shown") or ())
            window.last_start = data.get("last_start")
            window.same_start = int(data.get("same_start") or 0)
            node.groups[key] = window
            if window.anchor is not None:
                engine._seq += 1
                engine._deadlines.append((window.anchor + node.spec.span, engine._seq, node.index, key))
    heapq.heapify(engine._deadlines)
    for name in stored:
        if name not in {node.spec.info.id for node in engine._nodes}:
            warnings.append(f"correlation {name}: no longer loaded, its window state was dropped")
    return warnings
