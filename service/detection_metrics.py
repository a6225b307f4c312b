"""Prometheus export of the stateful engines' running counters.

Engines keep running totals (``engine.counters``), which also travel in their
snapshots; Prometheus counters need increases. The increase is computed per
engine object against the totals seen last time, so dropping a partition's
engines, restoring a snapshot or swapping in a new generation (which carries
the old totals over) never counts anything twice nor drives a counter back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service import metrics

EVICTIONS = {"correlation": "evicted", "anomaly": "evictions"}
"""The counter of each detector that is an eviction (``pipesentry_state_evictions``), not a skip."""
NOT_SKIPS = frozenset({"alerts", "bloom_rotations", "key_truncated", "restore_dropped", "gap_intervals_skipped",
                       "gap_restarts"})
"""Anomaly counters that count something other than a skipped event; not exported as skips."""
OWN_METRICS = {("sigma", "regex_timeouts"): metrics.REGEX_TIMEOUTS}
"""Counters exported under a metric of their own rather than as skips (the Sigma ruleset's
``counters`` hold nothing else worth exporting)."""


def counters_of(engine: Any) -> dict[str, int]:
    counters = getattr(engine, "counters", None)
    return dict(counters) if counters else {}


class CounterExport:
    """Totals last exported, per detector and engine object."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[int, tuple[Any, dict[str, int]]]] = {}

    def baseline(self, detector: str, engine: Any) -> None:
        """Treat ``engine``'s current totals as exported (restored or carried-over counts)."""
        self._seen.setdefault(detector, {})[id(engine)] = (engine, counters_of(engine))

    def publish(self, detector: str, engines: Iterable[Any]) -> None:
        """Add each engine's increase since the last call; forget engines no longer listed."""
        seen = self._seen.get(detector, {})
        live: dict[int, tuple[Any, dict[str, int]]] = {}
        eviction = EVICTIONS.get(detector)
        for engine in engines:
            previous = seen.get(id(engine))
            before = previous[1] if previous is not None and previous[0] is engine else {}
            totals = counters_of(engine)
            for reason, value in totals.items():
                delta = value - before.get(reason, 0)
                if delta <= 0:
                    continue
                own = OWN_METRICS.get((detector, reason))
                if own is not None:
                    own.inc(delta)
                elif detector == "sigma":
                    continue
                elif reason == eviction:
                    metrics.STATE_EVICTIONS.labels(detector).inc(delta)
                elif reason not in NOT_SKIPS:
                    metrics.EVENTS_SKIPPED.labels(detector, reason).inc(delta)
            live[id(engine)] = (engine, totals)
        self._seen[detector] = live
