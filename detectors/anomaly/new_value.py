"""``new_value``: a value (or tuple of values) never seen before for a key.

Model: the set of (key, value) pairs seen is a Bloom filter sized for
``capacity`` pairs at ``fp_rate`` (1M pairs at 1e-4: 2.4 MB per generation,
shared by all keys of the check). When a generation is full it becomes the
previous one and a fresh one starts; a pair found only in the previous
generation is copied forward, so pairs seen within roughly the last
``capacity`` distinct pairs are remembered and memory never exceeds two
generations. A Bloom false positive hides a new value (rate ``fp_rate``); it
never invents one.

No alert until the check's learning period has passed; with ``key_learning``
a key first seen later learns for its own ``learning`` period (a new service
learns its deployers before alerting on them). Per key: first-seen time and
the number of distinct values (two floats). Up to 4096 recently confirmed pairs
are cached so frequent pairs skip hashing.
"""

from __future__ import annotations

from typing import Any

from detectors.anomaly.base import Check, key_list, key_tuple
from detectors.anomaly.keys import Key, key_text
from detectors.anomaly.spec import NewValueSpec
from detectors.event import MISSING, get
from detectors.model import Event, Match, OriginRef
from detectors.sketches import BloomFilter, hash64, hash128
from detectors.state import LruMap

RECENT_PAIRS = 4096


class NewValueCheck(Check):
    kind = "new_value"

    def __init__(self, spec: NewValueSpec, max_keys: int) -> None:
        super().__init__(spec, max_keys)
        self.s = spec
        self._keys: LruMap[Key, list[float]] = LruMap(self.max_keys)
        self.current = BloomFilter(spec.capacity, spec.fp_rate)
        self.previous: BloomFilter | None = None
        self._recent: dict[str, None] = {}
        """Pairs known to be in the current generation, to skip hashing for frequent pairs."""

    def _remember(self, pair: str) -> None:
        recent = self._recent
        if len(recent) >= RECENT_PAIRS:
            recent.clear()
        if len(pair) <= 512:
            recent[pair] = None

    @property
    def keys(self) -> LruMap[Key, Any]:
        return self._keys

    def _values(self, event: Event) -> tuple[str, ...] | None:
        values: list[str] = []
        for name in self.s.fields:
            raw = get(event, name)
            if raw is MISSING or raw is None:
                self.counters["missing_value"] += 1
                return None
            text, cut = key_text(raw)
            if cut:
                self.counters["key_truncated"] += 1
            values.append(text)
        return tuple(values)

    def _on_event(self, event: Event, key: Key, t: float, origin: OriginRef | None) -> list[Match]:
        values = self._values(event)
        if values is None:
            return []
        state = self._keys.touch(key)
        if state is None:
            state = [t, 0.0]
            self._keys.put(key, state)
        pair = "\x1f".join(key) + "\x1e" + "\x1f".join(values)
        recent = self._recent
        if pair in recent:
            return []
        h1, h2 = hash128(pair)
        current = self.current
        if current.contains_hashes(h1, h2):
            self._remember(pair)
            return []
        known_before = self.previous is not None and self.previous.contains_hashes(h1, h2)
        current.add_hashes(h1, h2)
        if current.full:
            self.previous, self.current = current, BloomFilter(self.s.capacity, self.s.fp_rate)
            self.counters["bloom_rotations"] += 1
            recent.clear()  # cached pairs must be copied into the new generation when seen again
        else:
            self._remember(pair)
        if known_before:
            return []
        seen = state[1]
        state[1] = seen + 1
        if not self.ready_at(t) or (self.s.key_learning and t < state[0] + self.learning_s):
            return []
        observed = dict(zip(self.s.fields, values, strict=True))
        return [self.match(
            key, event_time=t, observed=observed, expected={"known_values": int(seen)}, score=None,
            window_start=t, window_end=t,
            alert_key=f"{self.spec.id}|{'|'.join(key)}|{hash64(chr(30).join(values)):016x}",
        )]

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "keys": [[key_list(k), v] for k, v in self._keys.items()],
            "current": self.current.to_state(),
            "previous": None if self.previous is None else self.previous.to_state(),
            "evictions": self._keys.evictions,
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        self._keys.clear()
        for raw_key, values in state["keys"]:
            self._keys.put(key_tuple(raw_key), [float(values[0]), float(values[1])])
        self._keys.evictions = int(state.get("evictions", 0))
        self.current = BloomFilter.from_state(state["current"])
        self.previous = None if state["previous"] is None else BloomFilter.from_state(state["previous"])
        self._recent.clear()
