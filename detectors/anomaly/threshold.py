"""``threshold`` (N matching events per key within a window) and ``ratio`` (matching share).

``threshold`` is a sliding window like ElastAlert's frequency rule: per key
the times of the last ``count`` matching events are kept (sorted, so events
out of order within the lateness still count); when ``count`` of them fall
within ``window`` it alerts and starts over. Without ``selection`` every event
counts. State per key: at most ``count`` floats.

``ratio`` uses hopping windows: ``window`` is cut into ``slices`` (default 4);
per key the matching and total counts of the recent slices are kept, and each
time a slice with events for the key closes, the window ending there is tested:
total >= ``min_count`` and matching/total > ``max_ratio`` alerts; the key then
stays quiet until windows no longer overlap the alerted one; its alert is about the
window's first matching event. State per key: per recent slice its start, the two counts and
the time and origin of its first matching event.
"""

from __future__ import annotations

from bisect import insort
from typing import Any

from detectors.anomaly.base import (
    Check,
    WindowedCheck,
    closed_until,
    finite_or_none,
    first_event,
    key_list,
    key_tuple,
    none_to_neg_inf,
    origin_from_state,
    origin_state,
)
from detectors.anomaly.keys import Key
from detectors.anomaly.selection import Matcher
from detectors.anomaly.spec import RatioSpec, ThresholdSpec
from detectors.model import Event, Match, OriginRef
from detectors.state import LruMap

INF = float("inf")


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

    def _on_event(self, event: Event, key: Key, t: float, origin: OriginRef | None) -> list[Match]:
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


class RatioCheck(WindowedCheck):
    kind = "ratio"

    def __init__(self, spec: RatioSpec, max_keys: int, matcher: Matcher) -> None:
        super().__init__(spec, max_keys)
        self.s = spec
        self.matcher = matcher
        self.hop = spec.window / spec.slices
        self._keys: LruMap[Key, _RatioKey] = LruMap(self.max_keys)

    @property
    def keys(self) -> LruMap[Key, Any]:
        return self._keys

    def _on_event(self, event: Event, key: Key, t: float, origin: OriginRef | None) -> list[Match]:
        _, per_key = self.window_at(t, self.hop)
        counts = per_key.get(key)
        if counts is None:
            if len(per_key) >= self.max_keys:
                self.counters["key_overflow"] += 1
                return []
            counts = per_key[key] = [0, 0, INF, None]
        counts[1] += 1
        if self.matcher(event):
            counts[0] += 1
            if t < counts[2]:
                counts[2], counts[3] = t, origin
        return []

    def _on_watermark(self, watermark: float) -> list[Match]:
        if self.closed_upto is None:
            return []
        out: list[Match] = []
        hop = self.hop
        for start in sorted(b for b in self.open if b + hop <= watermark):
            for key, (hits, total, first, origin) in self.open.pop(start).items():
                found = self._close_slice(key, start, hits, total, first, origin)
                if found is not None:
                    out.append(found)
        self.closed_upto = closed_until(self.closed_upto, hop, watermark)
        return out

    def _close_slice(self, key: Key, start: float, hits: int, total: int, first: float,
                     origin: OriginRef | None) -> Match | None:
        """Add a closed slice (``first``, ``origin``: its first matching event) to the key's window
        and test the window that ends with it."""
        spec = self.s
        end = start + self.hop
        window_start = end - spec.window
        state = self._keys.touch(key)
        if state is None:
            state = _RatioKey()
            self._keys.put(key, state)
        recent = state.recent
        recent.append([start, hits, total, first, origin])
        while recent and recent[0][0] < window_start:
            del recent[0]
        if end < state.quiet_until:
            return None
        matching = sum(int(s[1]) for s in recent)
        count = sum(int(s[2]) for s in recent)
        share = matching / count
        if not (self.ready_at(end) and count >= spec.min_count and share > spec.max_ratio):
            return None
        state.quiet_until = end + spec.window  # next alert only for a window not overlapping this one
        first, origin = min(((s[3], s[4]) for s in recent if s[1]), key=lambda pair: pair[0])
        return self.match(
            key, event_time=first, observed=round(share, 6), about=first_event(first, origin),
            expected={"max_ratio": spec.max_ratio, "matching": matching, "total": count},
            score=share / spec.max_ratio, window_start=window_start, window_end=end,
        )

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "closed_upto": self.closed_upto,
            "keys": [[key_list(k), finite_or_none(v.quiet_until), [_slice_state(s) for s in v.recent]]
                     for k, v in self._keys.items()],
            "open": [[b, [[key_list(k), [c[0], c[1], finite_or_none(c[2]), origin_state(c[3])]]
                          for k, c in per_key.items()]] for b, per_key in self.open.items()],
            "evictions": self._keys.evictions,
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        self.closed_upto = None if state["closed_upto"] is None else float(state["closed_upto"])
        self._keys.clear()
        for raw_key, quiet_until, recent in state["keys"]:
            self._keys.put(key_tuple(raw_key), _RatioKey(none_to_neg_inf(quiet_until), [_slice(s) for s in recent]))
        self._keys.evictions = int(state.get("evictions", 0))
        self.open = {float(b): {key_tuple(k): _open_slice(c, float(b)) for k, c in per_key}
                     for b, per_key in state["open"]}


def _slice_state(recent: list[Any]) -> list[Any]:
    return [*recent[:3], finite_or_none(recent[3]), origin_state(recent[4])]


def _slice(raw: Any) -> list[Any]:
    """A recent slice ``[start, matching, total, first matching time, origin]`` from a snapshot (version 2
    and older hold the first three: the first matching event is then the slice's start, origin unknown)."""
    if not isinstance(raw, list) or len(raw) not in (3, 5):
        raise ValueError("ratio slice has the wrong size")
    start = float(raw[0])
    if len(raw) == 3:
        return [start, int(raw[1]), int(raw[2]), start, None]
    first = raw[3]
    return [start, int(raw[1]), int(raw[2]), INF if first is None else float(first), origin_from_state(raw[4])]


def _open_slice(raw: Any, start: float) -> list[Any]:
    """An open slice's counts ``[matching, total, first matching time, origin]`` (version 2: the counts)."""
    if not isinstance(raw, list) or len(raw) not in (2, 4):
        raise ValueError("ratio slice counts have the wrong size")
    if len(raw) == 2:
        return [int(raw[0]), int(raw[1]), start if raw[0] else INF, None]
    return [int(raw[0]), int(raw[1]), INF if raw[2] is None else float(raw[2]), origin_from_state(raw[3])]


class _RatioKey:
    """A ratio key's recent slices ``[start, matching, total, first matching time, its origin]``
    (oldest first) and quiet period."""

    __slots__ = ("quiet_until", "recent")

    def __init__(self, quiet_until: float = float("-inf"), recent: list[list[Any]] | None = None) -> None:
        self.quiet_until = quiet_until
        self.recent: list[list[Any]] = recent if recent is not None else []
