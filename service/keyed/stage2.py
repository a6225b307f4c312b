"""Stage 2 of ``state.scope: keyed``: the detector of the internal topic's consumer.

Every partition of the internal topic is a scope exactly like an input partition in ``partition``
scope (its own correlation engine, snapshots and takeover in :class:`~service.partition_state.
PartitionState`); only what a record does differs, so this is a :class:`~service.detection.Detector`
whose :meth:`KeyedDetector.process` reads state records instead of evaluating Sigma rules:

- a **state record** feeds the one correlation it was keyed for (``process_keyed``); it waits in
  the engine's reorder buffer until the partition's watermark passes it;
- a **watermark** raises the marks of the input partitions it lists; the internal partition's
  watermark is the lowest mark over *every* input partition (the topics' partition counts come
  with the watermarks), less ``correlation.allowed_lateness``: while one input partition has not
  spoken nothing is released. An input partition its owner reports idle (read to the end, no
  record yet) does not count, as an idle source in Flink's watermarks; The engine is released up to it (windows close, buffered records
  apply in event-time order). A mark never goes back: an input partition's new owner re-reads
  from its committed offset, and what it sends again is dropped as a replay (below);
- a record whose origin offset is not beyond the last one applied for the same correlation and
  input partition is a stage-1 replay (a crash before its commit) and is dropped.

Alert ids are the engine's (correlation, group key, window start): the same as any other run over
the same events, ``pipesentry eval`` included.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Collection, Sequence
from typing import Any

from detectors.alert import Alert, build_alert
from detectors.model import Match, Origin
from service import metrics
from service.detection import DetectionSet, Detector, ScopeKey, _alert_time, scope_name
from service.keyed.records import VERSION, RecordError, StateRecord, Watermark, from_mapping
from service.sources.base import Item

log = logging.getLogger(__name__)

KEYED_STATE = "keyed"
"""Key of this detector's own state inside a partition's correlation snapshot."""
BUFFER_LATENESS_S = 10 * 365 * 86_400.0
"""Stage-2 engines buffer by the watermark records, not by their own newest time: a lateness no
record reaches keeps the engine from releasing anything itself."""


class KeyedDetector(Detector):
    """The stage-2 detector: one keyed correlation engine per internal partition."""

    def __init__(self, detection: DetectionSet, *, max_original_bytes: int = 16_384, lateness_s: float = 0.0) -> None:
        super().__init__(detection, max_original_bytes=max_original_bytes, scope="partition")
        self.lateness_s = lateness_s
        self._marks: dict[tuple[str, int], dict[tuple[str, int], float]] = {}
        """Per internal partition: the mark of every input partition heard of."""
        self._counts: dict[tuple[str, int], dict[str, int]] = {}
        """Per internal partition: the partition count of every input topic."""
        self._idle: dict[tuple[str, int], set[tuple[str, int]]] = {}
        """Per internal partition: input partitions reported idle (without a mark yet)."""
        self._applied: dict[tuple[str, int], dict[tuple[str, str, int], int]] = {}
        """Per internal partition: the last origin offset applied per (correlation, input topic, partition)."""
        self._newest: dict[tuple[str, int], float] = {}

    def _new_engines(self, current: DetectionSet) -> tuple[Any | None, Any | None]:
        engine = current.correlation
        if engine is None:
            return None, None
        limits = dataclasses.replace(engine.limits, allowed_lateness=BUFFER_LATENESS_S)
        return type(engine)(engine.specs, limits, keyed=True), None

    def take_records(self) -> tuple[list[Any], dict[tuple[str, int], float]]:
        return [], {}

    def process(self, items: Sequence[Item], now: float | None = None) -> list[Alert]:
        with self._lock:
            return self._process_records(items, time.time() if now is None else now)

    def _process_records(self, items: Sequence[Item], now: float) -> list[Alert]:
        current = self._set
        alerts: list[Alert] = []
        released: set[tuple[str, int]] = set()
        for item in items:
            key = item.scope_key()
            if key is None:
                continue
            try:
                record = from_mapping(item.event)
            except RecordError as exc:
                metrics.KEYED_STATE_RECORDS.labels("unreadable").inc()
                log.warning("keyed scope: unreadable state record skipped",
                            extra={"origin": item.origin.token(), "error": str(exc)})
                continue
            engine = self._engines(key, current)[0]
            if engine is None:
                continue
            if isinstance(record, Watermark):
                marks = self._marks.setdefault(key, {})
                for topic, partition, ts in record.progress:
                    if ts > marks.get((topic, partition), -math.inf):
                        marks[(topic, partition)] = ts
                self._idle.setdefault(key, set()).update(record.idle)
                counts = self._counts.setdefault(key, {})
                for topic, count in record.topics:
                    counts[topic] = max(count, counts.get(topic, 0))
                released.add(key)
                continue
            alerts.extend(self._apply(key, engine, record, now))
        for key in released:
            alerts.extend(self._release(key, now))
        return alerts

    def _apply(self, key: tuple[str, int], engine: Any, record: StateRecord, now: float) -> list[Alert]:
        origin = record.origin
        applied = self._applied.setdefault(key, {})
        position = (record.correlation, origin.topic, origin.partition)
        last = applied.get(position)
        if last is not None and origin.offset <= last:
            metrics.KEYED_STATE_RECORDS.labels("duplicate").inc()
            return []
        applied[position] = origin.offset
        if record.ts > self._newest.get(key, -math.inf):
            self._newest[key] = record.ts
        ref = Origin("kafka", origin.topic, origin.partition, origin.offset, origin.key)
        before = engine.counters.get("late", 0)
        try:
            matches = engine.process_keyed(record.correlation, record.rules, record.fields, record.ts, ref.token())
        except Exception:
            self._engine_failed("correlation")
            return []
        metrics.KEYED_STATE_RECORDS.labels("late" if engine.counters.get("late", 0) > before else "applied").inc()
        return [self._keyed_alert(match, record.fields, ref, record.ts, now) for match in matches]

    def watermark(self, key: tuple[str, int]) -> float | None:
        """The internal partition's watermark: the lowest mark over every input partition, or None
        while one has not spoken."""
        marks = self._marks.get(key)
        counts = self._counts.get(key)
        if not marks or not counts:
            return None
        idle = self._idle.get(key, set())
        lowest = math.inf
        for topic, count in counts.items():
            for partition in range(count):
                mark = marks.get((topic, partition))
                if mark is None:
                    if (topic, partition) in idle:
                        continue
                    return None
                lowest = min(lowest, mark)
        return lowest if math.isfinite(lowest) else None

    def _release(self, key: tuple[str, int], now: float) -> list[Alert]:
        """Release the partition's engine up to its watermark less the allowed lateness."""
        engine = self._scoped.get(key, (None, None))[0]
        mark = self.watermark(key)
        if mark is None or engine is None:
            return []
        watermark = mark - self.lateness_s
        newest = self._newest.get(key)
        if newest is not None:
            metrics.KEYED_WATERMARK_LAG.set(max(0.0, newest - watermark))
        found = self._stateful("correlation", engine.release, watermark)
        origin = Origin("timer", key=scope_name(key))
        return [self._keyed_alert(match, {}, origin, watermark, now) for match in found]

    def _keyed_alert(self, match: Match, fields: Any, origin: Origin, ts: float, now: float) -> Alert:
        event_time = _alert_time(match, ts)
        return build_alert(match, fields if event_time == ts else {}, origin, event_time=event_time, now=now,
                           max_original_bytes=self._max_original)

    def heartbeat(self, now: float, skip: Collection[ScopeKey] = ()) -> list[Alert]:
        """Nothing moves on by the wall clock here (the watermarks do); publishes the gauges."""
        with self._lock:
            self._publish_state(self._set)
            return []

    def drop_scope(self, key: tuple[str, int]) -> None:
        with self._lock:
            super().drop_scope(key)
            self._marks.pop(key, None)
            self._counts.pop(key, None)
            self._idle.pop(key, None)
            self._applied.pop(key, None)
            self._newest.pop(key, None)

    def export_scope(self, key: ScopeKey) -> dict[str, dict[str, Any]]:
        """The partition's engine snapshot with this detector's own state beside it (``keyed``: the
        input partitions' marks and the replay filter), consistent with the same offset."""
        with self._lock:
            out = super().export_scope(key)
            if key is not None and "correlation" in out:
                out["correlation"][KEYED_STATE] = {
                    "marks": [[t, p, ts] for (t, p), ts in sorted(self._marks.get(key, {}).items())],
                    "counts": sorted([t, n] for t, n in self._counts.get(key, {}).items()),
                    "idle": sorted([t, p] for t, p in self._idle.get(key, set())),
                    "applied": [[c, t, p, o] for (c, t, p), o in sorted(self._applied.get(key, {}).items())],
                }
            return out

    def import_scope(self, key: ScopeKey, snapshots: dict[str, dict[str, Any]],
                     clock: tuple[float, float] | None = None) -> None:
        with self._lock:
            correlation = snapshots.get("correlation")
            saved: Any = None
            if isinstance(correlation, dict) and KEYED_STATE in correlation:
                correlation = dict(correlation)
                saved = correlation.pop(KEYED_STATE)
                snapshots = {**snapshots, "correlation": correlation}
            super().import_scope(key, snapshots, clock)
            if key is None:
                return
            for table in (self._marks, self._counts, self._idle, self._applied, self._newest):
                table.pop(key, None)
            if saved is not None:
                try:
                    self._load_keyed(key, saved)
                except (TypeError, ValueError, RecordError) as exc:
                    for table in (self._marks, self._counts, self._idle, self._applied):
                        table.pop(key, None)
                    log.warning("keyed scope: saved marks and replay filter not restored",
                                extra={"scope": scope_name(key), "error": str(exc)})

    def _load_keyed(self, key: tuple[str, int], saved: Any) -> None:
        if not isinstance(saved, dict):
            raise ValueError("not an object")
        marks = from_mapping({"v": VERSION, "k": "w", "p": "snapshot", "s": saved.get("marks"),
                              "n": saved.get("counts"), "i": saved.get("idle")})
        assert isinstance(marks, Watermark)
        self._marks[key] = {(t, p): ts for t, p, ts in marks.progress}
        self._counts[key] = dict(marks.topics)
        self._idle[key] = set(marks.idle)
        applied: dict[tuple[str, str, int], int] = {}
        rows = saved.get("applied")
        if not isinstance(rows, list):
            raise ValueError("applied is not a list")
        for row in rows:
            correlation, topic, partition, offset = row
            if not all(isinstance(v, str) for v in (correlation, topic)) or not all(
                    type(v) is int and v >= 0 for v in (partition, offset)):
                raise ValueError("bad applied entry")
            applied[(correlation, topic, partition)] = offset
        self._applied[key] = applied
