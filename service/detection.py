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


def _compile_anomaly(paths: Sequence[Path]) -> tuple[Any | None, list[RuleError]]:
    if not paths:
        return None, []
    try:
        from detectors.anomaly import AnomalyEngine, parse_checks
    except ImportError:
        return None, [RuleError(source=str(paths[0]), rule_id=None, title=None,
                                reason="anomaly checks configured but the anomaly engine is not installed")]
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
        errors.extend(problems)
    return AnomalyEngine(specs), errors


def compile_detection(rule_paths: Sequence[Path], pipelines: Sequence[Path], *, skip_invalid: bool,
                      correlation: bool | None = None, anomaly_checks: Sequence[Path] = (),
                      generation: int = 0) -> CompileOutcome:
    """Read and compile everything; blocking and CPU-heavy, so callers run it in a thread."""
    from service.rules import load_rules

    result = load_rules(list(rule_paths), list(pipelines), skip_invalid=True)
    errors: list[RuleError] = list(result.errors)
    corr_engine, corr_errors = _compile_correlation(result.ruleset, correlation)
    anomaly_engine, anomaly_errors = _compile_anomaly(list(anomaly_checks))
    errors.extend(corr_errors)
    errors.extend(anomaly_errors)
    candidate = DetectionSet(result.ruleset, corr_engine, anomaly_engine, tuple(errors), generation)
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
        correlation = current.correlation
        anomaly = current.anomaly
        suppressed = current.suppressed if correlation is not None else frozenset()
        stamp = time.time() if now is None else now
        alerts: list[Alert] = []
        latest: float | None = None
        last_origin: Origin | None = None
        for item in items:
            event = item.event
            try:
                matches: list[Match] = evaluate(event, item.logsource)
            except Exception:
                log.exception("rule evaluation failed; event skipped", extra={"origin": item.origin.token()})
                metrics.EVENTS_SKIPPED.labels("sigma", "error").inc()
                continue
            if correlation is None and anomaly is None:
                if matches:
                    ts = item.time()
                    for match in matches:
                        alerts.append(self._alert(match, item, ts, stamp))
                continue
            ts = item.time()
            latest = ts if latest is None or ts > latest else latest
            last_origin = item.origin
            produced = [m for m in matches if m.rule.id not in suppressed] if suppressed else list(matches)
            if correlation is not None:
                ref = item.origin.token() if matches else None  # evidence: only matching events contribute
                produced.extend(self._stateful("correlation", correlation.process, event, matches, ts, ref))
            if anomaly is not None:
                produced.extend(self._stateful("anomaly", anomaly.process, event, ts, item.logsource))
            for match in produced:
                alerts.append(self._alert(match, item, ts, stamp))
        if latest is not None and (self._clock_ts is None or latest > self._clock_ts):
            self._clock_ts, self._clock_wall = latest, stamp
        if anomaly is not None and latest is not None and last_origin is not None:
            for match in self._stateful("anomaly", anomaly.advance, latest):
                alerts.append(build_alert(match, {}, last_origin, event_time=latest, now=stamp,
                                          max_original_bytes=self._max_original))
        return alerts

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
        if self._clock_ts is None or (current.correlation is None and current.anomaly is None):
            return []
        event_now = self._clock_ts + max(0.0, now - self._clock_wall)
        origin = Origin("timer", key=repr(event_now))
        alerts: list[Alert] = []
        for name, engine in (("correlation", current.correlation), ("anomaly", current.anomaly)):
            if engine is None:
                continue
            for match in self._stateful(name, engine.advance, event_now):
                alerts.append(build_alert(match, {}, origin, event_time=event_now, now=now,
                                          max_original_bytes=self._max_original))
        return alerts

    def _publish_state(self, current: DetectionSet) -> None:
        correlation, anomaly = current.correlation, current.anomaly
        if correlation is not None:
            self._publish_counters("correlation", getattr(correlation, "counters", {}))
            keys = getattr(correlation, "active_keys", None)
            if callable(keys):
                metrics.STATE_KEYS.labels("correlation").set(keys())
        if anomaly is not None:
            self._publish_counters("anomaly", getattr(anomaly, "counters", {}))
            for check, learning in anomaly.learning().items():
                metrics.ANOMALY_LEARNING.labels(check).set(1 if learning else 0)
            counts = getattr(anomaly, "key_counts", None)
            if callable(counts):
                metrics.STATE_KEYS.labels("anomaly").set(sum(counts().values()))

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
    def _stateful(name: str, fn: Any, *args: Any) -> list[Match]:
        try:
            return list(fn(*args))
        except Exception:
            log.exception("%s engine failed on an event; it is skipped for this engine", name)
            metrics.EVENTS_SKIPPED.labels(name, "error").inc()
            return []
