"""The detector stage: Sigma ruleset, correlation and anomaly engines, swapped atomically on reload.

:class:`Detector` holds one immutable :class:`DetectionSet`. ``process`` reads
the current set once at the start of a batch and runs synchronously to the end.
Every method that reads or changes engine state holds the detector's lock, so the
service may call them from worker threads (detection never runs on the event loop,
where one slow event would stall every input and the API) and a swap can only happen
between batches: no event is evaluated by two rulesets or dropped by a swap.

Correlation and anomaly engines are optional: they are imported defensively so
the Sigma path works alone, and their state is carried from the old engines to
the new ones on reload (``snapshot``/``restore``) when the engines allow it.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import orjson

from detectors.alert import NO_LOGSOURCE, Alert, build_alert, event_alert
from detectors.model import Match, Origin
from detectors.sigma import RuleError
from detectors.sigma.memo import CompileMemo
from service import metrics
from service.detection_metrics import CounterExport
from service.sources.base import Item, Tick, Undecoded

log = logging.getLogger(__name__)

ScopeKey = tuple[str, int] | None
"""A Kafka (topic, partition) whose stateful engines are kept apart; ``None``: the local inputs."""
StateScope = Literal["partition", "instance", "keyed"]
"""``state.scope``: per Kafka partition engines, one pair (the local scope) for everything, or
(``keyed``) state records re-keyed through Kafka instead of Kafka correlations in this stage."""
_NO_SCOPE = object()
PLAN_CACHE = 4096
"""``keyed``: sets of matched rules whose record plans stage 1 keeps."""
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a :class:`Detector` method under its lock (engines are not thread-safe)."""
    @functools.wraps(method)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with args[0]._lock:  # type: ignore[attr-defined]
            return method(*args, **kwargs)
    return locked


@dataclass(frozen=True)
class DetectionSet:
    """One compiled, immutable generation of everything that detects."""

    ruleset: Any
    correlation: Any | None = None
    anomaly: Any | None = None
    errors: tuple[RuleError, ...] = ()
    generation: int = 0
    loaded_at: float = field(default_factory=time.time)

    @property
    def stateful(self) -> bool:
        return self.correlation is not None or self.anomaly is not None

    def new_engines(self) -> tuple[Any | None, Any | None]:
        """Fresh, empty engines of this generation (one pair per Kafka partition), made from the
        compiled ones' specs and limits: nothing is compiled again."""
        correlation = anomaly = None
        if self.correlation is not None:
            correlation = type(self.correlation)(self.correlation.specs, self.correlation.limits)
        if self.anomaly is not None:
            anomaly = type(self.anomaly)(list(self.anomaly.specs))
        return correlation, anomaly

    @property
    def suppressed(self) -> frozenset[str]:
        ids = getattr(self.correlation, "suppressed_rule_ids", None) if self.correlation else None
        return frozenset(ids or ())

    def counts(self) -> dict[str, int]:
        rules = len(self.ruleset.rules)
        correlations = len(getattr(self.ruleset, "correlations", ()) or ())
        checks = len(getattr(self.anomaly, "specs", ()) or ()) if self.anomaly is not None else 0
        return {"sigma": rules, "correlation": correlations if self.correlation else 0, "anomaly": checks}


@dataclass(frozen=True)
class CompileOutcome:
    """The result of compiling a candidate set: ``accepted`` False means the old set stays."""

    detection: DetectionSet | None
    errors: tuple[RuleError, ...]
    accepted: bool
    reason: str = ""
    restored: bool = False
    """The ruleset came from the compiled-ruleset cache (see :func:`service.pipeline.tune_gc`)."""


def _compile_correlation(ruleset: Any, enabled: bool | None,
                         options: dict[str, Any]) -> tuple[Any | None, list[RuleError]]:
    if enabled is False or (enabled is None and not getattr(ruleset, "correlations", ())):
        return None, []
    try:
        from detectors.correlation import compile_correlations
    except ImportError:
        if getattr(ruleset, "correlations", ()):
            log.warning("correlation rules present but the correlation engine is not installed")
        return None, []
    engine, errors = compile_correlations(ruleset, **options)
    return engine, list(errors)


def _compile_anomaly(paths: Sequence[Path]) -> tuple[Any | None, list[RuleError]]:
    """The checks of ``paths`` (read by the same loader as ``pipesentry anomaly check``)."""
    if not paths:
        return None, []
    try:
        from detectors.anomaly import AnomalyEngine
        from service.anomaly_checks import load_check_files
    except ImportError:
        return None, [RuleError(source=str(paths[0]), rule_id=None, title=None,
                                reason="anomaly checks configured but the anomaly engine is not installed")]
    specs, problems = load_check_files(paths)
    engine = AnomalyEngine(specs)
    errors = [RuleError(source=e.source, rule_id=e.check_id, title=None, reason=e.reason)
              for e in [*problems, *engine.errors]]
    return engine, errors


def compile_detection(rule_paths: Sequence[Path], pipelines: Sequence[Path], *, skip_invalid: bool,
                      correlation: bool | None = None, anomaly_checks: Sequence[Path] = (),
                      generation: int = 0, correlation_max_keys: int = 100_000,
                      correlation_lateness_s: float = 0.0, regex_timeout_ms: float | None = None,
                      on_progress: Callable[[str, int], None] | None = None,
                      rules_cache: Path | None = None, field_names: str = "insensitive",
                      memo: CompileMemo | None = None) -> CompileOutcome:
    """Read and compile everything; blocking and CPU-heavy, so callers run it in a thread.

    ``regex_timeout_ms`` (``rules.regex_timeout_ms``; None: the engine's default) bounds each
    evaluation of a ``|re`` pattern RE2 cannot run. ``on_progress``: see ``service.rules.load_rules``.
    ``rules_cache`` (``rules.cache_dir``): where compiled rulesets are kept (see :mod:`service.rules_cache`).
    ``field_names`` (``rules.field_names``): ``sensitive`` makes rule field names match event keys
    spelled exactly so (the one place the setting reaches the engine and its native screen).

    ``memo``: kept across compiles (hot reloads), so only changed rule texts are compiled again
    (see ``service.rules.load_rules``)."""
    from service.rules import load_rules

    budget = {} if regex_timeout_ms is None else {"regex_timeout_ms": regex_timeout_ms}
    result = load_rules(list(rule_paths), list(pipelines), skip_invalid=True, on_progress=on_progress,
                        cache_dir=rules_cache, cased_fields=field_names == "sensitive", memo=memo, **budget)
    errors: list[RuleError] = list(result.errors)
    options = {"max_keys": correlation_max_keys, "allowed_lateness_s": correlation_lateness_s}
    corr_engine, corr_errors = _compile_correlation(result.ruleset, correlation, options)
    anomaly_engine, anomaly_errors = _compile_anomaly(list(anomaly_checks))
    errors.extend(corr_errors)
    errors.extend(anomaly_errors)
    candidate = DetectionSet(result.ruleset, corr_engine, anomaly_engine, tuple(errors), generation)
    if errors and not skip_invalid:
        return CompileOutcome(None, tuple(errors), False,
                              f"{len(errors)} rule error(s) and rules.skip_invalid is false")
    return CompileOutcome(candidate, tuple(errors), True, restored=result.restored)


def scope_name(key: ScopeKey) -> str:
    """The state store's name of a scope: ``kafka:<topic>:<partition>`` or ``local``."""
    return "local" if key is None else f"kafka:{key[0]}:{key[1]}"


def saved_clock(documents: Any) -> tuple[float, float] | None:
    """The newest (event time, wall time) pair saved beside a scope's snapshots, if any."""
    best: tuple[float, float] | None = None
    for doc in documents:
        clock = doc.get("clock") if isinstance(doc, dict) else None
        if not isinstance(clock, list) or len(clock) != 2 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in clock):
            continue
        if best is None or clock[0] > best[0]:
            best = (float(clock[0]), float(clock[1]))
    return best


def _restore(engine: Any, snapshot: Any, name: str, scope: str) -> bool:
    """Load ``snapshot`` into ``engine``, logging what the engine dropped; False if it failed."""
    try:
        warnings = engine.restore(snapshot)
    except Exception as exc:
        log.warning("cannot restore %s state; it starts empty", name,
                    extra={"scope": scope, "error": f"{type(exc).__name__}: {exc}"})
        return False
    for warning in warnings or ():
        log.warning("%s state partly dropped on restore", name, extra={"scope": scope, "detail": str(warning)})
    return True


def _carry_state(old: Any | None, new: Any | None, name: str, scope: str) -> None:
    if old is None or new is None:
        return
    try:
        snapshot = old.snapshot()
    except Exception:
        log.warning("could not carry %s state across the reload; it starts empty", name, exc_info=True)
        return
    _restore(new, snapshot, name, scope)


DETECTORS = ("correlation", "anomaly")
"""The stateful detectors, in the order of a scope's engine pair (and of their snapshots)."""


class Detector:
    """Evaluates batches of items against the current :class:`DetectionSet`.

    Stateful engines are kept per scope: one pair per Kafka partition (so a
    partition's state can move with it to another instance) and the set's own
    pair for the local inputs. With ``scope="instance"`` Kafka items use the
    local pair too, so one correlation sees every topic and partition. Each scope has its own clock, the newest event
    time passed to its engines and the wall time it was seen at, which lets
    :meth:`heartbeat` move the scope's event time on while it receives nothing.
    """

    def __init__(self, detection: DetectionSet, *, max_original_bytes: int = 16_384,
                 scope: StateScope = "partition") -> None:
        self._set = detection
        self._instance = scope == "instance"
        self._keyed = scope == "keyed"
        self._records: list[Any] = []
        """``keyed``: state records of the batch being processed (see :meth:`take_records`)."""
        self._record_format: Any = None
        """``keyed``: :mod:`service.keyed.records` (imported here, not per event nor outside keyed scope)."""
        if self._keyed:
            from service.keyed import records

            self._record_format = records
        self._progress: dict[tuple[str, int], float] = {}
        self._record_index: tuple[Any, dict[str, list[Any]], dict[str, tuple[str, ...]],
                                  dict[tuple[str, ...], tuple[Any, ...]]] | None = None
        """``keyed``: the correlations each rule feeds, the fields chained ones read, and the record
        plans per set of matched rules (for the correlation engine they were made of)."""
        self._anomaly_routes: tuple[Any, dict[Any, tuple[Any, ...]]] | None = None
        self._followers: list[Detector] = []
        self._max_original = max_original_bytes
        self._exported = CounterExport()
        self._clocks: dict[ScopeKey, tuple[float, float]] = {}
        self._scoped: dict[tuple[str, int], tuple[Any | None, Any | None]] = {}
        self._lock = threading.RLock()
        self._publish(detection)

    @property
    def current(self) -> DetectionSet:
        return self._set

    def exclusive(self) -> threading.RLock:
        """The lock every engine call holds: hold it across reading :attr:`current` and
        :meth:`process` when work prepared for one set (a screen's verdicts) must not meet another."""
        return self._lock

    @property
    def per_partition(self) -> bool:
        """False when every Kafka item shares the local scope (``state.scope: instance``)."""
        return not self._instance

    @_locked
    def swap(self, detection: DetectionSet) -> DetectionSet:
        """Install ``detection`` (state of stateful engines carried over); returns the old set.

        Holds the lock, so it waits for a batch being processed and the next one sees the new set.
        """
        old = self._set
        self._publish_state(old)  # counts of the old engines up to now
        _carry_state(old.correlation, detection.correlation, "correlation", "local")
        _carry_state(old.anomaly, detection.anomaly, "anomaly", "local")
        for key, (correlation, anomaly) in list(self._scoped.items()):
            fresh = self._new_engines(detection)
            _carry_state(correlation, fresh[0], "correlation", scope_name(key))
            _carry_state(anomaly, fresh[1], "anomaly", scope_name(key))
            self._scoped[key] = fresh
        self._set = detection
        self._baseline_all()  # carried counters were exported already
        self._publish(detection)
        for follower in self._followers:
            follower.swap(detection)
        return old

    def follow(self, other: Detector) -> None:
        """``other`` (the keyed scope's stage 2) swaps to every set this one swaps to."""
        self._followers.append(other)

    @property
    def snapshots_partitions(self) -> bool:
        """Kafka partitions have stateful engines of their own to snapshot: not in instance scope, nor
        in keyed stage 1 (its correlations' and anomaly checks' state lives in stage 2)."""
        if self._instance:
            return False
        if self._keyed:
            return False
        return self._set.stateful

    @property
    def keyed(self) -> bool:
        """``state.scope: keyed`` stage 1: Kafka events feed correlations through state records."""
        return self._keyed

    holds_records = False
    """A partition's state may hold records read but not applied yet (stage 2's reorder buffer): its
    commits stop before the oldest of them (:meth:`commit_floor`), so its saved state may be tagged
    past the committed offset (see :class:`~service.partition_state.PartitionState`)."""

    def commit_floor(self, key: tuple[str, int]) -> int | None:
        """The lowest offset of ``key`` read but not applied yet (None: every record read is applied)."""
        return None

    def take_records(self) -> tuple[list[Any], dict[tuple[str, int], float]]:
        """The state records of the batches processed since the last call and the newest event time
        per Kafka partition they covered (``keyed``; call it under :meth:`exclusive` with ``process``)."""
        records, progress = self._records, self._progress
        self._records, self._progress = [], {}
        return records, progress

    @staticmethod
    def _publish(detection: DetectionSet) -> None:
        for kind, count in detection.counts().items():
            metrics.RULES_LOADED.labels(kind).set(count)
        metrics.RULE_ERRORS.set(len(detection.errors))

    @_locked
    def process(self, items: Sequence[Item], now: float | None = None) -> list[Alert]:
        """Alerts for ``items`` in order. Synchronous on purpose: one set per batch.

        ``now`` is the wall clock of the batch (alert creation time, scope clocks).
        """
        current = self._set
        evaluate = current.ruleset.evaluate
        evaluate_decided = current.ruleset.evaluate_decided
        stateful = current.stateful
        suppressed = current.suppressed if current.correlation is not None else frozenset()
        stamp = time.time() if now is None else now
        alerts: list[Alert] = []
        latest: dict[ScopeKey, float] = {}
        scope: Any = _NO_SCOPE
        shared = self._instance
        correlation = anomaly = None
        newest = -math.inf
        emit = self._emit_records if self._keyed and current.correlation is not None else None
        emit_anomaly = self._emit_anomaly if self._keyed and current.anomaly is not None else None
        for item in items:
            event = item.event
            tick = type(item) is Tick
            try:
                decided = item.decided
                if tick:
                    matches: list[Match] = []
                elif decided is None:
                    matches = evaluate(event, item.logsource)
                else:  # the native screen decided (some of) the rules on the raw message
                    matches = evaluate_decided(event, decided[0], decided[1], item.logsource)
            except Exception:
                log.exception("rule evaluation failed; event skipped", extra={"origin": item.origin.token()})
                metrics.EVENTS_SKIPPED.labels("sigma", "error").inc()
                continue
            if not stateful:
                if matches:
                    self._alerts(matches, item, item.fallback_time if type(item) is Undecoded else item.time(), stamp,
                                 alerts)  # Undecoded.time() inlined
                continue
            key = None if shared else item.scope_key()
            if key != scope:
                if scope is not _NO_SCOPE and newest > latest.get(scope, -math.inf):
                    latest[scope] = newest
                scope = key
                newest = latest.get(key, -math.inf)
                correlation, anomaly = self._engines(key, current)
            ts = item.time()
            if ts > newest:
                newest = ts
            produced = [m for m in matches if m.rule.id not in suppressed] if suppressed and matches else matches
            try:  # inlined (once per event): a failing engine skips the event for that engine only
                if correlation is not None:
                    ref = item.origin.token() if matches else None  # evidence: only matching events
                    found = correlation.process(event, matches, ts, ref)
                    if found:
                        produced = [*produced, *found]
                elif emit is not None and matches and key is not None:
                    emit(current, item, matches, ts)
            except Exception:
                self._engine_failed("correlation")
            try:
                if emit_anomaly is not None and not tick and key is not None:
                    emit_anomaly(current, item, ts)
                elif anomaly is not None and not tick:
                    found = anomaly.process(event, ts, item.logsource, item.origin_ref)
                    if found:
                        produced = [*produced, *found]
            except Exception:
                self._engine_failed("anomaly")
            if produced:
                self._alerts(produced, item, ts, stamp, alerts)
        if scope is not _NO_SCOPE and newest > latest.get(scope, -math.inf):
            latest[scope] = newest
        clocks = self._clocks
        for key, ts in latest.items():
            known = clocks.get(key)
            if known is None or ts > known[0]:
                clocks[key] = (ts, stamp)
        if self._keyed:
            progress = self._progress
            for key, ts in latest.items():
                if key is not None and ts > progress.get(key, -math.inf):
                    progress[key] = ts
        return alerts

    def _emit_records(self, current: DetectionSet, item: Item, matches: Sequence[Match], ts: float) -> None:
        """``keyed``: one state record per correlation the matches feed (see :mod:`service.keyed.records`);
        what to copy is planned once per set of matched rules (:func:`~service.keyed.records.plan`)."""
        records = self._record_format

        index = self._record_index
        if index is None or index[0] is not current.correlation:
            by_rule: dict[str, list[Any]] = {}
            specs_all = current.correlation.specs if current.correlation is not None else ()
            for spec in specs_all:
                for slot in spec.slots:
                    if not slot.correlation and spec not in by_rule.setdefault(slot.rule_id, []):
                        by_rule[slot.rule_id].append(spec)
            index = self._record_index = (current.correlation, by_rule, records.chain_fields(specs_all), {})
        rule_ids = (matches[0].rule.id,) if len(matches) == 1 else tuple([match.rule.id for match in matches])
        plans = index[3].get(rule_ids)
        if plans is None:
            specs: list[Any] = []
            for rule_id in rule_ids:
                for spec in index[1].get(rule_id, ()):
                    if spec not in specs:
                        specs.append(spec)
            plans = tuple(records.plan(spec, rule_ids, extra=index[2].get(spec.info.id, ())) for spec in specs)
            if len(index[3]) < PLAN_CACHE:
                index[3][rule_ids] = plans
        if not plans:
            return
        where = records.origin_of(item.origin_ref)
        event = item.event
        for how in plans:
            record = None if how is None else records.build_planned(how, event, ts, where)
            if record is None:
                metrics.EVENTS_SKIPPED.labels("correlation", "missing_group_by").inc()
            else:
                self._records.append(record)

    def _emit_anomaly(self, current: DetectionSet, item: Item, ts: float) -> None:
        """``keyed``: one state record per anomaly check watching the event's log source (see
        :mod:`service.keyed.records`); the check's model lives in stage 2. What to copy is planned once
        per check (:func:`~service.keyed.records.anomaly_plan`), kept per log source."""
        records = self._record_format
        routes = self._anomaly_routes
        if routes is None or routes[0] is not current.anomaly:
            routes = self._anomaly_routes = (current.anomaly, {})
        logsource = item.logsource
        plans = routes[1].get(logsource)
        if plans is None:
            engine = current.anomaly
            plans = tuple(records.anomaly_plan(c) for c in (engine.checks.values() if engine is not None else ())
                          if logsource is None or c.rule_logsource.covers(logsource))
            if len(routes[1]) < 10_000:
                routes[1][logsource] = plans
        if not plans:
            return
        where = records.origin_of(item.origin_ref)
        event = item.event
        build = records.build_anomaly_planned
        for how in plans:
            record = build(how, event, ts, where, logsource)
            if record is not None:
                self._records.append(record)

    # -- per-scope state ----------------------------------------------------------------
    def _new_engines(self, current: DetectionSet) -> tuple[Any | None, Any | None]:
        """A new scope's engines (``keyed`` stage 1: none, its records go to stage 2)."""
        if self._keyed:
            return None, None
        return current.new_engines()

    def _engines(self, key: ScopeKey, current: DetectionSet) -> tuple[Any | None, Any | None]:
        """The engines of a Kafka partition (created empty on first use) or the local ones."""
        if key is None:
            return current.correlation, current.anomaly
        engines = self._scoped.get(key)
        if engines is None:
            engines = self._scoped[key] = self._new_engines(current)
        return engines

    def scope_clock(self, key: ScopeKey) -> tuple[float, float] | None:
        """(newest event time, wall time it was seen) of a scope, or None before its first event."""
        return self._clocks.get(key)

    @_locked
    def export_scope(self, key: ScopeKey) -> dict[str, dict[str, Any]]:
        """Snapshots of one scope's engines, by detector name (for the state store).

        ``key`` None is the local scope. A partition never seen has nothing to export.
        """
        out: dict[str, dict[str, Any]] = {}
        if key is None:
            engines: tuple[Any | None, Any | None] | None = (self._set.correlation, self._set.anomaly)
        else:
            engines = self._scoped.get(key)
        if engines is None:
            return out
        for name, engine in zip(DETECTORS, engines, strict=True):
            if engine is not None:
                try:  # a detached copy: it may be written from a thread while the engine goes on
                    out[name] = orjson.loads(orjson.dumps(engine.snapshot()))
                except Exception:
                    log.warning("cannot snapshot %s state", name, exc_info=True, extra={"scope": scope_name(key)})
        return out

    @_locked
    def import_scope(self, key: ScopeKey, snapshots: dict[str, dict[str, Any]],
                     clock: tuple[float, float] | None = None) -> None:
        """Start a scope's engines from saved snapshots (a missing or bad one starts empty).

        ``clock`` is the scope's saved (event time, wall time): with it, a scope that
        receives nothing after a restart still has its event time moved on by the heartbeat.
        """
        if key is None:
            engines: tuple[Any | None, Any | None] = (self._set.correlation, self._set.anomaly)
        else:
            engines = self._scoped[key] = self._new_engines(self._set)
        for name, engine in zip(DETECTORS, engines, strict=True):
            snapshot = snapshots.get(name)
            if engine is not None and snapshot is not None:
                _restore(engine, snapshot, name, scope_name(key))
        if clock is not None and key not in self._clocks:
            self._clocks[key] = (float(clock[0]), float(clock[1]))
        self._baseline_all()

    @_locked
    def drop_scope(self, key: tuple[str, int]) -> None:
        self._publish_state(self._set)
        self._scoped.pop(key, None)
        self._clocks.pop(key, None)

    @_locked
    def scopes(self) -> list[tuple[str, int]]:
        return list(self._scoped)

    @_locked
    def heartbeat(self, now: float, skip: Collection[ScopeKey] = ()) -> list[Alert]:
        """Let event time pass in every scope that receives nothing: silence checks, deferred windows.

        A scope's event time is extrapolated from its newest event by the wall
        time elapsed since that event arrived, never set to the wall clock itself:
        a replay of old data or a skewed source clock must not make its own events
        late, and a partition that went quiet still moves on even when others
        flow. ``skip`` lists scopes known to have unread input (a lagging Kafka
        partition): moving their time on would make that input late. Called by
        the service's timer, between batches like everything else; also
        publishes the stateful engines' gauges and skip counters.
        """
        current = self._set
        alerts: list[Alert] = []
        if current.stateful:
            for key, (ts, wall) in list(self._clocks.items()):
                if key in skip:
                    continue
                engines = self._engines(key, current) if key is None or key in self._scoped else None
                if engines is None:
                    continue
                event_now = ts + max(0.0, now - wall)
                origin = Origin("timer", key=scope_name(key))
                for name, engine in zip(DETECTORS, engines, strict=True):
                    if engine is None:
                        continue
                    for match in self._stateful(name, engine.advance, event_now):
                        alerts.append(build_alert(match, {}, origin, event_time=_alert_time(match, event_now),
                                                  now=now, max_original_bytes=self._max_original))
        self._publish_state(current)
        return alerts

    def _all_engines(self, current: DetectionSet) -> list[tuple[Any | None, Any | None]]:
        return [(current.correlation, current.anomaly), *self._scoped.values()]

    def _baseline_all(self) -> None:
        for engines in self._all_engines(self._set):
            for name, engine in zip(DETECTORS, engines, strict=True):
                if engine is not None:
                    self._exported.baseline(name, engine)

    def _publish_state(self, current: DetectionSet) -> None:
        """Gauges and skip counters summed over the local and every partition's engines."""
        pairs = self._all_engines(current)
        correlations = [c for c, _ in pairs if c is not None]
        anomalies = [a for _, a in pairs if a is not None]
        self._exported.publish("sigma", [current.ruleset])  # regex time-outs
        self._exported.publish("correlation", correlations)
        self._exported.publish("anomaly", anomalies)
        if correlations:
            metrics.STATE_KEYS.labels("correlation").set(sum(c.active_keys() for c in correlations
                                                             if callable(getattr(c, "active_keys", None))))
        if anomalies:
            learning: dict[str, bool] = {}
            for engine in anomalies:
                for check, flag in engine.learning().items():
                    learning[check] = learning.get(check, False) or flag
            for check, flag in learning.items():
                metrics.ANOMALY_LEARNING.labels(check).set(1 if flag else 0)
            metrics.STATE_KEYS.labels("anomaly").set(sum(sum(a.key_counts().values()) for a in anomalies))

    def _alerts(self, matches: Sequence[Match], item: Item, ts: float, now: float, out: list[Alert]) -> None:
        """:meth:`_alert` of each match into ``out`` (the event's origin and its token are read once
        for all of them)."""
        origin = item.origin
        event = item.event
        logsource = item.logsource or NO_LOGSOURCE
        cap = self._max_original
        token = None
        if type(ts) is not float or type(now) is not float:  # as build_alert takes them (a test file's int ts)
            ts, now = float(ts), float(now)
        for match in matches:
            if match.rule.kind == "correlation":
                out.append(self._alert(match, item, ts, now))
            elif match.about is None and not match.details:  # _alert's answer: at the event's time, about it
                if token is None:
                    token = origin.token()
                out.append(event_alert(match, event, origin, token, ts, now, logsource, cap))
            else:  # an anomaly check's (its own key, maybe about an earlier event)
                out.append(build_alert(match, event, origin, event_time=ts, now=now, logsource=logsource,
                                       max_original_bytes=cap))

    def _alert(self, match: Match, item: Item, ts: float, now: float) -> Alert:
        event_time = _alert_time(match, ts)
        # a deferred correlation window closed by a later, unrelated event: that event is not evidence
        event = item.event if event_time == ts or match.rule.kind != "correlation" else {}
        return build_alert(match, event, item.origin, event_time=event_time, now=now, logsource=item.logsource,
                           max_original_bytes=self._max_original)

    @staticmethod
    def _engine_failed(name: str) -> None:
        log.exception("%s engine failed on an event; it is skipped for this engine", name)
        metrics.EVENTS_SKIPPED.labels(name, "error").inc()

    @staticmethod
    def _stateful(name: str, fn: Any, *args: Any) -> list[Match]:
        try:
            return list(fn(*args))
        except Exception:
            Detector._engine_failed(name)
            return []


def _alert_time(match: Match, default: float) -> float:
    """A correlation alert happens at its window end (the firing event, or the deferred window's end)."""
    if match.rule.kind == "correlation" and match.details:
        end = match.details.get("window_end")
        if isinstance(end, int | float) and not isinstance(end, bool) and math.isfinite(end):
            return float(end)
    return default
