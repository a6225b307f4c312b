"""Composition root: builds every part from :class:`~service.config.Settings` and runs them together.

One event loop runs the HTTP server (uvicorn), the inputs, the heartbeat and the
rules watcher. Every input is a :class:`~service.pipeline.source.Source` driven through the
pipeline core: stdin and followed files one batch at a time through the shared
:class:`~service.pipeline.Pipeline` (the HTTP route runs its batches itself), Kafka overlapped
through a pipeline of its own whose dead letters are the topic
(:meth:`~service.sources.kafka.KafkaSource.run`).

Every background task runs under a :class:`~service.supervisor.Supervisor`: a
crash is logged with the task's name, counted
(``pipesentry_task_restarts_total{task}``) and, for ``kafka``, ``file:<path>``,
``heartbeat``, ``local-state`` and ``rules-watch``, restarted with capped
backoff; ``stdin`` is not restarted (its reader thread owns the stream). While
a task is down (crashed, waiting to restart or given up) ``/readyz`` reports
``background_tasks_running: false``; the alert router's own checks (sink loops
running, no sink stuck on a local fault) are part of ``/readyz`` as well. Shutdown (SIGTERM/SIGINT or
:meth:`Service.request_stop`) stops the inputs first, lets in-flight alerts
reach the router and commits what it accepted, then stops the router and the
server, so a clean stop loses nothing and re-reads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from detectors.sigma.memo import CompileMemo
from service import metrics
from service.alerting.api import api_router
from service.alerting.router import AlertRouter
from service.alerting.store import AlertStore
from service.alerting.triage_store import TriageStore
from service.api import ApiContext, create_app
from service.api.tls import ServerTls, TlsError, TlsH11Protocol
from service.audit.trail import AuditTrail
from service.config import Settings
from service.detection import Detector
from service.errors import ServiceError
from service.local_state import LocalState
from service.pipeline import Pipeline, drive, tune_gc
from service.redaction import Redaction
from service.reload import Reloader, ReloadResult, compile_configured
from service.sources.base import InputSpec
from service.sources.deadletter import FileDeadLetters
from service.sources.filetail import FileFollower
from service.sources.kafka import KafkaSource
from service.sources.stdin import StdinSource, stdin_wanted
from service.startup import ApiSwitch, BindError, LoadProgress, StartingApi, bind_api_socket, log_progress
from service.supervisor import Supervisor
from service.waits import stopped_within

log = logging.getLogger(__name__)


KEYED_TASK = "kafka-keyed"
"""The supervised task of stage 2's consumer (``state.scope: keyed``)."""


class StartupError(ServiceError):
    """The service cannot start (rules rejected, port taken); the message says why."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns the signals and the shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _alert_routers(router: AlertRouter) -> list[Any]:
    """The alerting part's ``/api/v1/alerts`` and silences routes (each declares its role)."""
    return [api_router(router)]


def _alert_stats(router: Any) -> Callable[[], Mapping[str, Any]] | None:
    """Per-rule alert and false-positive counts from the router's local store (none for a router without)."""
    store = getattr(router, "store", None)
    return TriageStore(store).rule_stats if isinstance(store, AlertStore) else None


class Service:
    """The running pipesentry: inputs -> detector -> alert router, plus the HTTP API."""

    def __init__(self, settings: Settings, *, router: Any | None = None, stdin: Any | None = None,
                 config_path: Path | None = None, settings_loader: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        self._config_path = config_path
        self._settings_loader = settings_loader
        self.redaction = Redaction(settings.redaction, settings.data_dir)
        """Secrets become markers in alerts, pages, dead letters and logs (the router starts it)."""
        self.router = router if router is not None else AlertRouter(settings.alerting, settings.data_dir,
                                                                    redaction=self.redaction)
        self._stdin = stdin
        self.stop_event = asyncio.Event()
        self.detector: Detector | None = None
        self.reloader: Reloader | None = None
        self.pipeline: Pipeline | None = None
        self.kafka: KafkaSource | None = None
        self.keyed: Any | None = None
        """``state.scope: keyed``: :class:`service.keyed.wiring.KeyedStages`."""
        self.app: FastAPI | None = None
        self.hunt_jobs: Any = None
        """The API's hunts (``POST /api/v1/hunts``), when the API runs."""
        self.server: _Server | None = None
        self.switch: ApiSwitch | None = None
        """What uvicorn serves: the start-up answers while the rules load, then :attr:`app`."""
        self.local_state: LocalState | None = None
        self.changelog: Any | None = None
        """``state.snapshots: kafka``: the changelog store (its producer stops after the inputs)."""
        self.audit = AuditTrail(settings.audit, getattr(self.router, "store", None))
        self.tls = ServerTls(settings.api.tls) if settings.api.tls is not None else None
        self._tasks: list[asyncio.Task[Any]] = []
        self.supervisor = Supervisor()

    # -- build ------------------------------------------------------------------
    async def build(self) -> None:
        """Compile the rules and wire the parts; raises :class:`StartupError`."""
        s = self.settings
        paths = s.rules.resolved_paths()
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise StartupError(f"rules path(s) do not exist: {', '.join(missing)}")
        progress = LoadProgress()
        memo = CompileMemo()  # kept by the reloader: a reload compiles only the rule files that changed
        loaded = asyncio.Event()
        ticker = asyncio.create_task(log_progress(progress, loaded), name="rules-progress")
        try:
            outcome = await asyncio.to_thread(compile_configured, s.rules, s.correlation, s.anomaly, 1, progress,
                                              memo)
        finally:
            loaded.set()
            await ticker
        if not outcome.accepted or outcome.detection is None:
            lines = [f"  {e.source}: {e.reason}" for e in outcome.errors[:50]]
            raise StartupError("rules rejected (set rules.skip_invalid: true to leave bad rules out):\n"
                               + "\n".join(lines))
        for error in outcome.errors:
            log.warning("rule skipped", extra={"source": error.source, "reason": error.reason})
        self.detector = Detector(outcome.detection, scope=s.state.scope)
        from service.state_store import StateStore

        store: Any = StateStore(s.data_dir / "state")
        if s.state.snapshots == "kafka" and s.kafka is not None:  # Kafka partitions' state in a compacted topic
            from service.state_changelog import ChangelogStore

            store = self.changelog = ChangelogStore(store, s.kafka, s.state.changelog_topic,
                                                    s.state.changelog_partitions)
        self.local_state = LocalState(self.detector, store)
        await self.local_state.restore()
        tune_gc(collect=not outcome.restored)  # a cached ruleset made next to no garbage
        self.reloader = Reloader(self.detector, s.rules, s.correlation, s.anomaly,
                                 config_path=self._config_path, settings_loader=self._settings_loader,
                                 apply_alerting=self.router.reload if self._settings_loader else None,
                                 memo=memo)
        self.reloader.note_loaded()
        self.reloader.on_result = self._audit_reload
        dead = FileDeadLetters(s.data_dir / "dead-letters.ndjson", redaction=self.redaction)
        self.pipeline = Pipeline(self.detector, self.router, dead, screen=s.events.screen)
        if s.kafka is not None:
            records = None
            if s.state.scope == "keyed":  # stage 1 feeds correlations through the internal topic
                from service.keyed.wiring import KeyedConfigError, build_keyed

                try:
                    self.keyed = build_keyed(s, self.detector, self.router, store)
                except KeyedConfigError as exc:
                    raise StartupError(str(exc)) from None
                records = self.keyed.producer
            if self.keyed is None or self.keyed.stage1:  # a stage-2-only instance reads no input topic
                self.kafka = KafkaSource(s.kafka, s.events, self.detector, self.router, state_store=store,
                                         snapshot_interval_s=s.state.snapshot_interval_s, state_records=records)
        from detectors.sigma.screen import AVAILABLE as native_screen

        metrics.record_build_info(native_screen and s.events.screen)
        counts = outcome.detection.counts()
        log.info("rules loaded", extra={"rules": counts, "skipped": len(outcome.errors),
                                        "paths": [str(p) for p in paths], **progress.fields()})
        if s.api.enabled:
            ctx = ApiContext(settings=s, detector=self.detector, reloader=self.reloader,
                             pipeline=self.pipeline if s.http_ingest.enabled else None,
                             readiness=self.readiness, routers=[*_alert_routers(self.router), self._hunts()], audit=self.audit,
                             alert_stats=_alert_stats(self.router), extra={"alerts": self.router})
            self.app = create_app(ctx)

    def _hunts(self) -> Any:
        """``/api/v1/hunts``: retro-hunts over the ``hunt:`` cluster, alerts into the router's store."""
        from service.hunt.api import HuntJobs, hunt_router, store_writer

        self.hunt_jobs = HuntJobs(self.settings, store_writer(self.router))
        return hunt_router(self.hunt_jobs)

    def _audit_reload(self, result: ReloadResult) -> None:
        """File-watch and SIGHUP reloads are the service's own actions (API reloads are audited per request)."""
        if result.trigger != "api":
            self.audit.system("rules.reload", obj="rules", outcome=result.result,
                              detail={"trigger": result.trigger, "generation": result.generation,
                                      "config": self._settings_loader is not None})

    @property
    def api_serving(self) -> bool:
        """The full API answers on the listening socket (before that, only the start-up answers)."""
        return (self.server is not None and self.server.started and self.switch is not None
                and self.app is not None and self.switch.app is self.app)

    def readiness(self) -> dict[str, bool]:
        checks = {"rules_loaded": self.detector is not None and bool(self.detector.current.ruleset.rules)}
        if self.kafka is not None:
            checks["kafka_partitions_assigned"] = self.kafka.ready
        if self.keyed is not None and self.keyed.stage2:
            checks.update(self._stage2_readiness())
        checks["background_tasks_running"] = not self.supervisor.down()
        health = getattr(self.router, "health", None)
        if health is not None:
            checks.update(health())
        return checks

    def _stage2_readiness(self) -> dict[str, bool]:
        """Stage 2 of ``state.scope: keyed``: its consumer task runs (not crashed, not finished) and is
        connected; a stage-2-only instance must also own internal partitions (as stage 1 its input ones)."""
        assert self.keyed is not None
        task = self.supervisor.state(KEYED_TASK)
        source = self.keyed.source
        checks = {"keyed_stage2_connected": task is not None and task.running and source.connected}
        if not self.keyed.stage1:
            checks["keyed_partitions_assigned"] = source.ready
        return checks

    # -- run ------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.stop_event.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop)
        if self.reloader is not None:
            self.reloader.install_sighup(loop)

    def _server_options(self) -> dict[str, Any]:
        """uvicorn options for TLS (none without); raises :class:`StartupError` for a bad cert/key."""
        if self.tls is None:
            return {}
        try:
            context = self.tls.load()
        except TlsError as exc:
            raise StartupError(str(exc)) from None
        return {"http": TlsH11Protocol, "ssl_context_factory": lambda _config, _default: context}

    def _listen(self) -> socket.socket:
        """The API's listening socket, bound before anything else starts; raises :class:`StartupError`."""
        s = self.settings.api
        try:
            return bind_api_socket(s.host, s.port)
        except BindError as exc:
            log.error("cannot listen on the API address", extra={"host": s.host, "port": s.port,
                                                                  "error": str(exc)})
            raise StartupError(str(exc)) from None

    async def _serve(self, listener: socket.socket, options: dict[str, Any]) -> None:
        s = self.settings.api
        assert self.switch is not None
        # uvicorn's access log stays off: service.api.access_log writes it (pipesentry.access)
        config = uvicorn.Config(self.switch, host=s.host, port=s.port, log_config=None, access_log=False,
                                lifespan="off", server_header=False, **options)
        self.server = _Server(config)
        by_cert = s.tls is not None and bool(s.tls.client_identities)
        if not s.tokens and not by_cert and s.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("API listens beyond loopback without tokens: anyone who reaches it is admin "
                        "(only cross-site requests and unknown Host names are refused; see docs/security.md)",
                        extra={"host": s.host})
        await self.server.serve(sockets=[listener])
        if not self.server.started:
            raise StartupError(f"cannot listen on {s.host}:{s.port}")

    async def run(self, *, install_signals: bool = True) -> None:
        """Run until stopped; raises :class:`StartupError` when it cannot start.

        The API port is bound first and serves liveness while the rules load (:mod:`service.startup`)."""
        s = self.settings
        server_task: asyncio.Task[None] | None = None
        if s.api.enabled and self.server is None:
            options = self._server_options()
            listener = self._listen()
            self.switch = ApiSwitch(self.app if self.app is not None else StartingApi(s.api.metrics_public))
            server_task = asyncio.create_task(self._serve(listener, options), name="http")
        try:
            if self.detector is None:
                await self.build()
            assert self.pipeline is not None and self.reloader is not None
            if install_signals:
                self._install_signals()
            await asyncio.to_thread(self.redaction.start)
            await self.router.start()
        except BaseException:
            await self._stop_server(server_task)
            raise
        if self.switch is not None and self.app is not None:
            self.switch.app = self.app  # from here on the full API answers
        stop = self.stop_event
        try:
            sup = self.supervisor

            def running() -> bool:
                return not stop.is_set()

            def spawn(name: str, factory: Callable[[], Any], restart: Callable[[], bool] = running) -> None:
                self._tasks.append(sup.spawn(name, factory, restart=restart))

            if self.kafka is not None:
                spawn("kafka", partial(self.kafka.run, stop))
            if self.keyed is not None and self.keyed.stage2:
                spawn(KEYED_TASK, partial(self.keyed.run_stage2, stop))
            if self.keyed is not None and self.keyed.stage1:
                spawn("keyed-watermarks", partial(self.keyed.producer.run_watermarks, stop))
            pipeline = self.pipeline
            # push inputs are Sources run through the one pipeline core (see service.pipeline.source)
            if stdin_wanted(s.stdin.enabled, self._stdin):
                stdin = StdinSource(InputSpec.from_settings("stdin", s.stdin, s.events.timestamp_fields),
                                    stream=self._stdin, max_line=s.events.max_event_bytes)
                spawn("stdin", partial(drive, stdin, pipeline, stop), lambda: False)
            for file in s.files:
                spec = InputSpec.from_settings(f"file:{file.path}", file, s.events.timestamp_fields)
                follower = FileFollower(file.path, spec, start_at=file.start_at,
                                        poll_interval_s=file.poll_interval_s, max_line=s.events.max_event_bytes)
                spawn(f"file:{file.path}", partial(drive, follower, pipeline, stop))
            spawn("heartbeat", partial(self._heartbeat, stop))
            if self.local_state is not None:
                spawn("local-state", partial(self.local_state.run, stop, s.state.snapshot_interval_s))
            if s.rules.watch:
                spawn("rules-watch", partial(self.reloader.watch, stop))
            if s.audit.enabled and self.audit.queryable:
                spawn("audit-prune", partial(self.audit.prune_loop, stop))
            if self.tls is not None and self.app is not None:
                spawn("api-tls-watch", partial(self.tls.watch, stop))
            scheme = "https" if self.tls is not None else "http"
            log.info("pipesentry running", extra={
                "api": f"{scheme}://{s.api.host}:{s.api.port}" if self.app is not None else None,
                "kafka": self.kafka is not None, "files": len(s.files),
                "keyed_role": self.keyed.role if self.keyed is not None else None})
            waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
            if server_task is not None:
                waiters.append(server_task)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            if server_task is not None and server_task.done():
                server_task.result()  # a server that could not start is fatal
        finally:
            # inputs first (Kafka drains and commits), then the API (in-flight ingest requests finish),
            # then the router, which everything above hands alerts to
            stop.set()
            self.supervisor.close()
            await self._stop_inputs()
            await self._stop_server(server_task)
            if self.hunt_jobs is not None:
                await self.hunt_jobs.stop()  # a running hunt writes to the router's store: stop it first
            if self.local_state is not None:
                await self.local_state.save()  # inputs and ingest requests are done: the local state is final
            if self.changelog is not None:
                await self.changelog.stop()  # after the inputs: their hand-over snapshots went through it
            await self.audit.flush()  # the store closes with the router
            await self.router.stop()
            log.info("pipesentry stopped")

    async def _stop_server(self, server_task: asyncio.Task[None] | None) -> None:
        if server_task is None:
            return
        if self.server is not None:
            self.server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(server_task, timeout=10)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Every few seconds, let stateful detectors see time pass (silence checks, window ends).

        Kafka partitions with records left to read are skipped: their own records move them on.
        """
        assert self.detector is not None
        while not await stopped_within(stop, self.settings.state.heartbeat_interval_s):
            busy = self.kafka.busy_scopes() if self.kafka is not None else set()
            alerts = await asyncio.to_thread(self.detector.heartbeat, time.time(), skip=busy)
            if self.keyed is not None and self.keyed.stage2:
                alerts += await asyncio.to_thread(self.keyed.detector.heartbeat, time.time())
            while alerts and not stop.is_set():
                try:
                    await self.router.submit(alerts)
                    break
                except Exception as exc:
                    log.warning("heartbeat alerts not accepted; retrying", extra={"error": repr(exc)})
                    await stopped_within(stop, 1.0)

    async def _stop_inputs(self) -> None:
        stdin_tasks = [t for t in self._tasks if t.get_name() == "stdin"]
        for task in stdin_tasks:
            task.cancel()  # the reader thread ends with the process; nothing unaccepted is acknowledged
        others = [t for t in self._tasks if t not in stdin_tasks]
        results = await asyncio.gather(*others, *stdin_tasks, return_exceptions=True)
        for task, result in zip([*others, *stdin_tasks], results, strict=True):
            if isinstance(result, Exception):
                log.error("input failed", extra={"task": task.get_name(), "error": repr(result)})
        self._tasks.clear()

