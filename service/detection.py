"""The detector stage: Sigma ruleset, correlation and anomaly engines, swapped atomically on reload.

:class:`Detector` holds one immutable :class:`DetectionSet`. ``process`` reads
the current set once at the start of a batch and runs synchronously to the end,
so a swap (``Detector.swap``, called from the same event loop) can only happen
between batches: no event is evaluated by two rulesets or dropped by a swap.

Correlation and anomaly engines are optional: they are imported defensively so
the Sigma path works alone, and their state is carried from the old engines to
the new ones on reload (``snapshot``/``restore``) when the engines allow it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.alert import Alert, build_alert
from detectors.model import Match, Origin
from detectors.sigma import RuleError
from service import metrics
from service.sources.base import Item

log = logging.getLogger(__name__)

ScopeKey = tuple[str, int] | None
"""A Kafka (topic, partition) whose stateful engines are kept apart; ``None``: the local inputs."""
_NO_SCOPE = object()


@dataclass(frozen=True)
class DetectionSet:
    """One compiled, immutable generation of everything that detects."""

    ruleset: Any
    correlation: Any | None = None
    anomaly: Any | None = None
    errors: tuple[RuleError, ...] = ()
    generation: int = 0
    loaded_at: float = field(default_factory=time.time)
    anomaly_specs: tuple[Any, ...] = ()

    @property
    def stateful(self) -> bool:
        return self.correlation is not None or self.anomaly is not None

    def new_engines(self) -> tuple[Any | None, Any | None]:
        """Fresh, empty engines of this generation (one pair per Kafka partition)."""
        correlation = anomaly = None
        if self.correlation is not None:
            from detectors.correlation import compile_correlations

            correlation = compile_correlations(self.ruleset)[0]
        if self.anomaly is not None:
            from detectors.anomaly import AnomalyEngine

            anomaly = AnomalyEngine(list(self.anomaly_specs))
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


def _compile_correlation(ruleset: Any, enabled: bool | None) -> tuple[Any | None, list[RuleError]]:
    if enabled is False or (enabled is None and not getattr(ruleset, "correlations", ())):
        return None, []
    try:
        from detectors.correlation import compile_correlations
    except ImportError:
        if getattr(ruleset, "correlations", ()):
            log.warning("correlation rules present but the correlation engine is not installed")
        return None, []
    engine, errors = compile_correlations(ruleset)
    return engine, list(errors)


def _compile_anomaly(paths: Sequence[Path]) -> tuple[Any | None, list[RuleError], tuple[Any, ...]]:
    if not paths:
        return None, [], ()
    try:
        from detectors.anomaly import AnomalyEngine, parse_checks
    except ImportError:
        return None, [RuleError(source=str(paths[0]), rule_id=None, title=None,
                                reason="anomaly checks configured but the anomaly engine is not installed")], ()
    specs: list[Any] = []
    errors: list[RuleError] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(RuleError(source=str(path), rule_id=None, title=None, reason=f"cannot read: {exc}"))
            continue
        found, problems = parse_checks(text, source=str(path))
        specs.extend(found)
        errors.extend(RuleError(source=e.source, rule_id=getattr(e, "check_id", None), title=None, reason=e.reason)
                      for e in problems)
    return AnomalyEngine(specs), errors, tuple(specs)


def compile_detection(rule_paths: Sequence[Path], pipelines: Sequence[Path], *, skip_invalid: bool,
                      correlation: bool | None = None, anomaly_checks: Sequence[Path] = (),
                      generation: int = 0) -> CompileOutcome:
    """Read and compile everything; blocking and CPU-heavy, so callers run it in a thread."""
    from service.rules import load_rules

    result = load_rules(list(rule_paths), list(pipelines), skip_invalid=True)
    errors: list[RuleError] = list(result.errors)
    corr_engine, corr_errors = _compile_correlation(result.ruleset, correlation)
    anomaly_engine, anomaly_errors, specs = _compile_anomaly(list(anomaly_checks))
    errors.extend(corr_errors)
    errors.extend(anomaly_errors)
    candidate = DetectionSet(result.ruleset, corr_engine, anomaly_engine, tuple(errors), generation,
                             anomaly_specs=specs)
    if errors and not skip_invalid:
        return CompileOutcome(None, tuple(errors), False,
                              f"{len(errors)} rule error(s) and rules.skip_invalid is false")
    return CompileOutcome(candidate, tuple(errors), True)


def _carry_state(old: Any | None, new: Any | None, name: str) -> None:
    if old is None or new is None:
        return
    try:
        new.restore(old.snapshot())
    except Exception:
        log.warning("could not carry %s state across the reload; it starts empty", name, exc_info=True)


class Detector:
    """Evaluates batches of items against the current :class:`DetectionSet`."""

    def __init__(self, detection: DetectionSet, *, max_original_bytes: int = 16_384) -> None:
        self._set = detection
        self._max_original = max_original_bytes
        self._counters: dict[str, dict[str, int]] = {}
        self._clock_ts: float | None = None
        self._clock_wall = 0.0
        self._scoped: dict[tuple[str, int], tuple[Any | None, Any | None]] = {}
        self._publish(detection)

    @property
    def current(self) -> DetectionSet:
        return self._set

    def swap(self, detection: DetectionSet) -> DetectionSet:
        """Install ``detection`` (state of stateful engines carried over); returns the old set.

        Must be called from the event loop that runs :meth:`process`, never from a thread.
        """
        old = self._set
        _carry_state(old.correlation, detection.correlation, "correlation")
        _carry_state(old.anomaly, detection.anomaly, "anomaly")
        for key, (correlation, anomaly) in list(self._scoped.items()):
            fresh = detection.new_engines()
            _carry_state(correlation, fresh[0], "correlation")
            _carry_state(anomaly, fresh[1], "anomaly")
            self._scoped[key] = fresh
        self._set = detection
        self._counters.clear()  # the new engines count from zero
        self._publish(detection)
        return old

    @staticmethod
    def _publish(detection: DetectionSet) -> None:
        for kind, count in detection.counts().items():
            metrics.RULES_LOADED.labels(kind).set(count)
        metrics.RULE_ERRORS.set(len(detection.errors))

    def process(self, items: Sequence[Item], now: float | None = None) -> list[Alert]:
        """Alerts for ``items`` in order. Synchronous on purpose: one set per batch."""
        current = self._set
        evaluate = current.ruleset.evaluate
        stateful = current.stateful
        suppressed = current.suppressed if current.correlation is not None else frozenset()
        stamp = time.time() if now is None else now
        alerts: list[Alert] = []
        latest: dict[ScopeKey, tuple[float, Item]] = {}
        scope: ScopeKey | object = _NO_SCOPE
        correlation = anomaly = None
        for item in items:
            event = item.event
            try:
                matches: list[Match] = evaluate(event, item.logsource)
            except Exception:
                log.exception("rule evaluation failed; event skipped", extra={"origin": item.origin.token()})
                metrics.EVENTS_SKIPPED.labels("sigma", "error").inc()
                continue
            if not stateful:
                if matches:
                    ts = item.time()
                    for match in matches:
                        alerts.append(self._alert(match, item, ts, stamp))
                continue
            key = item.scope_key()
            if key != scope:
                scope = key
                correlation, anomaly = self._engines(key, current)
            ts = item.time()
            seen = latest.get(key)
            if seen is None or ts >= seen[0]:
                latest[key] = (ts, item)
            produced = [m for m in matches if m.rule.id not in suppressed] if suppressed and matches else matches
            try:  # inlined (once per event): a failing engine skips the event for that engine only
                if correlation is not None:
                    ref = item.origin.token() if matches else None  # evidence: only matching events
                    found = correlation.process(event, matches, ts, ref)
                    if found:
                        produced = [*produced, *found]
            except Exception:
                self._engine_failed("correlation")
            try:
                if anomaly is not None:
                    found = anomaly.process(event, ts, item.logsource)
                    if found:
                        produced = [*produced, *found]
            except Exception:
                self._engine_failed("anomaly")
            for match in produced:
                alerts.append(self._alert(match, item, ts, stamp))
        for key, (ts, item) in latest.items():
            if self._clock_ts is None or ts > self._clock_ts:
                self._clock_ts, self._clock_wall = ts, stamp
            anomaly = self._engines(key, current)[1]
            if anomaly is not None:
                for match in self._stateful("anomaly", anomaly.advance, ts):
                    alerts.append(build_alert(match, {}, item.origin, event_time=ts, now=stamp,
                                              max_original_bytes=self._max_original))
        return alerts

    # -- per-partition state ------------------------------------------------------------
    def _engines(self, key: ScopeKey, current: DetectionSet) -> tuple[Any | None, Any | None]:
        """The engines of a Kafka partition (created empty on first use) or the local ones."""
        if key is None:
            return current.correlation, current.anomaly
        engines = self._scoped.get(key)
        if engines is None:
            engines = self._scoped[key] = current.new_engines()
        return engines

    def export_scope(self, key: tuple[str, int]) -> dict[str, dict[str, Any]]:
        """Snapshots of one partition's engines, by detector name (for the state store)."""
        out: dict[str, dict[str, Any]] = {}
        engines = self._scoped.get(key)
        if engines is None:
            return out
        for name, engine in zip(("correlation", "anomaly"), engines, strict=True):
            if engine is not None:
                try:
                    out[name] = engine.snapshot()
                except Exception:
                    log.warning("cannot snapshot %s state", name, exc_info=True, extra={"scope": key})
        return out

    def import_scope(self, key: tuple[str, int], snapshots: dict[str, dict[str, Any]]) -> None:
        """Start a partition's engines from saved snapshots (a missing or bad one starts empty)."""
        engines = self._scoped[key] = self._set.new_engines()
        for name, engine in zip(("correlation", "anomaly"), engines, strict=True):
            snapshot = snapshots.get(name)
            if engine is not None and snapshot is not None:
                try:
                    engine.restore(snapshot)
                except Exception:
                    log.warning("cannot restore %s state; it starts empty", name, exc_info=True,
                                extra={"scope": key})

    def drop_scope(self, key: tuple[str, int]) -> None:
        self._scoped.pop(key, None)

    def scopes(self) -> list[tuple[str, int]]:
        return list(self._scoped)

    def heartbeat(self, now: float) -> list[Alert]:
        """Let event time pass while no events arrive: decides silence checks and deferred windows.

        Event time is extrapolated from the newest event seen by the wall time
        elapsed since, never set to the wall clock itself: a replay of old data
        or a skewed source clock must not make its own events late. Called by
        the service's timer, between batches like everything else; also
        publishes the stateful engines' gauges and skip counters.
        """
        current = self._set
        self._publish_state(current)
        if self._clock_ts is None or not current.stateful:
            return []
        event_now = self._clock_ts + max(0.0, now - self._clock_wall)
        origin = Origin("timer", key=repr(event_now))
        alerts: list[Alert] = []
        for engines in [(current.correlation, current.anomaly), *self._scoped.values()]:
            for name, engine in zip(("correlation", "anomaly"), engines, strict=True):
                if engine is None:
                    continue
                for match in self._stateful(name, engine.advance, event_now):
                    alerts.append(build_alert(match, {}, origin, event_time=event_now, now=now,
                                              max_original_bytes=self._max_original))
        return alerts

    def _publish_state(self, current: DetectionSet) -> None:
        """Gauges and skip counters summed over the local and every partition's engines."""
        pairs = [(current.correlation, current.anomaly), *self._scoped.values()]
        correlations = [c for c, _ in pairs if c is not None]
        anomalies = [a for _, a in pairs if a is not None]
        if correlations:
            self._publish_counters("correlation", _summed(getattr(c, "counters", {}) for c in correlations))
            metrics.STATE_KEYS.labels("correlation").set(sum(c.active_keys() for c in correlations
                                                             if callable(getattr(c, "active_keys", None))))
        if anomalies:
            self._publish_counters("anomaly", _summed(a.counters for a in anomalies))
            learning: dict[str, bool] = {}
            for engine in anomalies:
                for check, flag in engine.learning().items():
                    learning[check] = learning.get(check, False) or flag
            for check, flag in learning.items():
                metrics.ANOMALY_LEARNING.labels(check).set(1 if flag else 0)
            metrics.STATE_KEYS.labels("anomaly").set(sum(sum(a.key_counts().values()) for a in anomalies))

    def _publish_counters(self, detector: str, counters: dict[str, int]) -> None:
        """Engines keep running totals; the Prometheus counters get the increase since last time."""
        seen = self._counters.setdefault(detector, {})
        for reason, value in counters.items():
            if reason == "evictions":
                delta_target = metrics.STATE_EVICTIONS.labels(detector)
            else:
                delta_target = metrics.EVENTS_SKIPPED.labels(detector, reason)
            delta = value - seen.get(reason, 0)
            if delta > 0:
                delta_target.inc(delta)
            seen[reason] = value

    def _alert(self, match: Match, item: Item, ts: float, now: float) -> Alert:
        return build_alert(match, item.event, item.origin, event_time=ts, now=now, logsource=item.logsource,
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
            log.exception("%s engine failed on an event; it is skipped for this engine", name)
            metrics.EVENTS_SKIPPED.labels(name, "error").inc()
            return []


def _summed(counters: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counters:
        for name, value in one.items():
            total[name] = total.get(name, 0) + value
    return total
