"""Per-rule suppression: one alert per rule and group key per window.

The first alert of a key goes out; repeats inside the window are counted on it
(``pipesentry.suppressed_count``) and not sent. When the window closes, the
first alert is re-sent to the record sinks (store, Elasticsearch) with the final
count, as an update of the same id. Keys are capped (``max_keys``): the oldest
key is closed early rather than letting memory grow without bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from detectors.alert import Alert

from .config import SuppressionPolicy, SuppressionSettings
from .matching import as_text, field_value, glob_any


@dataclass(slots=True)
class Entry:
    first: Alert
    expires: float
    count: int = 0
    last: float = 0.0


@dataclass(frozen=True, slots=True)
class Closed:
    """A window that ended with repeats: the first alert and how many were folded into it."""

    first: Alert
    count: int
    last: float


class Suppressor:
    def __init__(self, settings: SuppressionSettings) -> None:
        self._policies: Sequence[SuppressionPolicy] = settings.policies
        self._max_keys = settings.max_keys
        self._by_rule: dict[str, SuppressionPolicy | None] = {}
        self._entries: dict[tuple[str, tuple[str, ...]], Entry] = {}
        self._evicted: list[Closed] = []

    def _policy(self, rule_id: str) -> SuppressionPolicy | None:
        try:
            return self._by_rule[rule_id]
        except KeyError:
            found = next((p for p in self._policies if glob_any(p.rules, (rule_id,))), None)
            self._by_rule[rule_id] = found
            return found

    def admit(self, alert: Alert, now: float) -> bool:
        """True when ``alert`` goes out; False when it is a counted repeat."""
        if not self._policies:
            return True
        policy = self._policy(alert.rule.id)
        if policy is None:
            return True
        key = (alert.rule.id, tuple(as_text(field_value(alert, f)) for f in policy.group_by))
        entry = self._entries.get(key)
        if entry is not None and entry.expires > now:
            if entry.first.id == alert.id:
                return True  # the same alert again (a retried batch): not a repeat
            entry.count += 1
            entry.last = now
            return False
        if entry is not None:
            del self._entries[key]
            if entry.count:
                self._evicted.append(Closed(entry.first, entry.count, entry.last))
        self._entries[key] = Entry(alert, now + policy.window_s)
        if len(self._entries) > self._max_keys:
            old_key = next(iter(self._entries))
            old = self._entries.pop(old_key)
            if old.count:
                self._evicted.append(Closed(old.first, old.count, old.last))
        return True

    def expire(self, now: float) -> list[Closed]:
        """Close windows that ended; returns those that folded repeats."""
        out, self._evicted = self._evicted, []
        done = [k for k, e in self._entries.items() if e.expires <= now]
        for key in done:
            entry = self._entries.pop(key)
            if entry.count:
                out.append(Closed(entry.first, entry.count, entry.last))
        return out

    def flush(self) -> list[Closed]:
        """Close every window (shutdown)."""
        return self.expire(float("inf"))

    def __len__(self) -> int:
        return len(self._entries)
