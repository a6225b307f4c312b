"""The alert router: suppression, silences, routing and grouping in front of the sinks.

``submit`` is the durability boundary of the pipeline: it returns once every
alert is spooled (fsynced per the spool policy) for every durable sink, or
delivered for the non-durable ones, and raises otherwise, so the runtime does
not commit the Kafka offsets that produced the batch.

Decisions (pure, in memory) are separated from I/O: :meth:`decide` turns
alerts into record documents and page records; ``submit`` spools them. The
clock is injectable so tests drive windows and groups without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from detectors.alert import Alert, iso_time
from detectors.model import LEVELS, level_rank
from detectors.redaction import secret_name
from service import metrics
from service.errors import RetriableError
from service.fileperms import private_dir, private_open
from service.redaction import Redaction, RedactionSettings
from service.supervisor import Supervisor

from .config import AlertingSettings
from .grouping import Grouper
from .routes import RouteTable, TokenBucket
from .silences import Silences
from .sinks import RECEIVERS, SINKS, Sink, SinkContext
from .sinks.settings import SinkSettings
from .spool import SpoolError, fsync_fd
from .store import AlertStore
from .suppression import Suppressor
from .worker import SinkWorker

log = logging.getLogger(__name__)
TICK_S = 1.0


class RouterError(RetriableError):
    """``submit`` could not durably accept a batch. Retriable: do not commit offsets."""


@dataclass(slots=True)
class Decision:
    """What one batch becomes: documents for every record sink (redacted, and raw only when a sink
    opted out of redaction), pages per receiver (redacted per the receiver's setting)."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    pages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    raw_documents: list[dict[str, Any]] | None = None


class AlertRouter:
    """Owns the alert store, the silences and one worker per sink and receiver.

    The constructor only stores configuration; :meth:`start` opens the store,
    loads silences and page groups, builds and starts the sinks; :meth:`stop`
    undoes it in reverse order. Both are idempotent."""

    def __init__(self, settings: AlertingSettings, data_dir: Path, *,
                 clock: Callable[[], float] = time.time, redaction: Redaction | None = None) -> None:
        self.settings = settings
        self.redaction = redaction if redaction is not None else Redaction(RedactionSettings(), data_dir)
        """Secrets in documents and pages become markers after detection; :meth:`start` loads the key."""
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "alerting"
        self.clock = clock
        self.supervisor = Supervisor()
        """Runs every background task of the router: the sink loops, the ticker, reload jobs."""
        self.store = AlertStore(self.root / "alerts.db", clock=clock)
        """Opened by :meth:`start`."""
        self.silences = Silences(self.store)
        """Loaded from the store by :meth:`start`."""
        self.store.on_recovered = self._resave_silences
        self._context = SinkContext(store=self.store)
        self.workers: dict[str, SinkWorker] = {}
        self._record_workers: list[SinkWorker] = []
        self._page_workers: dict[str, SinkWorker] = {}
        self._apply(settings)
        self._ticker: asyncio.Task[None] | None = None
        self._next_prune = 0.0
        self._started = False
        self._lock = asyncio.Lock()

    # --- configuration -------------------------------------------------------
    def _apply(self, settings: AlertingSettings) -> None:
        now = self.clock()
        self.settings = settings
        self.suppressor = Suppressor(settings.suppression)
        self.routes = RouteTable(settings.routes)
        self.grouper = Grouper(settings.grouping, settings.base_url, redact=self._redact_page,
                               redact_values=self._redact_group_values)
        enabled = self.redaction.enabled
        self._raw_sinks = frozenset(c.name for c in [*settings.sinks, *settings.receivers]
                                    if not (enabled and c.redact))
        """Sinks and receivers that get raw values (redaction off, or ``redact: false``)."""
        self._receivers = {r.name: r for r in settings.receivers}
        self._min_rank = {r.name: level_rank(r.min_level) for r in settings.receivers}
        self._buckets = {r.name: TokenBucket(r.rate_limit_per_min, r.burst, now)
                         for r in settings.receivers if r.rate_limit_per_min}

    def _make_worker(self, name: str, sink: Sink, cfg: SinkSettings) -> SinkWorker:
        return SinkWorker(sink, durable=cfg.durable, batch_size=cfg.batch_size, retry=cfg.retry,
                          spool_dir=self.root / "spool" / name, spool=self.settings.spool,
                          dead_letter=self.root / "dead-letter" / f"{name}.jsonl", clock=self.clock,
                          linger_s=cfg.linger_s, supervisor=self.supervisor)

    def _build_workers(self) -> dict[str, SinkWorker]:
        wanted: dict[str, SinkWorker] = {}
        for cfg in self.settings.sinks:
            wanted[cfg.name] = self.workers.get(cfg.name) or self._make_worker(
                cfg.name, SINKS.build(cfg, self._context), cfg)
        for rcfg in self.settings.receivers:
            wanted[rcfg.name] = self.workers.get(rcfg.name) or self._make_worker(
                rcfg.name, RECEIVERS.build(rcfg, self._context), rcfg)
        return wanted

    def _index_workers(self) -> None:
        self._record_workers = [w for w in self.workers.values() if w.sink.kind == "record"]
        self._page_workers = {n: w for n, w in self.workers.items() if w.sink.kind == "page"}

    def reload(self, settings: AlertingSettings) -> None:
        """Swap routes, receivers' limits, suppression and grouping; start new sinks,
        stop removed ones (their spools stay on disk and resume if they come back).
        Sinks whose settings changed keep their worker until a restart."""
        self._apply(settings)
        if not self._started:
            return
        wanted = self._build_workers()
        removed = [w for n, w in self.workers.items() if n not in wanted]
        added = [w for n, w in wanted.items() if n not in self.workers]
        self.workers = wanted
        self._index_workers()
        for w in removed:
            self._spawn(f"reload:stop:{w.name}", self._stop_removed(w), lambda: True)
        for w in added:
            if w.spool is not None:
                try:
                    w.spool.open()  # accept records at once; the delivery loop starts in the task
                except OSError as exc:  # submit refuses (RouterError) until the start job opens it
                    log.error("spool of a new sink cannot be opened; retrying",
                              extra={"sink": w.name, "error": repr(exc)})
            self._spawn(f"reload:start:{w.name}", w.start, self._still_configured(w))

    def _spawn(self, name: str, factory: Callable[[], Any], restart: Callable[[], bool]) -> None:
        try:
            self.supervisor.spawn(name, factory, restart=restart)
        except RuntimeError:  # the same job for the same sink is still running (reloads in a row)
            log.error("reload job already running; this one is skipped", extra={"task": name})

    def _still_configured(self, w: SinkWorker) -> Callable[[], bool]:
        return lambda: w in self.workers.values()

    @staticmethod
    def _stop_removed(w: SinkWorker) -> Callable[[], Any]:
        async def stop() -> None:
            await w.stop(drain_s=0)

        return stop

    # --- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Open the store, load silences, start every sink, restore page groups. A second call does nothing;
        a failure stops what was started (in reverse) and raises."""
        if self._started:
            return
        self.supervisor.reopen()
        await asyncio.to_thread(self.redaction.start)
        await asyncio.to_thread(self.store.open)
        started: list[SinkWorker] = []
        try:
            self.silences.load()
            self.workers = self._build_workers()
            self._index_workers()
            for w in self.workers.values():
                await w.start()
                started.append(w)
        except BaseException:
            for w in reversed(started):
                with contextlib.suppress(Exception):
                    await w.stop(drain_s=0)
            self.workers = {}
            self._index_workers()
            self.supervisor.close()
            self.store.close()
            raise
        self._restore_groups()
        self._started = True
        self._ticker = self.supervisor.spawn("alert-router-tick", self._tick_loop)

    async def stop(self, drain_s: float = 5.0) -> None:
        """Flush suppression windows, save page groups, stop sinks last-first, close the store."""
        if not self._started:
            return
        self._started = False
        self.supervisor.close()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        with contextlib.suppress(Exception):
            await self._emit(*self._closed_documents(self.suppressor.flush()), {})
        self._save_groups()
        for w in reversed(list(self.workers.values())):
            try:
                await w.stop(drain_s=drain_s)
            except Exception:
                log.exception("sink stop failed", extra={"sink": w.name})
        self.store.close()

    def _resave_silences(self) -> None:
        """A corrupt store was replaced by an empty one: put the silences held in memory back."""
        now = self.clock()
        for s in self.silences.list(now):
            self.store.save_silence(s.id, s.starts_at, s.ends_at, s.to_dict())

    @property
    def _groups_file(self) -> Path:
        return self.root / "groups.json"

    def _save_groups(self) -> None:
        """Open page groups survive a restart, so their incidents still get resolved."""
        try:
            tmp = self._groups_file.with_suffix(".tmp")
            private_dir(tmp.parent)
            fd = private_open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(self.grouper.snapshot()))
            os.replace(tmp, self._groups_file)
        except OSError:
            log.exception("could not save open page groups")

    def _restore_groups(self) -> None:
        try:
            items = orjson.loads(self._groups_file.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError):
            log.exception("could not read saved page groups; starting without them")
            return
        try:
            restored = self.grouper.restore(items, set(self._page_workers))
        except (KeyError, TypeError, ValueError):
            log.exception("saved page groups are malformed; starting without them")
            return
        if restored:
            log.info("page groups restored", extra={"groups": restored})

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick()
            except Exception:
                log.exception("alert router tick failed")

    async def tick(self, now: float | None = None) -> None:
        """Close suppression windows (count updates) and send group updates/resolves."""
        now = self.clock() if now is None else now
        if now >= self._next_prune:  # store retention, hourly
            self._next_prune = now + 3600
            await asyncio.to_thread(self.store.prune, now - self.settings.store_retention_days * 86_400)
        docs, raw = self._closed_documents(self.suppressor.expire(now))
        pages: dict[str, list[dict[str, Any]]] = {}
        for page in self.grouper.tick(now):
            pages.setdefault(page["receiver"], []).append(page)
        if docs or pages:
            async with self._lock:
                await self._emit(docs, raw, pages)

    def _closed_documents(self, closed: Sequence[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        raw = []
        for c in closed:
            doc = c.first.to_document()
            doc["pipesentry"]["suppressed_count"] = c.count
            doc["pipesentry"]["suppressed_last"] = iso_time(c.last)
            raw.append(doc)
        return self._redact_documents(raw), raw if self._raw_record_sinks() else None

    # --- redaction -------------------------------------------------------------
    def _redact_documents(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A batch's documents, redacted (in order) unless redaction is off."""
        return self.redaction.documents(docs) if self.redaction.enabled else list(docs)

    def _redact_page(self, receiver: str, page: dict[str, Any]) -> dict[str, Any]:
        """A group's page base, redacted unless ``receiver`` opted out (groups.json holds it as sent)."""
        return page if receiver in self._raw_sinks else self.redaction.page(page)

    def _redact_group_values(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """Group-by values as groups are keyed (and saved in groups.json): redacted, by name or shape."""
        if not self.redaction.enabled:
            return values
        redactor = self.redaction.redactor
        return tuple(redactor.value(v) if secret_name(f) else redactor.text(v)
                     for f, v in zip(self.settings.grouping.group_by, values, strict=True))

    def _raw_record_sinks(self) -> bool:
        return any(w.name in self._raw_sinks for w in self._record_workers)

    # --- the hot path --------------------------------------------------------
    def decide(self, alerts: Sequence[Alert], now: float | None = None, *, render: bool = True) -> Decision:
        """Suppression, silences, routing and grouping for a batch. No I/O.
        ``render=False`` skips building documents (routing benchmark)."""
        now = self.clock() if now is None else now
        out = Decision()
        suppressor, silences, grouper, routes = self.suppressor, self.silences, self.grouper, self.routes
        produced: dict[tuple[str, str], int] = {}
        dropped: dict[str, int] = {}
        raw: list[dict[str, Any]] = []
        for alert in alerts:
            key = (alert.rule.id, alert.rule.level)
            produced[key] = produced.get(key, 0) + 1
            if not suppressor.admit(alert, now):
                dropped["window"] = dropped.get("window", 0) + 1
                continue
            if render:
                raw.append(alert.to_document())
            receivers = routes.receivers(alert)
            if not receivers:
                continue
            if silences.silenced_by(alert, now) is not None:
                dropped["silence"] = dropped.get("silence", 0) + 1
                continue
            rank = alert.rank
            for name in receivers:
                if rank < self._min_rank.get(name, 0):
                    dropped["min_level"] = dropped.get("min_level", 0) + 1
                    continue
                bucket = self._buckets.get(name)
                if bucket is not None and not grouper.is_open(name, alert) and not bucket.take(now):
                    dropped["rate_limit"] = dropped.get("rate_limit", 0) + 1
                    continue
                page = grouper.add(name, alert, now)
                if page is not None:
                    out.pages.setdefault(name, []).append(page)
        if raw:  # redacted as one batch: the redaction metric counted once per kind
            out.documents = self._redact_documents(raw)
        if render and self._raw_record_sinks():
            out.raw_documents = raw
        for (rule_id, level), n in produced.items():
            metrics.ALERTS.labels(rule_id=rule_id, level=LEVELS[level_rank(level)]).inc(n)
        for reason, n in dropped.items():
            metrics.ALERTS_SUPPRESSED.labels(reason=reason).inc(n)
        return out

    async def submit(self, alerts: Sequence[Alert]) -> None:
        """Accept a batch durably, or raise :class:`RouterError`."""
        if not alerts:
            return
        if not self._started:
            raise RouterError("alert router is not started")
        async with self._lock:
            decision = self.decide(alerts)
            await self._emit(decision.documents, decision.raw_documents, decision.pages)

    async def _emit(self, documents: list[dict[str, Any]], raw_documents: list[dict[str, Any]] | None,
                    pages: dict[str, list[dict[str, Any]]]) -> None:
        """Spool (or deliver) a batch: redacted documents to every record sink but those that opted out,
        which get ``raw_documents``."""
        fds: dict[int, list[SinkWorker]] = {}
        inline: list[tuple[SinkWorker, list[dict[str, Any]]]] = []
        try:
            if documents:
                payloads: dict[bool, list[bytes]] = {}  # shared JSON per form, built once if some sink needs it
                for w in self._record_workers:
                    is_raw = raw_documents is not None and w.name in self._raw_sinks
                    docs = raw_documents if is_raw and raw_documents is not None else documents
                    if w.durable:
                        if is_raw not in payloads and w.raw is None:
                            payloads[is_raw] = [orjson.dumps(d) for d in docs]
                        fd = w.append(payloads.get(is_raw, []), docs)
                        if fd is not None:
                            fds.setdefault(fd, []).append(w)
                    else:
                        inline.append((w, docs))
            for name, recs in pages.items():
                pw = self._page_workers.get(name)
                if pw is None:
                    continue
                if pw.durable:
                    fd = pw.append([orjson.dumps(p) for p in recs])
                    if fd is not None:
                        fds.setdefault(fd, []).append(pw)
                else:
                    await pw.deliver_inline(recs)
            if fds:
                await self._sync(fds)
        except (SpoolError, OSError) as exc:
            raise RouterError(f"alerts not accepted: {exc}") from exc
        for w, docs in inline:
            await w.deliver_inline(docs)

    async def _sync(self, fds: dict[int, list[SinkWorker]]) -> None:
        """fsync every spool written to; a failure is the batch's failure and marks its sinks."""
        order = list(fds)
        results = await asyncio.gather(*(asyncio.to_thread(fsync_fd, fd) for fd in order), return_exceptions=True)
        error: BaseException | None = None
        for fd, result in zip(order, results, strict=True):
            if isinstance(result, BaseException):
                error = result
                for w in fds[fd]:
                    metrics.SPOOL_ERRORS.labels(sink=w.name, op="fsync").inc()
                    w.accept_failed(result)
                    log.error("spool fsync failed", extra={"sink": w.name, "error": repr(result)})
        if error is not None:
            raise error

    # --- introspection -------------------------------------------------------
    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every durable sink has drained its spool (tests, benchmarks)."""
        await asyncio.wait_for(asyncio.gather(*(w.wait_idle() for w in self.workers.values())), timeout)

    def health(self) -> dict[str, bool]:
        """Readiness checks of the alerting part: every sink's delivery loop runs and
        no sink is stuck on a local fault (disk, alert store); every other router task runs.
        A remote sink that is down (circuit open) is not a readiness failure: its spool absorbs it."""
        workers = list(self.workers.values())
        return {"alert_sinks_running": all(w.running for w in workers),
                "alert_sinks_no_local_fault": all(w.fault is None for w in workers),
                "alert_spools_accepting": all(w.accept_fault is None for w in workers),
                "alert_tasks_running": not self.supervisor.down()}

    def status(self) -> dict[str, Any]:
        return {name: {"durable": w.durable, "pending": w.spool.pending if w.spool else 0,
                       "delivered": w.delivered, "dead_lettered": w.dead_lettered,
                       "circuit_open": w.breaker.open, "last_error": w.last_error,
                       "running": w.running, "fault": w.fault}
                for name, w in self.workers.items()}
