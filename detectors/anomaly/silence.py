"""``silence``: a key that was sending and stopped (dead-man's switch), and its recovery.

Model: a key is armed after ``min_events`` events. When the watermark passes
its last event time + ``timeout`` it alerts once (observed: seconds silent,
expected: the timeout) and moves to the silent set; its next event emits a
recovery match (``details.state = "recovered"``, level informational) when
``recovery`` is on.

Active keys live in an LRU map whose order is arrival order, so the scan on
each watermark move stops at the first key that is not overdue: O(1)
amortised per event. Out-of-order arrivals within ``allowed_lateness`` can
delay an alert by at most that lateness. State per key: last event time and an
event count (two floats), plus the key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from detectors.anomaly.base import Check, key_list, key_tuple
from detectors.anomaly.keys import Key
from detectors.anomaly.spec import SilenceSpec
from detectors.model import Event, Match, OriginRef
from detectors.state import LruMap


class SilenceCheck(Check):
    kind = "silence"

    def __init__(self, spec: SilenceSpec, max_keys: int) -> None:
        super().__init__(spec, max_keys)
        self.s = spec
        self.timeout = spec.timeout
        # key -> [last event time, events seen]
        self.active: LruMap[Key, list[float]] = LruMap(self.max_keys)
        # key -> [last event time, silent since (alert time)]
        self.silent: LruMap[Key, list[float]] = LruMap(self.max_keys)
        self.recovery_info = dataclasses.replace(self.info, level="informational")

    @property
    def keys(self) -> LruMap[Key, Any]:
        return self.active

    @property
    def evictions(self) -> int:
        return self.active.evictions + self.silent.evictions

    def _on_event(self, event: Event, key: Key, t: float, origin: OriginRef | None) -> list[Match]:
        state = self.active.touch(key)
        if state is not None:
            if t > state[0]:
                state[0] = t
            state[1] += 1
            return []
        was_silent = self.silent.pop(key)
        if was_silent is None:
            self.active.put(key, [t, 1.0])
            return []
        self.active.put(key, [t, float(self.s.min_events)])
        if not self.s.recovery:
            return []
        last = was_silent[0]
        match = self.match(
            key, event_time=t, observed=round(t - last, 3), expected=self.timeout, score=None,
            window_start=last, window_end=t, state="recovered",
        )
        return [dataclasses.replace(match, rule=self.recovery_info)]

    def _on_watermark(self, watermark: float) -> list[Match]:
        out: list[Match] = []
        active, timeout = self.active, self.timeout
        while True:
            oldest = active.oldest()
            if oldest is None:
                break
            key, (last, seen) = oldest
            if last + timeout > watermark:
                break
            active.pop(key)
            if seen < self.s.min_events or not self.ready_at(last + timeout):
                continue  # never armed: forget it quietly
            deadline = last + timeout
            self.silent.put(key, [last, deadline])
            out.append(self.match(
                key, event_time=deadline, observed=round(watermark - last, 3), expected=timeout,
                score=(watermark - last) / timeout if timeout else None,
                window_start=last, window_end=deadline, state="silent",
            ))
        return out

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "active": [[key_list(k), v] for k, v in self.active.items()],
            "silent": [[key_list(k), v] for k, v in self.silent.items()],
            "evictions": [self.active.evictions, self.silent.evictions],
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        for target, name in ((self.active, "active"), (self.silent, "silent")):
            target.clear()
            for raw_key, values in state[name]:
                target.put(key_tuple(raw_key), [float(values[0]), float(values[1])])
        self.active.evictions, self.silent.evictions = (int(x) for x in state["evictions"])
