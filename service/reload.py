"""Hot reload of the detection set: on an API call, on SIGHUP and when rule files change.

A reload compiles the candidate in a worker thread beside the running set and
swaps it in under the detector's lock, between batches (see ``service.detection``).
A candidate with errors is rejected as a whole unless ``rules.skip_invalid``.
Reloads are serialised; a trigger arriving during a reload runs after it.
:meth:`Reloader.reload` never raises; a SIGHUP reload's task is kept until it
ends, and :meth:`Reloader.watch` runs under the service's supervisor.
Rule directories are watched by polling a signature of (path, mtime, size): it
needs no inotify and works on network and container-mounted volumes alike.
The reloader keeps a :class:`~detectors.sigma.memo.CompileMemo`: a reload parses and
compiles only the rule files whose text changed since the last compile (a changed
pipeline, filter or option compiles them all), with the result of a full compile.

When the service was started from a config file, a reload also re-reads that
file and hands its ``alerting`` section (routes, receivers, suppression,
grouping) to the alert router, so routing changes roll out with the rules. An
invalid config file rejects the reload as a whole. Other sections (inputs, rule
paths, API) need a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detectors.model import RuleInfo
from detectors.sigma import RuleError
from detectors.sigma.memo import CompileMemo
from service import metrics
from service.alerting.config import AlertingSettings
from service.config import AnomalySettings, ConfigError, CorrelationSettings, RulesSettings, Settings
from service.detection import CompileOutcome, Detector, compile_detection
from service.logs import redact
from service.pipeline import tune_gc
from service.waits import stopped_within

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadResult:
    result: str
    """``ok``, ``rejected`` (errors, old set kept) or ``failed`` (exception, old set kept)."""
    trigger: str
    generation: int
    rules: dict[str, int]
    errors: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"result": self.result, "trigger": self.trigger, "generation": self.generation,
                "rules": self.rules, "errors": self.errors, "message": self.message,
                "duration_s": round(self.duration_s, 3)}


def error_dicts(errors: Sequence[Any], limit: int = 200) -> list[dict[str, Any]]:
    return [{"source": e.source, "rule_id": e.rule_id, "title": e.title, "reason": e.reason}
            | ({"other_source": e.other_source} if getattr(e, "other_source", None) else {})
            for e in list(errors)[:limit]]


LOGGED_ERRORS = 50
"""Rule errors logged one per line for a reload; the rest are counted in one more line."""


def blame_new_files(errors: Sequence[RuleError], previous: Sequence[RuleInfo]) -> list[RuleError]:
    """``errors`` with each duplicate rule id blamed on the file that brought it in.

    The compiler reads files in path order and reports the second one it meets; when that is the
    file the running set already took the rule from, the culprit is the other (newly added) file.
    """
    before = {rule.id: rule.source for rule in previous}
    fixed: list[RuleError] = []
    for error in errors:
        other = error.other_source
        if (other is not None and error.rule_id is not None and other != error.source
                and before.get(error.rule_id) == error.source):
            error = RuleError(other, error.rule_id, error.title,
                              f"duplicate rule id {error.rule_id} (already defined in {error.source})", error.source)
        fixed.append(error)
    return fixed


def log_rule_errors(errors: Sequence[RuleError], trigger: str) -> None:
    """One warning per rule error (file, rule id, reason), the first :data:`LOGGED_ERRORS` of them."""
    for error in errors[:LOGGED_ERRORS]:
        log.warning("rule error", extra={"trigger": trigger, "source": error.source, "rule_id": error.rule_id,
                                         "reason": error.reason})
    if len(errors) > LOGGED_ERRORS:
        log.warning("more rule errors not logged", extra={"trigger": trigger,
                                                          "more": len(errors) - LOGGED_ERRORS})


def tree_signature(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime_ns, size) of every file below ``paths``; changes when any file changes."""
    entries: list[tuple[str, int, int]] = []
    for root in paths:
        root = Path(root)
        try:
            if root.is_file():
                st = root.stat()
                entries.append((str(root), st.st_mtime_ns, st.st_size))
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    if name.startswith("."):
                        continue
                    full = os.path.join(dirpath, name)
                    try:
                        st = os.stat(full)
                    except OSError:
                        continue
                    entries.append((full, st.st_mtime_ns, st.st_size))
        except OSError:
            entries.append((str(root), -1, -1))
    entries.sort()
    return tuple(entries)


def compile_configured(rules: RulesSettings, correlation: CorrelationSettings, anomaly: AnomalySettings,
                       generation: int, on_progress: Callable[[str, int], None] | None = None,
                       memo: CompileMemo | None = None) -> CompileOutcome:
    """Compile the detection set the settings describe (blocking; run it in a thread). With ``memo``
    (the same one from the start on), a reload parses and compiles only the rule files that changed."""
    return compile_detection(rules.resolved_paths(), rules.pipelines, skip_invalid=rules.skip_invalid,
                             correlation=correlation.enabled, anomaly_checks=anomaly.checks,
                             generation=generation, correlation_max_keys=correlation.max_keys,
                             correlation_lateness_s=correlation.allowed_lateness,
                             regex_timeout_ms=rules.regex_timeout_ms, on_progress=on_progress,
                             rules_cache=rules.cache_dir, field_names=rules.field_names, memo=memo)


class Reloader:
    """Builds new detection sets and swaps them into ``detector``."""

    def __init__(self, detector: Detector, rules: RulesSettings, correlation: CorrelationSettings,
                 anomaly: AnomalySettings, *, config_path: Path | None = None,
                 settings_loader: Callable[[], Settings] | None = None,
                 apply_alerting: Callable[[AlertingSettings], None] | None = None,
                 memo: CompileMemo | None = None) -> None:
        self._detector = detector
        self._rules = rules
        self._correlation = correlation
        self._anomaly = anomaly
        self._config_path = config_path
        self._settings_loader = settings_loader
        self._apply_alerting = apply_alerting
        self.memo = memo if memo is not None else CompileMemo()
        """What the last compile made of each rule text: a reload compiles only the changed ones
        (pass the memo the initial set was compiled with, so the first reload is one too)."""
        self._lock = asyncio.Lock()
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self.last: ReloadResult | None = None
        self._pending: set[asyncio.Task[ReloadResult]] = set()
        self.on_result: Callable[[ReloadResult], None] | None = None
        """Told every result (the audit trail records the file-watch and SIGHUP ones)."""

    def watched_paths(self) -> list[Path]:
        config = [self._config_path] if self._config_path is not None else []
        return [*self._rules.resolved_paths(), *self._rules.pipelines, *self._anomaly.checks, *config]

    def compile(self, generation: int) -> CompileOutcome:
        return compile_configured(self._rules, self._correlation, self._anomaly, generation, memo=self.memo)

    async def reload(self, trigger: str) -> ReloadResult:
        """Compile and, if acceptable, swap in a new set. Never raises; the old set stays on failure."""
        async with self._lock:
            started = time.monotonic()
            metrics.LAST_RELOAD.set(time.time())
            generation = self._detector.current.generation + 1
            signature = await asyncio.to_thread(tree_signature, self.watched_paths())
            alerting: AlertingSettings | None = None
            if self._settings_loader is not None:
                try:
                    alerting = (await asyncio.to_thread(self._settings_loader)).alerting
                except ConfigError as exc:
                    self._signature = signature
                    log.warning("reload rejected: the config file is invalid",
                                extra={"trigger": trigger, "error": redact(str(exc))})
                    return self._finish(ReloadResult("rejected", trigger, self._detector.current.generation,
                                                     self._detector.current.counts(), message=redact(str(exc)),
                                                     duration_s=time.monotonic() - started))
            try:
                outcome = await asyncio.to_thread(self.compile, generation)
            except Exception as exc:
                log.exception("rule reload failed", extra={"trigger": trigger})
                return self._finish(ReloadResult("failed", trigger, self._detector.current.generation,
                                                 self._detector.current.counts(), message=redact(str(exc)),
                                                 duration_s=time.monotonic() - started))
            errors = blame_new_files(outcome.errors, self._detector.current.ruleset.rules)
            if not outcome.accepted or outcome.detection is None:
                self._signature = signature  # do not retry the same broken files on every poll
                metrics.RULE_ERRORS.set(len(errors))
                log.warning("rule reload rejected; the previous ruleset stays active",
                            extra={"trigger": trigger, "errors": len(errors), "reason": outcome.reason})
                log_rule_errors(errors, trigger)
                return self._finish(ReloadResult("rejected", trigger, self._detector.current.generation,
                                                 self._detector.current.counts(), error_dicts(errors),
                                                 outcome.reason, time.monotonic() - started))
            await asyncio.to_thread(self._detector.swap, outcome.detection)  # waits for a batch in progress
            if alerting is not None and self._apply_alerting is not None:
                try:
                    self._apply_alerting(alerting)
                except Exception as exc:  # the rules are in; routing keeps its previous settings
                    log.exception("alerting settings not applied; the previous routing stays",
                                  extra={"trigger": trigger})
                    self._signature = signature
                    return self._finish(ReloadResult("failed", trigger, generation, outcome.detection.counts(),
                                                     error_dicts(outcome.errors),
                                                     f"rules reloaded, alerting settings not applied: {exc}",
                                                     time.monotonic() - started))
            tune_gc()
            self._signature = signature
            counts = outcome.detection.counts()
            log.info("ruleset reloaded", extra={"trigger": trigger, "generation": generation, "rules": counts,
                                                "errors": len(errors)})
            log_rule_errors(errors, trigger)
            return self._finish(ReloadResult("ok", trigger, generation, counts, error_dicts(errors),
                                             duration_s=time.monotonic() - started))

    def _finish(self, result: ReloadResult) -> ReloadResult:
        metrics.RELOADS.labels(result.result).inc()
        metrics.LAST_RELOAD_SUCCESS.set(1 if result.result == "ok" else 0)
        self.last = result
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:
                log.exception("reload result hook failed")
        return result

    def note_loaded(self) -> None:
        """Record the signature of the files the initial set was built from; that load succeeded."""
        self._signature = tree_signature(self.watched_paths())
        metrics.LAST_RELOAD_SUCCESS.set(1)

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Reload on SIGHUP (main thread only); returns whether the handler is installed."""
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: self._keep(loop.create_task(self.reload("sighup"))))
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        return True

    def _keep(self, task: asyncio.Task[ReloadResult]) -> None:
        """Hold a signal-triggered reload until it ends; log it if it raised after all."""
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[ReloadResult]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reload task failed", exc_info=task.exception())

    async def watch(self, stop: asyncio.Event) -> None:
        """Poll the rule files until ``stop`` is set; reload when their signature changes."""
        interval = self._rules.watch_interval_s
        if self._signature is None:
            self._signature = await asyncio.to_thread(tree_signature, self.watched_paths())
        while not await stopped_within(stop, interval):
            try:
                current = await asyncio.to_thread(tree_signature, self.watched_paths())
            except Exception:
                log.exception("cannot scan rule directories")
                continue
            if current != self._signature and not self._lock.locked():
                # Let writers finish: reload once the tree has been stable for one more interval.
                await asyncio.sleep(min(interval, 0.5))
                again = await asyncio.to_thread(tree_signature, self.watched_paths())
                if again == current:
                    await self.reload("watch")
