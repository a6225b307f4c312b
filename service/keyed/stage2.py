"""Stage 2 of ``state.scope: keyed``: the detector of the internal topic's consumer.

Every partition of the internal topic is a scope exactly like an input partition in ``partition``
scope (its own correlation and anomaly engines, snapshots and takeover in
:class:`~service.partition_state.PartitionState`); only what a record does differs, so this is a
:class:`~service.detection.Detector` whose :meth:`KeyedDetector.process` reads state records
instead of evaluating Sigma rules:

- a **state record** (a correlation's or an anomaly check's input) waits in the partition's
  reorder buffer until the partition's watermark passes it, then applies to the one correlation
  (``apply_keyed``) or check it was keyed for, in event-time order; one that arrives after the
  watermark passed its time applies at once (the engine decides whether it is late);
- a **watermark** raises the marks of the input partitions it lists; the internal partition's
  watermark is the lowest mark over *every* input partition (the topics' partition counts come
  with the watermarks), less ``correlation.allowed_lateness``: while one input partition has not
  spoken nothing is released. An input partition whose latest report is idle (read to the end, no
  record yet: after a takeover its new owner reports it so however far the old owner's mark got)
  does not count, as an idle source in Flink's watermarks; when every one is idle the furthest mark
  is the watermark. The buffered records up to
  it apply, then the engines' time reaches it (windows close). A mark never goes back: an input
  partition's new owner re-reads from its committed offset, and what it sends again is dropped as
  a replay (below);
- a **chained** correlation (one referencing another) has a lane per chain level (level *k*: one
  more than the highest level it references; :func:`~service.keyed.records.chain_levels`), each an
  engine fed by its level's base-rule records and by the referenced correlations' alerts, which
  stage 2 re-keys by the parent's group and sends through the internal topic
  (:meth:`KeyedDetector.take_records`); lane *k* is released no further than every internal
  partition's chain mark of level *k - 1* (rows of stage 2's own watermarks: the lowest release of
  lanes 0 to *k - 1* there, so no re-keyed record of those levels with an earlier time follows);
- a record whose origin position (offset, and index of the event in a message that decoded into
  several) is not beyond the last one applied for the same correlation (or check) and input partition is a stage-1 replay (a crash before its commit) and is dropped.

The internal partition is committed no further than its oldest waiting record (:meth:`KeyedDetector.commit_floor`),
so a next owner without this instance's snapshot reads the waiting records again (docs/scaling.md,
"Stage 2's commits").

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
from service.detection import (
    DetectionSet,
    Detector,
    ScopeKey,
    _alert_time,
    _carry_state,
    _restore,
    scope_name,
)
from service.keyed import saved
from service.keyed.records import (
    AnomalyRecord,
    RecordError,
    StateRecord,
    Watermark,
    build,
    chain_fields,
    chain_levels,
    from_mapping,
    level_row,
    packed,
)
from service.keyed.records import Origin as RecordOrigin
from service.keyed.saved import SavedState
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
IDLE_ROUNDS = 3
"""An idle row lapses once another producer has sent this many watermarks since the reporter's
last one: a dead owner's idle report must not keep its partition out of the watermark while a
record it read but never acknowledged waits for the next owner (docs/scaling.md)."""
LOGSOURCES = 4096
"""Log sources :meth:`KeyedDetector._logsource` keeps (forgotten all at once past it)."""
ANOMALY_PREFIX = "anomaly|"
"""Replay-filter positions of anomaly checks (``|`` is not allowed in a check id)."""

Record = StateRecord | AnomalyRecord
_COUNTS = {kind: metrics.KEYED_STATE_RECORDS.labels(kind) for kind in ("applied", "late", "duplicate")}
"""Per-record counters, looked up once, and added to once per batch (see ``KeyedDetector._tally``)."""
Pending = tuple[float, int, Record, int | None]
"""A record waiting for the watermark: (event time, arrival sequence, record, the internal offset it
was read at; None for one restored from a snapshot of a version that did not save it)."""


def _selected(check_id: str, selection: Any) -> Matcher:
    """Stage 2's selection matcher: stage 1 evaluated the selection and sent its verdict (``ratio``),
    or sent the record only when it matched (``threshold``: no verdict)."""
    def matches(event: Event) -> bool:
        return bool(event.get(SELECTED, True)) if isinstance(event, dict) else False

    return matches


def _event_index(key: str | None) -> int:
    """The index of an event in its Kafka message (``str(index)`` when a message decodes into
    several events, in decode order; -1 for a message of one event)."""
    return int(key) if key is not None and key.isdigit() and len(key) <= 9 else -1


def _kafka_origin(record: Record) -> Origin:
    origin = record.origin
    return Origin("kafka", origin.topic, origin.partition, origin.offset, origin.key)


Key = tuple[str, int]
"""An internal partition (topic, partition)."""
BASE, PARENTS = 0, 1
"""Lanes of an internal partition: records of correlations that reference no other correlation and
of anomaly checks (released by the input partitions' marks), and records of correlations that
reference another: lane *k* for chain level *k* (released also by every internal partition's chain
mark of level *k - 1*); ``PARENTS`` is the first of these, the only one of a one-level chain."""


class KeyedDetector(Detector):
    """The stage-2 detector: per internal partition one keyed correlation engine and one anomaly
    engine, and a correlation engine per chain level for the correlations that reference another."""

    holds_records = True

    def __init__(self, detection: DetectionSet, *, max_original_bytes: int = 16_384, lateness_s: float = 0.0,
                 rekey: bool = False) -> None:
        super().__init__(detection, max_original_bytes=max_original_bytes, scope="partition")
        self.lateness_s = lateness_s
        self.rekey = rekey
        """Chained records are taken (:meth:`take_records`) and sent: stage 2's source has a producer.
        Without it they are dropped (counted), as nobody would send them."""
        self._marks: dict[Key, dict[tuple[str, int], float]] = {}
        """Per internal partition: the mark of every input partition heard of."""
        self._counts: dict[Key, dict[str, int]] = {}
        """Per internal partition: the partition count of every input topic."""
        self._idle: dict[Key, dict[tuple[str, int], str]] = {}
        """Per internal partition: input partitions whose latest report is idle (a progress row
        clears it: latest report wins, and owners repeat theirs every interval), each with the
        producer whose idle row keeps it out (``""``: restored from a snapshot, its reporter unknown)."""
        self._quiet: dict[Key, dict[str, dict[str, int]]] = {}
        """Per internal partition and producer: watermarks received from each other producer since its last."""
        self._chain_marks: dict[Key, dict[int, float]] = {}
        """Per internal partition: every internal partition's chain mark (its base lane's release:
        no chained record with an earlier time follows from it)."""
        self._level_marks: dict[Key, dict[tuple[int, int], float]] = {}
        """Per internal partition: every internal partition's chain marks of level 1 and above,
        by (level, partition): the lowest release of its lanes up to that level."""
        self._chain_count: dict[Key, int] = {}
        self._applied: dict[Key, dict[tuple[str, str, int], tuple[int, int]]] = {}
        """Per internal partition: the last origin position applied per (correlation or
        ``anomaly|<check>``, input topic, partition): (offset, index of the event in its message)."""
        self._newest: dict[Key, float] = {}
        self._pending: dict[tuple[Key, int], list[Pending]] = {}
        """Per internal partition and lane: records waiting for the watermark (a heap by event time, arrival)."""
        self._held: dict[Key, dict[int, int]] = {}
        """Per internal partition: how many waiting records were read at each internal offset (the
        lowest is :meth:`commit_floor`)."""
        self._released: dict[tuple[Key, int], float] = {}
        """Per internal partition and lane: the watermark released last (a record at or before it
        applies at once)."""
        self._parents: dict[Key, dict[int, Any]] = {}
        """Per internal partition: the engine of each chained lane."""
        self._chain: tuple[Any, dict[str, int], dict[str, tuple[str, ...]]] = (None, {}, {})
        """For the current correlation engine: the lane of every correlation that references another
        (:func:`~service.keyed.records.chain_levels`), and the fields its parents read up the chain."""
        self._seq = 0
        self._out: list[StateRecord] = []
        """Chained records raised since :meth:`take_records` (stage 2 sends them like stage 1's)."""
        self._out_progress: dict[tuple[str, int], float] = {}
        """Chain marks that moved, by :func:`~service.keyed.records.level_row`."""
        self._at: tuple[Key, int, int] | None = None
        """(internal partition, offset, index): where the next chained record comes from."""
        self._tally = dict.fromkeys(_COUNTS, 0)
        self._logsources: dict[tuple[str | None, str | None, str | None], LogSource] = {}
        """Records applied, late and dropped as replays in the batch being processed (a counter
        increment per record cost more than the replay filter)."""

    def _new_engines(self, current: DetectionSet) -> tuple[Any | None, Any | None]:
        anomaly = None
        if current.anomaly is not None:
            anomaly = AnomalyEngine(list(current.anomaly.specs), matcher_factory=_selected)
        return _keyed_correlation(current), anomaly

    def swap(self, detection: DetectionSet) -> DetectionSet:
        with self._lock:
            old = super().swap(detection)
            for key, lanes in list(self._parents.items()):
                for lane, engine in list(lanes.items()):
                    fresh = _keyed_correlation(detection)
                    _carry_state(engine, fresh, "correlation", scope_name(key) + _lane_name(lane))
                    if fresh is None:
                        del lanes[lane]
                    else:
                        lanes[lane] = fresh
            return old

    def _chained_ids(self, current: DetectionSet) -> dict[str, int]:
        """The lane of every correlation that references another (a chain level of 1 or more)."""
        engine = current.correlation
        if self._chain[0] is not engine:
            specs = list(engine.specs) if engine is not None else []
            levels = {cid: level for cid, level in chain_levels(specs).items() if level}
            self._chain = (engine, levels, chain_fields(specs))
        return self._chain[1]

    def _top(self) -> int:
        """The highest chained lane of the current rules (0: none)."""
        return max(self._chained_ids(self._set).values(), default=0)

    def take_records(self) -> tuple[list[Any], dict[tuple[str, int], float]]:
        """Chained records raised since the last call (correlation alerts re-keyed for the
        correlations referencing them) and every internal partition's chain mark that moved."""
        records, progress = self._out, self._out_progress
        self._out, self._out_progress = [], {}
        if not self._chained_ids(self._set):
            progress = {}  # no chained lane waits for the marks: nothing to send every interval
        return records, progress

    def process(self, items: Sequence[Item], now: float | None = None) -> list[Alert]:
        with self._lock:
            try:
                return self._process_records(items, time.time() if now is None else now)
            finally:
                tally = self._tally
                for kind, count in tally.items():
                    if count:
                        _COUNTS[kind].inc(count)
                        tally[kind] = 0

    def _process_records(self, items: Sequence[Item], now: float) -> list[Alert]:
        """Every record of every item (a message of the internal topic: :func:`packed`), in order.

        A record passes the replay filter, then waits for the watermark of its lane (or applies at
        once when that watermark has passed its time already: the engine decides whether it is
        late: :meth:`_wait`); the filter inlined here, once per record."""
        current = self._set
        chained = self._chained_ids(current)
        alerts: list[Alert] = []
        tally = self._tally
        newest, released, pendings = self._newest, self._released, self._pending
        self._at = None
        for item in items:
            key = item.scope_key()
            if key is None:
                continue
            ref = item.origin_ref  # a Kafka tuple stays a tuple (no origin built per message)
            offset = (ref[2] if isinstance(ref, tuple) else ref.offset) or 0
            docs = packed(item.event)
            engines: tuple[Any | None, Any | None] | None = None
            applied: dict[tuple[str, str, int], tuple[int, int]] = {}
            for index, doc in enumerate(docs):
                try:
                    record = from_mapping(doc)
                except RecordError as exc:
                    metrics.KEYED_STATE_RECORDS.labels("unreadable").inc()
                    where = item.origin if len(docs) == 1 else dataclasses.replace(item.origin, key=str(index))
                    log.warning("keyed scope: unreadable state record skipped",
                                extra={"origin": where.token(), "error": str(exc)})
                    continue
                if engines is None:
                    engines = self._engines(key, current)
                    if engines == (None, None):
                        break
                    if self._at is None or self._at[:2] != (key, offset):  # the records of one message
                        self._at = (key, offset, 0)  # share its offset: their chained records count on
                    applied = self._applied.setdefault(key, {})
                if isinstance(record, Watermark):
                    self._note(key, record)
                    alerts.extend(self._release(key, now))  # at this record: a replay releases at the same place
                    continue
                origin = record.origin
                lane = BASE
                if isinstance(record, StateRecord):
                    name = record.correlation
                    if name in chained:
                        lane = chained[name]
                else:
                    name = ANOMALY_PREFIX + record.check
                origin_key = origin.key
                at = (origin.offset, -1 if origin_key is None else _event_index(origin_key))
                position = (name, origin.topic, origin.partition)
                last = applied.get(position)
                if last is not None and at <= last:
                    tally["duplicate"] += 1
                    continue
                applied[position] = at
                ts = record.ts
                if ts > newest.get(key, -math.inf):
                    newest[key] = ts
                if ts <= released.get((key, lane), -math.inf):
                    found = self._apply(key, lane, engines, record, now)
                else:
                    found = self._wait(key, lane, engines, record, now, offset, pendings.get((key, lane)))
                if found:
                    alerts.extend(found)
        self._at = None
        return alerts

    def _note(self, key: Key, record: Watermark) -> None:
        """Raise the marks a watermark lists: input partitions', or (rows of the internal topic
        itself, from stage 2's producers) the internal partitions' chain marks."""
        marks = self._marks.setdefault(key, {})
        chain = self._chain_marks.setdefault(key, {})
        if record.chain:
            levels = self._level_marks.setdefault(key, {})
            for partition, level, ts in record.chain:
                if ts > levels.get((level, partition), -math.inf):
                    levels[(level, partition)] = ts
        idle = self._idle.setdefault(key, {})
        quiet = self._quiet.setdefault(key, {})
        for others in quiet.values():
            others[record.producer] = others.get(record.producer, 0) + 1
        quiet[record.producer] = {}
        for topic, partition, ts in record.progress:
            if topic == key[0]:
                if ts > chain.get(partition, -math.inf):
                    chain[partition] = ts
                continue
            idle.pop((topic, partition), None)
            if ts > marks.get((topic, partition), -math.inf):
                marks[(topic, partition)] = ts
        for tp in record.idle:
            if tp[0] != key[0]:
                idle[tp] = record.producer
        for tp, producer in list(idle.items()):  # reporters gone quiet: their rows lapse
            if max(quiet.get(producer, {}).values(), default=0) >= IDLE_ROUNDS:
                del idle[tp]
        counts = self._counts.setdefault(key, {})
        for topic, count in record.topics:
            if topic == key[0]:
                self._chain_count[key] = max(count, self._chain_count.get(key, 0))
            else:
                counts[topic] = max(count, counts.get(topic, 0))

    def _wait(self, key: Key, lane: int, engines: tuple[Any | None, Any | None], record: Record, now: float,
              offset: int, pending: list[Pending] | None) -> list[Alert]:
        """``record`` (past the replay filter, after its lane's release) waits for the watermark in
        ``pending``, its lane's buffer; when that is full the oldest applies before its time (it may
        make later ones late). ``offset``: the internal offset it was read at."""
        if pending is None:
            pending = self._pending[(key, lane)] = []
        self._seq += 1
        heapq.heappush(pending, (record.ts, self._seq, record, offset))
        held = self._held.get(key)  # self._hold(key, offset, 1), inlined (once per record)
        if held is None:
            held = self._held[key] = {}
        held[offset] = held.get(offset, 0) + 1
        correlation = engines[0]
        bound = correlation.limits.max_pending if correlation is not None else DEFAULT_MAX_PENDING
        if len(pending) > bound:
            metrics.KEYED_STATE_RECORDS.labels("overflow").inc()
            return self._apply(key, lane, engines, self._pop(key, pending), now)
        return []

    def _hold(self, key: Key, offset: int | None, change: int) -> None:
        """Count a record read at ``offset`` into (1) or out of (-1) the partition's waiting records."""
        if offset is None:
            return
        held = self._held.setdefault(key, {})
        count = held.get(offset, 0) + change
        if count > 0:
            held[offset] = count
        else:
            held.pop(offset, None)

    def _pop(self, key: Key, pending: list[Pending]) -> Record:
        """The earliest waiting record, taken out of the buffer."""
        _, _, record, offset = heapq.heappop(pending)
        self._hold(key, offset, -1)
        return record

    def commit_floor(self, key: tuple[str, int]) -> int | None:
        """The lowest internal offset a record still waiting for the watermark was read at: the
        partition is committed no further (docs/scaling.md, "Stage 2's commits"), so a next owner
        without this instance's snapshot reads it again. None while nothing waits."""
        with self._lock:
            held = self._held.get(key)
            return min(held) if held else None

    def _lane_engine(self, key: Key, lane: int) -> Any | None:
        """The engine of a chained lane (made at its first record)."""
        lanes = self._parents.setdefault(key, {})
        engine = lanes.get(lane)
        if engine is None:
            engine = _keyed_correlation(self._set)
            if engine is not None:
                lanes[lane] = engine
        return engine

    def _apply(self, key: Key, lane: int, engines: tuple[Any | None, Any | None], record: Record,
               now: float) -> list[Alert]:
        """Apply one record to its engine; its alerts carry its origin (and fields, when it fired)."""
        if isinstance(record, AnomalyRecord):
            return self._apply_anomaly(engines[1], record, now)
        engine = engines[0] if lane == BASE else self._lane_engine(key, lane)
        if engine is None:
            return []
        counters = engine.counters
        before = counters.get("late", 0)
        evidence = record.ref
        if evidence is None:  # the origin's token (``_kafka_origin(record).token()``), no origin built
            origin = record.origin
            evidence = f"kafka:{origin.topic}:{origin.partition}:{origin.offset}"
            if origin.key is not None:
                evidence = f"{evidence}:{origin.key}"
        try:
            matches = engine.apply_keyed(record.correlation, record.rules, record.fields, record.ts, evidence)
        except Exception:
            self._engine_failed("correlation")
            return []
        finally:
            if engine.chained:
                self._rekey(engine)
        self._tally["late" if counters.get("late", 0) > before else "applied"] += 1
        if not matches:
            return []
        ref = _kafka_origin(record)
        return [self._keyed_alert(match, record.fields, ref, record.ts, now) for match in matches]

    def _rekey(self, engine: Any) -> None:
        """The engine's alerts that feed a correlation referencing them, as records keyed by that
        correlation's group (origin: the internal record being processed, and the alert's index)."""
        chained = engine.chained
        if not chained or self._at is None or not self.rekey:
            if chained:
                metrics.EVENTS_SKIPPED.labels("correlation", "chained_not_sent").inc(len(chained))
            chained.clear()
            return
        key, offset, index = self._at
        extra = self._chain[2]
        for item in chained:
            origin = RecordOrigin(key[0], key[1], offset, str(index))
            index += 1
            record = build(item.parent, [item.child], item.context, item.ts, origin, ref=item.ref,
                           extra=extra.get(item.parent.info.id, ()))
            if record is None:
                metrics.EVENTS_SKIPPED.labels("correlation", "missing_group_by").inc()
            else:
                self._out.append(record)
        chained.clear()
        self._at = (key, offset, index)

    def _apply_anomaly(self, engine: Any | None, record: AnomalyRecord, now: float) -> list[Alert]:
        """The record to its check. The check reads the record's fields in place (no check writes
        into an event; a copy only for a ``ratio`` verdict), and gets its origin as the Kafka
        ``(topic, partition, offset)`` reference (the record's origin itself: an :class:`Origin`
        is built only for an alert, or when the origin has a key)."""
        check = engine.checks.get(record.check) if engine is not None else None
        if check is None:  # a check removed (or changed into an invalid one) under the record
            metrics.KEYED_STATE_RECORDS.labels("unknown").inc()
            return []
        fields = record.fields
        event: Any = fields
        if record.selected is not None:
            event = dict(fields)
            event[SELECTED] = record.selected
        source = record.source
        logsource = None if source is None else self._logsource(source)
        origin = record.origin
        ref: Any = origin if origin.key is None else _kafka_origin(record)
        before = check.counters.get("late", 0)
        try:
            matches = check.process(event, record.ts, logsource, ref)
        except Exception:
            self._engine_failed("anomaly")
            return []
        self._tally["late" if check.counters.get("late", 0) > before else "applied"] += 1
        if not matches:
            return []
        where = _kafka_origin(record)
        return [self._keyed_alert(match, fields, where, record.ts, now, logsource) for match in matches]

    def _logsource(self, source: tuple[str | None, str | None, str | None]) -> LogSource:
        """One :class:`LogSource` per (product, category, service) a record names, reused."""
        logsource = self._logsources.get(source)
        if logsource is None:
            if len(self._logsources) >= LOGSOURCES:
                self._logsources.clear()
            logsource = self._logsources[source] = LogSource(*source)
        return logsource

    def watermark(self, key: Key) -> float | None:
        """The internal partition's watermark: the lowest mark over every input partition not idle,
        or None while one of them has not spoken; the furthest mark when all are idle."""
        marks = self._marks.get(key)
        counts = self._counts.get(key)
        if not marks or not counts:
            return None
        idle = self._idle.get(key, {})
        lowest = math.inf
        for topic, count in counts.items():
            for partition in range(count):
                if (topic, partition) in idle:
                    continue
                mark = marks.get((topic, partition))
                if mark is None:
                    return None
                lowest = min(lowest, mark)
        return lowest if math.isfinite(lowest) else max(marks.values())

    def released(self, key: Key, lane: int = BASE) -> float | None:
        """The watermark ``lane`` of the internal partition released last (None: none yet)."""
        with self._lock:
            return self._released.get((key, lane))

    def chain_watermark(self, key: Key, level: int = 0) -> float | None:
        """The lowest chain mark of ``level`` over every internal partition, or None while one has
        not spoken (an owner of a version without level marks never speaks for level 1 and above)."""
        count = self._chain_count.get(key)
        if not count:
            return None
        if level == 0:
            marks = self._chain_marks.get(key, {})
            lowest = min((marks.get(p, -math.inf) for p in range(count)), default=-math.inf)
        else:
            levels = self._level_marks.get(key, {})
            lowest = min((levels.get((level, p), -math.inf) for p in range(count)), default=-math.inf)
        return lowest if math.isfinite(lowest) else None

    def _release(self, key: Key, now: float) -> list[Alert]:
        """Apply the partition's waiting records up to its watermark less the allowed lateness, in
        event-time order, then let its engines' time reach it (windows close: a timer's alerts);
        the chained lane no further than every internal partition's chain mark."""
        engines = self._scoped.get(key)
        mark = self.watermark(key)
        if mark is None or engines is None:
            return []
        watermark = mark - self.lateness_s
        newest = self._newest.get(key)
        if newest is not None:
            metrics.KEYED_WATERMARK_LAG.set(max(0.0, newest - watermark))
        alerts = self._release_lane(key, BASE, engines, watermark, now)
        released = self._released
        mark = released[(key, BASE)]
        self._out_progress[key] = mark
        top = self._top()
        for lane in range(PARENTS, top + 1):  # each chained lane after the levels below it
            chain = self.chain_watermark(key, lane - 1)
            if chain is None:
                break
            watermark = min(watermark, chain)
            alerts += self._release_lane(key, lane, engines, watermark, now)
            if lane < top:  # this level's mark: no re-keyed record of levels 0..lane before it follows
                mark = min(mark, released[(key, lane)])
                self._out_progress[level_row(key[0], key[1], lane)] = mark
        return alerts

    def _release_lane(self, key: Key, lane: int, engines: tuple[Any | None, Any | None], watermark: float,
                      now: float) -> list[Alert]:
        alerts: list[Alert] = []
        pending = self._pending.get((key, lane))
        if pending and pending[0][0] <= watermark:
            held = self._held.get(key, {})
            apply, pop = self._apply, heapq.heappop
            while pending and pending[0][0] <= watermark:
                _, _, record, offset = pop(pending)
                if offset is not None:  # self._hold(key, offset, -1), inlined (once per record)
                    count = held.get(offset, 0) - 1
                    if count > 0:
                        held[offset] = count
                    else:
                        held.pop(offset, None)
                applied = apply(key, lane, engines, record, now)
                if applied:
                    alerts.extend(applied)
        if watermark > self._released.get((key, lane), -math.inf):
            self._released[(key, lane)] = watermark
        watermark = self._released[(key, lane)]
        origin = Origin("timer", key=scope_name(key))
        found: list[Match] = []
        if lane == BASE:
            correlation, anomaly = engines
            if correlation is not None:
                found += self._stateful("correlation", correlation.release, watermark)
                self._rekey(correlation)
            if anomaly is not None:
                found += self._stateful("anomaly", anomaly.advance, watermark)
        else:
            parents = self._parents.get(key, {}).get(lane)
            if parents is not None:
                found += self._stateful("correlation", parents.release, watermark)
                self._rekey(parents)  # the next level's inputs (covered by this level's chain mark)
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

    def _tables(self) -> tuple[dict[Any, Any], ...]:
        return (self._marks, self._counts, self._idle, self._quiet, self._chain_marks, self._level_marks,
                self._chain_count, self._applied,
                self._newest, self._parents, self._held)

    def _lanes(self, key: Key) -> list[int]:
        """The lanes of ``key`` with records waiting or a release (every lane of the rules at least)."""
        found = {lane for k, lane in (*self._pending, *self._released) if k == key}
        return sorted(found.union(range(self._top() + 1)))

    def _forget(self, key: Key) -> None:
        for table in self._tables():
            table.pop(key, None)
        for lane in self._lanes(key):
            self._pending.pop((key, lane), None)
            self._released.pop((key, lane), None)

    def drop_scope(self, key: tuple[str, int]) -> None:
        with self._lock:
            super().drop_scope(key)
            self._forget(key)

    def export_scope(self, key: ScopeKey) -> dict[str, dict[str, Any]]:
        """The partition's engine snapshots with this detector's own state inside the correlation
        one (the anomaly one without correlations), consistent with the same offset: the input
        partitions' and the chain marks, the replay filter, the records waiting for the watermark
        (in (time, arrival) order, each with the internal offset it was read at), the watermarks
        released last and the chained lane's engine
        (:mod:`service.keyed.saved`)."""
        with self._lock:
            out = super().export_scope(key)
            host = "correlation" if "correlation" in out else "anomaly"
            if key is not None and host in out:
                lanes = self._lanes(key)
                engines = {lane: orjson.loads(orjson.dumps(engine.snapshot()))
                           for lane, engine in self._parents.get(key, {}).items()}
                waiting = [entry for lane in lanes for entry in sorted(self._pending.get((key, lane), []))]
                state = SavedState(
                    self._marks.get(key, {}), self._counts.get(key, {}), set(self._idle.get(key, {})),
                    self._chain_marks.get(key, {}), self._chain_count.get(key), self._applied.get(key, {}),
                    [record for _, _, record, _ in waiting],
                    tuple(self._released.get((key, lane)) for lane in range(max(lanes[-1], PARENTS) + 1)),
                    engines.pop(PARENTS, None),
                    [offset for _, _, _, offset in waiting], self._level_marks.get(key, {}), engines)
                out[host][KEYED_STATE] = saved.dump(state, key[0])
            return out

    def import_scope(self, key: ScopeKey, snapshots: dict[str, dict[str, Any]],
                     clock: tuple[float, float] | None = None) -> None:
        with self._lock:
            document: Any = None
            for host in ("correlation", "anomaly"):
                engine_doc = snapshots.get(host)
                if isinstance(engine_doc, dict) and KEYED_STATE in engine_doc:
                    engine_doc = dict(engine_doc)
                    found = engine_doc.pop(KEYED_STATE)
                    document = found if document is None else document
                    snapshots = {**snapshots, host: engine_doc}
            super().import_scope(key, snapshots, clock)
            if key is None:
                return
            self._forget(key)
            if document is None:
                return
            try:
                state = saved.load(document)
            except (TypeError, ValueError, RecordError) as exc:
                log.warning("keyed scope: saved marks and replay filter not restored",
                            extra={"scope": scope_name(key), "error": str(exc)})
                return
            self._marks[key], self._counts[key] = state.marks, state.counts
            self._idle[key], self._quiet[key] = dict.fromkeys(state.idle, ""), {"": {}}
            self._chain_marks[key], self._applied[key] = state.chain, state.applied
            self._level_marks[key] = state.levels
            if state.chain_count is not None:
                self._chain_count[key] = state.chain_count
            chained = self._chained_ids(self._set)
            for record, offset in zip(state.pending, state.arrived, strict=True):
                lane = chained.get(record.correlation, BASE) if isinstance(record, StateRecord) else BASE
                self._seq += 1
                heapq.heappush(self._pending.setdefault((key, lane), []), (record.ts, self._seq, record, offset))
                self._hold(key, offset, 1)
                if record.ts > self._newest.get(key, -math.inf):
                    self._newest[key] = record.ts
            for lane, value in enumerate(state.released):
                if value is not None:
                    self._released[(key, lane)] = value
            # a snapshot of the version before the lanes per level has one chained engine: the first lane's
            lanes = {PARENTS: state.parents, **state.lanes} if state.parents is not None else dict(state.lanes)
            for lane, document in sorted(lanes.items()):
                engine = self._lane_engine(key, lane)
                if engine is not None:
                    _restore(engine, document, "correlation", scope_name(key) + _lane_name(lane))


def _lane_name(lane: int) -> str:
    """How a chained lane's engine is named in logs (the first one as before the lanes per level)."""
    return ":chained" if lane == PARENTS else f":chained{lane}"


def _keyed_correlation(current: DetectionSet) -> Any | None:
    """A keyed engine of ``current``'s correlations, buffering by the watermark records only."""
    engine = current.correlation
    if engine is None:
        return None
    limits = dataclasses.replace(engine.limits, allowed_lateness=BUFFER_LATENESS_S)
    return type(engine)(engine.specs, limits, keyed=True)
