"""What every check shares: event time, keys, watermark, learning, matches, state envelope.

Why: the checks differ only in their model; reading time and keys, refusing
late or far-future events, counting skips and building ``Match`` objects must
behave identically for all of them.

Time model: each check tracks the largest event time it accepted (and the
``ts`` it arrived with). ``advance(clock)`` lets event time run on while no
events come: the idle event time is that largest event time plus the clock
time elapsed since its arrival, so a steady ingestion delay between event time
and the runtime's clock never makes events late. The watermark is the larger
of the two minus ``allowed_lateness``; events older than it are late (counted,
not applied). With ``timestamp_field`` set, an event more than ``max_future``
ahead of the ``ts`` passed with it is refused as far-future.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, ClassVar

from detectors.anomaly.keys import SOURCE_FIELD, Key, key_repr, key_text, source_text
from detectors.anomaly.spec import CheckCommon
from detectors.anomaly.timeutil import iso
from detectors.event import MAX_TS, MISSING, BadTimestamp, get, parse_timestamp
from detectors.model import Event, EventRef, LogSource, Match, Origin, OriginRef, RuleInfo, as_origin
from detectors.state import LruMap

NEG_INF = -math.inf


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def none_to_neg_inf(value: Any) -> float:
    return NEG_INF if value is None else float(value)


def origin_state(ref: OriginRef | None) -> list[Any] | None:
    """An origin as a snapshot holds it (``[input, topic, partition, offset, key]``)."""
    if ref is None:
        return None
    origin = as_origin(ref)
    return [origin.input, origin.topic, origin.partition, origin.offset, origin.key]


def origin_from_state(raw: Any) -> Origin | None:
    """The origin of :func:`origin_state`; ``ValueError`` when malformed."""
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 5 or not isinstance(raw[0], str):
        raise ValueError("a stored origin must be [input, topic, partition, offset, key]")
    source, topic, partition, offset, key = raw
    if not (topic is None or isinstance(topic, str)) or not (key is None or isinstance(key, str)):
        raise ValueError("a stored origin's topic and key are text")
    for number in (partition, offset):
        if not (number is None or (isinstance(number, int) and not isinstance(number, bool))):
            raise ValueError("a stored origin's partition and offset are whole numbers")
    return Origin(source, topic, partition, offset, key)


def first_event(time: float, origin: OriginRef | None) -> EventRef | None:
    """What a window alert is about: its first event, when that event's origin is known."""
    return None if origin is None else EventRef(time, as_origin(origin))


class Check(ABC):
    """One configured check. Subclasses implement ``_on_event`` and usually ``_on_watermark``."""

    kind: ClassVar[str]

    def __init__(self, spec: CheckCommon, max_keys: int) -> None:
        self.spec = spec
        self.max_keys = spec.max_keys or max_keys
        self.by = spec.by
        self.lateness = spec.allowed_lateness
        self.learning_s = spec.learning_s
        self.ts_field = spec.timestamp_field
        self.rule_logsource = spec.logsource.to_logsource()
        self.info = RuleInfo(
            id=spec.id, title=spec.title or spec.id, level=spec.level, author=spec.author,
            description=spec.description, tags=tuple(spec.tags), logsource=self.rule_logsource,
            ruleset="anomaly", kind="anomaly", name=spec.id, source=spec.source,
        )
        self.counters: Counter[str] = Counter()
        self.max_event_ts = NEG_INF
        self.clock = NEG_INF
        self.arrival = NEG_INF
        self.first_ts: float | None = None
        self._source_key = SOURCE_FIELD in self.by

    # -- time -----------------------------------------------------------------------
    @property
    def watermark(self) -> float:
        return max(self.max_event_ts, self.clock) - self.lateness

    def learning(self) -> bool:
        """True until the check-level learning period has passed in event time."""
        if self.learning_s <= 0:
            return False
        return self.first_ts is None or self.watermark < self.first_ts + self.learning_s

    def ready_at(self, t: float) -> bool:
        return self.first_ts is not None and t >= self.first_ts + self.learning_s

    def event_time(self, event: Event, ts: float) -> float | None:
        if not 0 <= ts <= MAX_TS:  # also false for NaN
            self.counters["bad_timestamp"] += 1
            return None
        field = self.ts_field
        if field is None:
            return ts
        raw = get(event, field)
        if raw is MISSING or raw is None:
            self.counters["no_timestamp"] += 1
            return None
        try:
            t = parse_timestamp(raw)
        except BadTimestamp:
            self.counters["bad_timestamp"] += 1
            return None
        if t > ts + self.spec.max_future:
            self.counters["future_timestamp"] += 1
            return None
        return t

    def is_late(self, t: float) -> bool:
        return t < self.watermark

    # -- keys -----------------------------------------------------------------------
    def key_of(self, event: Event, logsource: LogSource | None) -> Key | None:
        parts: list[str] = []
        for name in self.by:
            if name == SOURCE_FIELD and self._source_key:
                parts.append(source_text(logsource))
                continue
            value = get(event, name)
            if value is MISSING:
                self.counters["missing_key"] += 1
                return None
            text, cut = key_text(value)
            if cut:
                self.counters["key_truncated"] += 1
            parts.append(text)
        return tuple(parts)

    # -- the pipeline ---------------------------------------------------------------
    def process(self, event: Event, ts: float, logsource: LogSource | None,
                origin: OriginRef | None = None) -> list[Match]:
        """Matches caused by the event (``origin``: where it came from, kept by windowed checks for
        the window's first event, which their alerts are about)."""
        t = self.event_time(event, ts)
        if t is None:
            return []
        if self.is_late(t):
            self.counters["late"] += 1
            return []
        out: list[Match] = []
        if self.prefilter(event):
            key = self.key_of(event, logsource)
            if key is not None:
                if self.first_ts is None:
                    self.first_ts = t
                out = self._on_event(event, key, t, origin)
        if ts > self.arrival:
            self.arrival = ts
        if t > self.max_event_ts:
            self.max_event_ts = t
            moved = self._on_watermark(self.watermark)
            if moved:
                out = out + moved if out else moved
        return out

    def advance(self, clock: float) -> list[Match]:
        """Let event time run on with the runtime's clock (the same clock as ``ts`` in ``process``)."""
        if self.max_event_ts == NEG_INF:
            return []
        idle = self.max_event_ts + max(0.0, clock - self.arrival)
        if idle <= self.clock:
            return []
        self.clock = idle
        return self._on_watermark(self.watermark)

    def prefilter(self, event: Event) -> bool:
        """Whether the event concerns this check at all (before key extraction)."""
        return True

    @abstractmethod
    def _on_event(self, event: Event, key: Key, t: float, origin: OriginRef | None) -> list[Match]: ...

    def _on_watermark(self, watermark: float) -> list[Match]:
        return []

    # -- results ----------------------------------------------------------------------
    def match(self, key: Key, *, event_time: float, observed: Any, expected: Any, score: float | None,
              window_start: float, window_end: float, about: EventRef | None = None, **extra: Any) -> Match:
        self.counters["alerts"] += 1
        key_fields = dict(zip(self.by, key, strict=True))
        details: dict[str, Any] = {
            "check": self.spec.id,
            "check_type": self.kind,
            "key": key_fields,
            "event_time": iso(event_time),
            "observed": observed,
            "expected": expected,
            "score": None if score is None else round(score, 3),
            "window_start": iso(window_start),
            "window_end": iso(window_end),
            "alert_key": f"{self.spec.id}|{key_repr(self.by, key)}|{int(window_start)}",
            **extra,
        }
        return Match(rule=self.info, fields=tuple(key_fields.items()), details=details, about=about)

    # -- state ------------------------------------------------------------------------
    @property
    @abstractmethod
    def keys(self) -> LruMap[Key, Any]: ...

    @property
    def evictions(self) -> int:
        return self.keys.evictions

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "fingerprint": self.spec.fingerprint(),
            "max_event_ts": finite_or_none(self.max_event_ts),
            "clock": finite_or_none(self.clock),
            "arrival": finite_or_none(self.arrival),
            "first_ts": self.first_ts,
            "state": self._snapshot_state(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a snapshot of the same check configuration (the engine checks the fingerprint)."""
        self.max_event_ts = none_to_neg_inf(snap.get("max_event_ts"))
        self.clock = none_to_neg_inf(snap.get("clock"))
        self.arrival = none_to_neg_inf(snap.get("arrival"))
        first = snap.get("first_ts")
        self.first_ts = None if first is None else float(first)
        self._restore_state(snap["state"])

    @abstractmethod
    def _snapshot_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _restore_state(self, state: dict[str, Any]) -> None: ...


def key_list(key: Key) -> list[str]:
    return list(key)


def key_tuple(raw: Any) -> Key:
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise ValueError("a stored key must be a list of strings")
    return tuple(raw)


class WindowedCheck(Check):
    """A check that accumulates per key in fixed windows, closed as the watermark passes them.

    ``open`` maps a window start to per-key accumulators; ``closed_upto`` is the start
    of the oldest window still open, so an event before it comes too late to count.
    """

    def __init__(self, spec: CheckCommon, max_keys: int) -> None:
        super().__init__(spec, max_keys)
        self.open: dict[float, dict[Key, Any]] = {}
        self.closed_upto: float | None = None

    def is_late(self, t: float) -> bool:
        return self.closed_upto is not None and t < self.closed_upto

    def window_at(self, t: float, length: float) -> tuple[float, dict[Key, Any]]:
        """Start and per-key accumulators of the window of ``length`` holding ``t`` (opened if new)."""
        start = t - t % length
        if self.closed_upto is None:
            self.closed_upto = start
        per_key = self.open.get(start)
        if per_key is None:
            per_key = self.open[start] = {}
        return start, per_key


def closed_until(closed_upto: float, window: float, watermark: float) -> float:
    """The new end of closed windows once ``watermark`` is reached (aligned to ``window``)."""
    if watermark < closed_upto + window:
        return closed_upto
    return closed_upto + ((watermark - closed_upto) // window) * window
