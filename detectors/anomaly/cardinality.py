"""``cardinality``: distinct values of a field per key per window, above a bound or baseline.

Model: per key and tumbling ``window`` a distinct counter (exact set of
hashes up to ``exact_limit`` values, then HyperLogLog with ``2**precision``
one-byte registers: p=12 is 4 KiB and 1.6 % standard error).

- ``max_distinct``: alert as soon as the count exceeds it (event time of the
  crossing event), once per key and window.
- ``baseline: true``: at window close, ``z`` of the count against the key's
  EWMA centre and 1.2533 x EWMA absolute deviation (half-life ``halflife``
  windows; residuals winsorised at 2.5 scale once ready); alert when
  ``z >= threshold`` and the count is at least ``min_distinct``.

Keys whose window ends are dropped from the open windows, so only keys active
in the last one or two windows hold a counter; the baseline is 3 floats per key.
"""

from __future__ import annotations

from array import array
from typing import Any

from detectors.anomaly.base import (
    WindowedCheck,
    closed_until,
    first_event,
    key_list,
    key_tuple,
    origin_from_state,
    origin_state,
)
from detectors.anomaly.keys import Key, key_text
from detectors.anomaly.spec import CardinalitySpec
from detectors.event import MISSING, get
from detectors.model import Event, Match, OriginRef
from detectors.sketches import HyperLogLog, hash64
from detectors.state import LruMap

WINSOR = 2.5
ABS_DEV_TO_SIGMA = 1.2533
CENTRE, DEV, N = 0, 1, 2


class CardinalityCheck(WindowedCheck):
    kind = "cardinality"

    def __init__(self, spec: CardinalitySpec, max_keys: int) -> None:
        super().__init__(spec, max_keys)
        self.s = spec
        self.alpha = 1 - 0.5 ** (1 / spec.halflife)
        self._keys: LruMap[Key, array[float]] = LruMap(self.max_keys)
        # self.open: window start -> key -> [counter, alerted, first event time, its origin]

    @property
    def keys(self) -> LruMap[Key, Any]:
        return self._keys

    def _on_event(self, event: Event, key: Key, t: float, origin: OriginRef | None) -> list[Match]:
        raw = get(event, self.s.field)
        if raw is MISSING or raw is None:
            self.counters["missing_value"] += 1
            return []
        window = self.s.window
        start, per_key = self.window_at(t, window)
        slot = per_key.get(key)
        if slot is None:
            if len(per_key) >= self.max_keys:
                self.counters["key_overflow"] += 1
                return []
            slot = per_key[key] = [HyperLogLog(self.s.precision, self.s.exact_limit), False, t, origin]
            if self._keys.touch(key) is None:
                self._keys.put(key, array("d", (0.0, 0.0, 0.0)))
        elif t < slot[2]:
            slot[2], slot[3] = t, origin
        text = raw if isinstance(raw, str) else key_text(raw)[0]
        counter: HyperLogLog = slot[0]
        counter.add_hash(hash64(text))
        limit = self.s.max_distinct
        if limit is not None and not slot[1]:
            distinct = counter.count()
            if distinct > limit:
                slot[1] = True
                return [self.match(key, event_time=t, observed=round(distinct), expected={"max": limit},
                                   score=distinct / limit, window_start=start, window_end=start + window)]
        return []

    def _on_watermark(self, watermark: float) -> list[Match]:
        if self.closed_upto is None:
            return []
        out: list[Match] = []
        window = self.s.window
        for start in sorted(b for b in self.open if b + window <= watermark):
            for key, (counter, alerted, first, origin) in self.open.pop(start).items():
                found = self._close_key(key, counter.count(), alerted, start, first, origin)
                if found is not None:
                    out.append(found)
        self.closed_upto = closed_until(self.closed_upto, window, watermark)
        return out

    def _close_key(self, key: Key, distinct: float, alerted: bool, start: float, first: float,
                   origin: OriginRef | None) -> Match | None:
        """Score the key's distinct count of the window at ``start`` (an alert is about the window's
        first event: ``first``, ``origin``) and learn from it."""
        spec = self.s
        state = self._keys.get(key)
        if not spec.baseline or state is None:
            return None
        centre, n = state[CENTRE], state[N]
        unit = max(state[DEV] * ABS_DEV_TO_SIGMA, 1.0)
        z = (distinct - centre) / unit
        ready = n >= 2 and self.ready_at(start + spec.window)
        found: Match | None = None
        if ready and not alerted and z >= spec.threshold and distinct >= spec.min_distinct:
            found = self.match(
                key, event_time=first, observed=round(distinct), about=first_event(first, origin),
                expected={"center": round(centre, 3), "high": round(centre + spec.threshold * unit, 3)},
                score=z, window_start=start, window_end=start + spec.window,
            )
        y = centre + max(-WINSOR * unit, min(WINSOR * unit, distinct - centre)) if ready else distinct
        a = max(self.alpha, 1 / (n + 1))
        if n:
            state[DEV] += a * (abs(y - centre) - state[DEV])
        state[CENTRE] = centre + a * (y - centre)
        state[N] = n + 1
        return found

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "closed_upto": self.closed_upto,
            "keys": [[key_list(k), list(v)] for k, v in self._keys.items()],
            "open": [[b, [[key_list(k), c.to_state(), a, first, origin_state(origin)]
                          for k, (c, a, first, origin) in per_key.items()]]
                     for b, per_key in self.open.items()],
            "evictions": self._keys.evictions,
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        self.closed_upto = None if state["closed_upto"] is None else float(state["closed_upto"])
        self._keys.clear()
        for raw_key, values in state["keys"]:
            self._keys.put(key_tuple(raw_key), array("d", (float(v) for v in values[:3])))
        self._keys.evictions = int(state.get("evictions", 0))
        self.open = {float(b): {key_tuple(entry[0]): _slot(entry, float(b)) for entry in per_key}
                     for b, per_key in state["open"]}


def _slot(entry: Any, start: float) -> list[Any]:
    """An open window's slot from ``[key, counter, alerted, first time, origin]`` (snapshots of version
    2 and older end at ``alerted``: the first event is then the window's start, its origin unknown)."""
    if not isinstance(entry, list) or len(entry) not in (3, 5):
        raise ValueError("cardinality window slot has the wrong size")
    first = float(entry[3]) if len(entry) == 5 else start
    origin = origin_from_state(entry[4]) if len(entry) == 5 else None
    return [HyperLogLog.from_state(entry[1]), bool(entry[2]), first, origin]
