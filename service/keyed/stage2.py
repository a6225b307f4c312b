"""Stage 2 of ``state.scope: keyed``: the detector of the internal topic's consumer.

Every partition of the internal topic is a scope exactly like an input partition in ``partition``
scope (its own correlation and anomaly engines, snapshots and takeover in
:class:`~service.partition_state.PartitionState`); only what a record does differs, so this is a
:class:`~service.detection.Detector` whose :meth:`KeyedDetector.process` reads state records
instead of evaluating Sigma rules:

- a **state record** (a correlation's or an anomaly check's input) waits in the partition's
  reorder buffer until the partition's watermark passes it, then applies to the one correlation
  (``process_keyed``) or check it was keyed for, in event-time order; one that arrives after the
  watermark passed its time applies at once (the engine decides whether it is late);
- a **watermark** raises the marks of the input partitions it lists; the internal partition's
  watermark is the lowest mark over *every* input partition (the topics' partition counts come
  with the watermarks), less ``correlation.allowed_lateness``: while one input partition has not
  spoken nothing is released. An input partition its owner reports idle (read to the end, no
  record yet) does not count, as an idle source in Flink's watermarks. The buffered records up to
  it apply, then the engines' time reaches it (windows close). A mark never goes back: an input
  partition's new owner re-reads from its committed offset, and what it sends again is dropped as
  a replay (below);
- a record whose origin position (offset, and index of the event in a message that decoded into
  several) is not beyond the last one applied for the same correlation (or check) and input partition is a stage-1 replay (a crash before its commit) and is dropped.

An alert a record fires carries the record's origin (the firing event's, as in ``partition``
scope) and its fields; windows closed by the watermark alone come from the partition's timer.
Alert ids are the engines' (correlation, group key, window start; check, key, window start): the
same as any other run over the same events, ``pipesentry eval`` included.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
import time
from collections.abc import Collection, Sequence
from typing import Any

import orjson

from detectors.alert import Alert, build_alert
from detectors.anomaly import AnomalyEngine
from detectors.anomaly.selection import Matcher
from detectors.model import Event, LogSource, Match, Origin
from service import metrics
from service.detection import DetectionSet, Detector, ScopeKey, _alert_time, scope_name
from service.keyed.records import (
    VERSION,
    AnomalyRecord,
    RecordError,
    StateRecord,
    Watermark,
    from_mapping,
)
from service.sources.base import Item

log = logging.getLogger(__name__)

KEYED_STATE = "keyed"
"""Key of this detector's own state inside a partition's correlation (else anomaly) snapshot."""
BUFFER_LATENESS_S = 10 * 365 * 86_400.0
"""Stage-2 engines buffer by the watermark records, not by their own newest time: a lateness no
record reaches keeps the engine from releasing anything itself."""
SELECTED = "\x00selected"
"""Where a ``ratio`` record's selection verdict (stage 1's) waits for stage 2's matcher."""
DEFAULT_MAX_PENDING = 100_000
ANOMALY_PREFIX = "anomaly|"
"""Replay-filter positions of anomaly checks (``|`` is not allowed in a check id)."""

Record = StateRecord | AnomalyRecord
Pending = tuple[float, int, Record]


def _selected(check_id: str, selection: Any) -> Matcher:
    """Stage 2's selection matcher: stage 1 evaluated the selection and sent its verdict (``ratio``),
    or sent the record only when it matched (``threshold``: no verdict)."""
    def matches(event: Event) -> bool:
        return bool(event.get(SELECTED, True)) if isinstance(event, dict) else False

    return matches


def _record_document(record: Record) -> Any:
    return orjson.loads(record.encode())


def _event_index(key: str | None) -> int:
    """The index of an event in its Kafka message (``str(index)`` when a message decodes into
    several events, in decode order; -1 for a message of one event)."""
    return int(key) if key is not None and key.isdigit() and len(key) <= 9 else -1


def _kafka_origin(record: Record) -> Origin:
    origin = record.origin
    return Origin("kafka", origin.topic, origin.partition, origin.offset, origin.key)


class KeyedDetector(Detector):
    """The stage-2 detector: one keyed correlation engine and one anomaly engine per internal partition."""

    def __init__(self, detection: DetectionSet, *, max_original_bytes: int = 16_384, lateness_s: float = 0.0) -> None:
        super().__init__(detection, max_original_bytes=max_original_bytes, scope="partition")
        self.lateness_s = lateness_s
        self._marks: dict[tuple[str, int], dict[tuple[str, int], float]] = {}
        """Per internal partition: the mark of every input partition heard of."""
        self._counts: dict[tuple[str, int], dict[str, int]] = {}
        """Per internal partition: the partition count of every input topic."""
        self._idle: dict[tuple[str, int], set[tuple[str, int]]] = {}
        """Per internal partition: input partitions reported idle (without a mark yet)."""
        self._applied: dict[tuple[str, int], dict[tuple[str, str, int], tuple[int, int]]] = {}
        """Per internal partition: the last origin position applied per (correlation or
        ``anomaly|<check>``, input topic, partition): (offset, index of the event in its message)."""
        self._newest: dict[tuple[str, int], float] = {}
        self._pending: dict[tuple[str, int], list[Pending]] = {}
        """Per internal partition: records waiting for the watermark (a heap by event time, arrival)."""
        self._released: dict[tuple[str, int], float] = {}
        """Per internal partition: the watermark released last (a record at or before it applies at once)."""
        self._seq = 0

    def _new_engines(self, current: DetectionSet) -> tuple[Any | None, Any | None]:
        correlation = anomaly = None
        engine = current.correlation
        if engine is not None:
            limits = dataclasses.replace(engine.limits, allowed_lateness=BUFFER_LATENESS_S)
            correlation = type(engine)(engine.specs, limits, keyed=True)
        if current.anomaly is not None:
            anomaly = AnomalyEngine(list(current.anomaly.specs), matcher_factory=_selected)
        return correlation, anomaly

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
            engines = self._engines(key, current)
            if engines == (None, None):
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
            alerts.extend(self._receive(key, engines, record, now))
        for key in released:
            alerts.extend(self._release(key, now))
        return alerts

    def _receive(self, key: tuple[str, int], engines: tuple[Any | None, Any | None], record: Record,
                 now: float) -> list[Alert]:
        """A record passes the replay filter, then waits for the watermark (or applies at once when
        the watermark has passed its time already: the engine decides whether it is late)."""
        origin = record.origin
        applied = self._applied.setdefault(key, {})
        name = record.correlation if isinstance(record, StateRecord) else ANOMALY_PREFIX + record.check
        position = (name, origin.topic, origin.partition)
        at = (origin.offset, _event_index(origin.key))
        last = applied.get(position)
        if last is not None and at <= last:
            metrics.KEYED_STATE_RECORDS.labels("duplicate").inc()
            return []
        applied[position] = at
        if record.ts > self._newest.get(key, -math.inf):
            self._newest[key] = record.ts
        if record.ts <= self._released.get(key, -math.inf):
            return self._apply(engines, record, now)
        pending = self._pending.setdefault(key, [])
        self._seq += 1
        heapq.heappush(pending, (record.ts, self._seq, record))
        correlation = engines[0]
        bound = correlation.limits.max_pending if correlation is not None else DEFAULT_MAX_PENDING
        if len(pending) > bound:  # the oldest applies before its time (it may make later ones late)
            metrics.KEYED_STATE_RECORDS.labels("overflow").inc()
            return self._apply(engines, heapq.heappop(pending)[2], now)
        return []

    def _apply(self, engines: tuple[Any | None, Any | None], record: Record, now: float) -> list[Alert]:
        """Apply one record to its engine; its alerts carry its origin (and fields, when it fired)."""
        ref = _kafka_origin(record)
        if isinstance(record, AnomalyRecord):
            return self._apply_anomaly(engines[1], record, ref, now)
        engine = engines[0]
        if engine is None:
            return []
        before = engine.counters.get("late", 0)
        try:
            matches = engine.process_keyed(record.correlation, record.rules, record.fields, record.ts, ref.token())
            matches += engine.release(record.ts)
        except Exception:
            self._engine_failed("correlation")
            return []
        metrics.KEYED_STATE_RECORDS.labels("late" if engine.counters.get("late", 0) > before else "applied").inc()
        return [self._keyed_alert(match, record.fields, ref, record.ts, now) for match in matches]

    def _apply_anomaly(self, engine: Any | None, record: AnomalyRecord, ref: Origin, now: float) -> list[Alert]:
        check = engine.checks.get(record.check) if engine is not None else None
        if check is None:  # a check removed (or changed into an invalid one) under the record
            metrics.KEYED_STATE_RECORDS.labels("unknown").inc()
            return []
        event: dict[str, Any] = dict(record.fields)
        if record.selected is not None:
            event[SELECTED] = record.selected
        logsource = record.logsource
        before = check.counters.get("late", 0)
        try:
            matches = check.process(event, record.ts, logsource)
        except Exception:
            self._engine_failed("anomaly")
            return []
        metrics.KEYED_STATE_RECORDS.labels("late" if check.counters.get("late", 0) > before else "applied").inc()
        fields = record.fields
        return [self._keyed_alert(match, fields, ref, record.ts, now, logsource) for match in matches]

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
        """Apply the partition's waiting records up to its watermark less the allowed lateness, in
        event-time order, then let its engines' time reach it (windows close: a timer's alerts)."""
        engines = self._scoped.get(key)
        mark = self.watermark(key)
        if mark is None or engines is None:
            return []
        watermark = mark - self.lateness_s
        newest = self._newest.get(key)
        if newest is not None:
            metrics.KEYED_WATERMARK_LAG.set(max(0.0, newest - watermark))
        alerts: list[Alert] = []
        pending = self._pending.get(key)
        while pending and pending[0][0] <= watermark:
            alerts.extend(self._apply(engines, heapq.heappop(pending)[2], now))
        if watermark > self._released.get(key, -math.inf):
            self._released[key] = watermark
        origin = Origin("timer", key=scope_name(key))
        correlation, anomaly = engines
        found: list[Match] = []
        if correlation is not None:
            found += self._stateful("correlation", correlation.release, watermark)
        if anomaly is not None:
            found += self._stateful("anomaly", anomaly.advance, watermark)
        alerts.extend(self._keyed_alert(match, {}, origin, watermark, now) for match in found)
        return alerts

    def _keyed_alert(self, match: Match, fields: Any, origin: Origin, ts: float, now: float,
                     logsource: LogSource | None = None) -> Alert:
        event_time = _alert_time(match, ts)
        return build_alert(match, fields if event_time == ts else {}, origin, event_time=event_time, now=now,
                           logsource=logsource, max_original_bytes=self._max_original)

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
            self._pending.pop(key, None)
            self._released.pop(key, None)

    def export_scope(self, key: ScopeKey) -> dict[str, dict[str, Any]]:
        """The partition's engine snapshots with this detector's own state inside the correlation
        one (the anomaly one without correlations), consistent with the same offset: the input
        partitions' marks, the replay filter, the records waiting for the watermark (in arrival
        order) and the watermark released last."""
        with self._lock:
            out = super().export_scope(key)
            host = "correlation" if "correlation" in out else "anomaly"
            if key is not None and host in out:
                released = self._released.get(key)
                out[host][KEYED_STATE] = {
                    "marks": [[t, p, ts] for (t, p), ts in sorted(self._marks.get(key, {}).items())],
                    "counts": sorted([t, n] for t, n in self._counts.get(key, {}).items()),
                    "idle": sorted([t, p] for t, p in self._idle.get(key, set())),
                    "applied": [[c, t, p, o, i] for (c, t, p), (o, i) in sorted(self._applied.get(key, {}).items())],
                    "pending": [_record_document(r) for _, _, r in sorted(self._pending.get(key, []))],
                    "released": released if released is not None and math.isfinite(released) else None,
                }
            return out

    def import_scope(self, key: ScopeKey, snapshots: dict[str, dict[str, Any]],
                     clock: tuple[float, float] | None = None) -> None:
        with self._lock:
            saved: Any = None
            for host in ("correlation", "anomaly"):
                document = snapshots.get(host)
                if isinstance(document, dict) and KEYED_STATE in document:
                    document = dict(document)
                    found = document.pop(KEYED_STATE)
                    saved = found if saved is None else saved
                    snapshots = {**snapshots, host: document}
            super().import_scope(key, snapshots, clock)
            if key is None:
                return
            tables: tuple[dict[Any, Any], ...] = (self._marks, self._counts, self._idle, self._applied,
                                                  self._newest, self._pending, self._released)
            for table in tables:
                table.pop(key, None)
            if saved is not None:
                try:
                    self._load_keyed(key, saved)
                except (TypeError, ValueError, RecordError) as exc:
                    for table in tables:
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
        applied: dict[tuple[str, str, int], tuple[int, int]] = {}
        rows = saved.get("applied")
        if not isinstance(rows, list):
            raise ValueError("applied is not a list")
        for row in rows:
            correlation, topic, partition, offset, *rest = row  # a first-slice snapshot: no event index
            index = rest[0] if len(rest) == 1 else -1
            if not all(isinstance(v, str) for v in (correlation, topic)) or not all(
                    type(v) is int and v >= 0 for v in (partition, offset)) or type(index) is not int or len(rest) > 1:
                raise ValueError("bad applied entry")
            applied[(correlation, topic, partition)] = (offset, index)
        pending: list[Pending] = []
        for doc in saved.get("pending") or []:
            record = from_mapping(doc)
            if isinstance(record, Watermark):
                raise ValueError("a watermark among the waiting records")
            self._seq += 1
            pending.append((record.ts, self._seq, record))
            if record.ts > self._newest.get(key, -math.inf):
                self._newest[key] = record.ts
        heapq.heapify(pending)
        released = saved.get("released")
        if released is not None:
            if isinstance(released, bool) or not isinstance(released, int | float) or not math.isfinite(released):
                raise ValueError("bad released watermark")
            self._released[key] = float(released)
        self._applied[key] = applied
        self._pending[key] = pending
