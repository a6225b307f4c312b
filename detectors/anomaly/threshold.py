"""``threshold`` (N matching events per key within a window) and ``ratio`` (matching share).

``threshold`` is a sliding window like ElastAlert's frequency rule: per key
the times of the last ``count`` matching events are kept (sorted, so events
out of order within the lateness still count); when ``count`` of them fall
within ``window`` it alerts and starts over. Without ``selection`` every event
counts. State per key: at most ``count`` floats.

``ratio`` uses tumbling windows: per key and window the matching and total
event counts; at window close, when total >= ``min_count`` and
matching/total > ``max_ratio``, it alerts. State per key: two integers per open
window.
"""

from __future__ import annotations

from bisect import insort
from typing import Any

from detectors.anomaly.base import Check, closed_until, key_list, key_tuple
from detectors.anomaly.keys import Key
from detectors.anomaly.selection import Matcher
from detectors.anomaly.spec import RatioSpec, ThresholdSpec
from detectors.model import Event, Match
from detectors.state import LruMap


class ThresholdCheck(Check):
    kind = "threshold"

    def __init__(self, spec: ThresholdSpec, max_keys: int, matcher: Matcher | None) -> None:
        super().__init__(spec, max_keys)
        self.s = spec
        self.matcher = matcher
        self._keys: LruMap[Key, list[float]] = LruMap(self.max_keys)

    @property
    def keys(self) -> LruMap[Key, Any]:
        return self._keys

    def prefilter(self, event: Event) -> bool:
        return self.matcher is None or self.matcher(event)

    def _on_event(self, event: Event, key: Key, t: float) -> list[Match]:
        times = self._keys.touch(key)
        if times is None:
            times = []
            self._keys.put(key, times)
        insort(times, t)
        need, window = self.s.count, self.s.window
        if len(times) > need:
            del times[0]
        if len(times) < need:
            return []
        first, last = times[0], times[-1]
        if last - first > window or not self.ready_at(t):
            return []
        times.clear()
        return [self.match(key, event_time=t, observed=need, expected={"count": need, "window_s": window},
                           score=need / need, window_start=first, window_end=last)]

    def _snapshot_state(self) -> dict[str, Any]:
        return {"keys": [[key_list(k), v] for k, v in self._keys.items()], "evictions": self._keys.evictions}

    def _restore_state(self, state: dict[str, Any]) -> None:
        self._keys.clear()
        for raw_key, times in state["keys"]:
            self._keys.put(key_tuple(raw_key), sorted(float(x) for x in times)[-self.s.count:])
        self._keys.evictions = int(state.get("evictions", 0))


class RatioCheck(Check):
    kind = "ratio"

    def __init__(self, spec: RatioSpec, max_keys: int, matcher: Matcher) -> None:
        super().__init__(spec, max_keys)
        self.s = spec
        self.matcher = matcher
        self._keys: LruMap[Key, float] = LruMap(self.max_keys)  # key -> last window start
        self.open: dict[float, dict[Key, list[int]]] = {}
        self.closed_upto: float | None = None

    @property
    def keys(self) -> LruMap[Key, Any]:
        return self._keys

    def is_late(self, t: float) -> bool:
        return self.closed_upto is not None and t < self.closed_upto

    def _on_event(self, event: Event, key: Key, t: float) -> list[Match]:
        window = self.s.window
        start = t - t % window
        if self.closed_upto is None:
            self.closed_upto = start
        per_key = self.open.get(start)
        if per_key is None:
            per_key = self.open[start] = {}
        counts = per_key.get(key)
        if counts is None:
            if len(per_key) >= self.max_keys:
                self.counters["key_overflow"] += 1
                return []
            counts = per_key[key] = [0, 0]
            self._keys.put(key, start)
        counts[1] += 1
        if self.matcher(event):
            counts[0] += 1
        return []

    def _on_watermark(self, watermark: float) -> list[Match]:
        if self.closed_upto is None:
            return []
        out: list[Match] = []
        spec = self.s
        window = spec.window
        for start in sorted(b for b in self.open if b + window <= watermark):
            ready = self.ready_at(start + window)
            for key, (hits, total) in self.open.pop(start).items():
                share = hits / total
                if ready and total >= spec.min_count and share > spec.max_ratio:
                    out.append(self.match(
                        key, event_time=start + window, observed=round(share, 6),
                        expected={"max_ratio": spec.max_ratio, "matching": hits, "total": total},
                        score=share / spec.max_ratio, window_start=start, window_end=start + window,
                    ))
        self.closed_upto = closed_until(self.closed_upto, window, watermark)
        return out

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "closed_upto": self.closed_upto,
            "keys": [[key_list(k), v] for k, v in self._keys.items()],
            "open": [[b, [[key_list(k), c] for k, c in per_key.items()]] for b, per_key in self.open.items()],
            "evictions": self._keys.evictions,
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        self.closed_upto = None if state["closed_upto"] is None else float(state["closed_upto"])
        self._keys.clear()
        for raw_key, start in state["keys"]:
            self._keys.put(key_tuple(raw_key), float(start))
        self._keys.evictions = int(state.get("evictions", 0))
        self.open = {float(b): {key_tuple(k): [int(c[0]), int(c[1])] for k, c in per_key}
                     for b, per_key in state["open"]}
