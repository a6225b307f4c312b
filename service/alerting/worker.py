"""One delivery loop per sink: spool -> sink, in order, with backoff and a breaker.

``accept`` is what ``submit`` awaits: for a durable sink it appends to the spool
(the caller fsyncs the returned descriptors once per batch); for a non-durable
sink (stdout) it delivers inline. The loop reads the spool in batches, hands
them to the sink, acknowledges what is finished and backs off on errors. A
sink that is down only grows its own spool; other sinks are not slowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from service import metrics
from service.fileperms import private_append
from service.supervisor import Supervisor

from .config import SpoolSettings
from .sinks.base import Backoff, CircuitBreaker, Outcome, RawSink, Sink
from .sinks.settings import RetrySettings
from .spool import Position, Record, Spool, SpoolError, SpoolFull
from .store import StoreError

log = logging.getLogger(__name__)


def _append_lines(path: Path, lines: list[bytes]) -> None:
    """Append to the dead-letter file and fsync it (a fault-test write point)."""
    private_append(path, b"".join(lines), sync=True)


def is_local_fault(exc: BaseException | None) -> bool:
    """A fault of this host (disk, local database), not of the remote sink."""
    return isinstance(exc, (SpoolError, StoreError, OSError))


class SinkWorker:
    def __init__(self, sink: Sink, *, durable: bool, batch_size: int, retry: RetrySettings,
                 spool_dir: Path, spool: SpoolSettings, dead_letter: Path,
                 clock: Callable[[], float] = time.time, linger_s: float = 0.0,
                 supervisor: Supervisor | None = None) -> None:
        self.sink = sink
        self.raw: RawSink | None = sink if isinstance(sink, RawSink) else None
        """The sink's fast path (it spools its own encoding), or None: spool JSON documents."""
        self.linger_s = linger_s
        self.name = sink.name
        self.durable = durable
        self.batch_size = batch_size
        self.retry = retry
        self.clock = clock
        self.spool = Spool(spool_dir, sink.name, segment_bytes=spool.segment_bytes,
                           max_bytes=spool.max_bytes, fsync=spool.fsync) if durable else None
        self.breaker = CircuitBreaker(retry.breaker_failures, retry.breaker_reset_s)
        self.backoff = Backoff(retry.initial_backoff_s, retry.max_backoff_s)
        self.dead_letter = dead_letter
        self.delivered = 0
        self.dead_lettered = 0
        self.last_error: str | None = None
        self.fault: str | None = None
        """The local fault delivery is stuck on (None: none); readiness reports it."""
        self.accept_fault: str | None = None
        """Why the last append (or its fsync) failed (None: it succeeded); readiness reports it."""
        self._accept_full = False
        self.supervisor = supervisor or Supervisor(initial_backoff_s=retry.initial_backoff_s,
                                                   max_backoff_s=retry.max_backoff_s)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = False
        metrics.SINK_UP.labels(sink=self.name).set(1)

    async def start(self) -> None:
        """Start the sink, open the spool and spawn the delivery loop; a second call does nothing."""
        if self._started:
            return
        await self.sink.start()
        if self.spool is not None:
            try:
                self.spool.open()
            except BaseException:
                await self.sink.stop()  # all or nothing: a failed start leaves nothing running
                raise
        self._started = True
        if self.spool is not None:
            self._stopping = False
            self._task = self.supervisor.spawn(self.task_name, self._run, on_crash=self._crashed,
                                               restart=lambda: not self._stopping)
            self._wake.set()

    @property
    def task_name(self) -> str:
        return f"sink:{self.name}"

    @property
    def running(self) -> bool:
        """The delivery loop runs (always True for a non-durable sink, which has none)."""
        if self.spool is None:
            return True
        state = self.supervisor.state(self.task_name)
        return state is not None and state.running

    def _crashed(self, exc: BaseException) -> None:
        self.last_error = repr(exc)
        self.fault = f"delivery loop crashed: {exc!r}"
        metrics.SINK_UP.labels(sink=self.name).set(0)

    async def stop(self, drain_s: float = 5.0) -> None:
        """Try to drain for ``drain_s``, then stop; what is left stays spooled. A second call does nothing."""
        if self._task is not None:
            if drain_s > 0 and self.spool is not None and self.spool.pending and not self.breaker.open:
                try:
                    await asyncio.wait_for(self.wait_idle(), drain_s)
                except TimeoutError:
                    pass
            self._stopping = True
            self._wake.set()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            self.supervisor.forget(self.task_name)
        if self.spool is not None:
            self.spool.close()
        if self._started:
            self._started = False
            await self.sink.stop()

    # --- accepting -----------------------------------------------------------
    def append(self, payloads: Sequence[bytes], documents: Sequence[dict[str, Any]] | None = None) -> int | None:
        """Durable sinks: spool ``payloads`` (or the sink's own encoding of
        ``documents``); returns an fd to fsync (batch policy)."""
        assert self.spool is not None
        if self.raw is not None and documents is not None:
            encode = self.raw.encode
            payloads = [encode(d) for d in documents]
        elif not payloads and documents:
            payloads = [orjson.dumps(d) for d in documents]
        try:
            fd = self.spool.append(payloads)
        except SpoolError as exc:
            self.accept_failed(exc)
            raise
        if self.accept_fault is not None:
            log.info("spool accepts records again", extra={"sink": self.name})
            self.accept_fault = None
            self._accept_full = False
        self._idle.clear()
        self._wake.set()
        return fd

    def accept_failed(self, exc: BaseException) -> None:
        """The spool could not take (or sync) records: the caller gets the error; readiness shows it
        until an append succeeds or, for a full spool, until delivery has drained half of it."""
        self.accept_fault = repr(exc)
        self._accept_full = isinstance(exc, SpoolFull)

    async def deliver_inline(self, records: list[dict[str, Any]]) -> None:
        """Non-durable sinks: deliver now; failures are counted, never raised."""
        start = time.perf_counter()
        try:
            outcome = await self.sink.deliver(records)
        except Exception as exc:  # a non-durable sink is best effort by definition
            metrics.SINK_FAILURES.labels(sink=self.name).inc()
            self.last_error = repr(exc)
            return
        metrics.SINK_LATENCY.labels(sink=self.name).observe(time.perf_counter() - start)
        try:
            self._account(outcome, records)
        except OSError as exc:
            log.error("dead-letter write failed for a non-durable sink", extra={"sink": self.name,
                                                                                 "error": repr(exc)})

    async def wait_idle(self) -> None:
        """Wait until the spool is empty (tests, benchmarks, shutdown drain)."""
        while self.spool is not None and self.spool.pending:
            self._idle.clear()
            await self._idle.wait()

    # --- the loop ------------------------------------------------------------
    async def _run(self) -> None:
        assert self.spool is not None
        while not self._stopping:
            try:
                await self._step(self.spool)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a local fault: never a reason to stop delivering
                self.spool.rewind()
                self._local_fault(exc)
                await asyncio.sleep(self.backoff.next())

    async def _step(self, spool: Spool) -> None:
        """One read-deliver-acknowledge round (or one wait for records)."""
        spool.flush_cursor()  # a cursor write that failed before: retried first
        if self.linger_s > 0 and 0 < spool.pending < self.batch_size:
            await asyncio.sleep(self.linger_s)  # let a fuller batch build up (fewer, larger requests)
        batch = spool.read(self.batch_size)
        if not batch:
            spool.settle()
            self._healthy()
            self._idle.set()
            self._wake.clear()
            await self._wake.wait()
            return
        wait = self.breaker.wait(self.clock())
        if wait > 0:
            spool.rewind()
            await asyncio.sleep(wait)
            return
        raw = self.raw
        records: list[dict[str, Any]] = []
        finished_bad: set[int] = set()
        if raw is None:  # else the sink spooled its own encoding (RawSink.encode)
            records, finished_bad = self._decode(batch)
        start = time.perf_counter()
        try:
            if raw is not None:
                outcome = await raw.deliver_raw([r.payload for r in batch])
            else:
                outcome = await self.sink.deliver(records) if records else Outcome(done=0)
        except Exception as exc:
            outcome = Outcome(done=0, error=exc)
        metrics.SINK_LATENCY.labels(sink=self.name).observe(time.perf_counter() - start)
        done_records = self._finished(batch, records, finished_bad, outcome.done)
        self._account(outcome, records)  # dead letters reach the disk before the cursor passes them
        if done_records:
            last = batch[done_records - 1]
            spool.ack(last.end, done_records, sum(r.size for r in batch[:done_records]))
        if outcome.error is None and done_records == len(batch):
            self.breaker.success()
            self.backoff.reset()
            self._healthy()
            return
        spool.rewind()
        if is_local_fault(outcome.error):
            self._local_fault(outcome.error)
        else:
            self._failed(outcome.error)
        await asyncio.sleep(max(self.backoff.next(), self.breaker.wait(self.clock())))

    def _healthy(self) -> None:
        if self._accept_full and self.spool is not None and self.spool.bytes <= self.spool.max_bytes // 2:
            log.info("spool has room again", extra={"sink": self.name, "bytes": self.spool.bytes})
            self.accept_fault = None
            self._accept_full = False
        if self.fault is not None:
            log.info("sink recovered", extra={"sink": self.name, "fault": self.fault})
            self.fault = None
        if not self.breaker.open:
            metrics.SINK_UP.labels(sink=self.name).set(1)

    def _local_fault(self, exc: BaseException | None) -> None:
        """A fault on this host: sink_up 0 at once (no breaker threshold), logged loudly."""
        metrics.SINK_FAILURES.labels(sink=self.name).inc()
        if isinstance(exc, OSError) and not isinstance(exc, SpoolError):
            metrics.SPOOL_ERRORS.labels(sink=self.name, op="io").inc()
        self.last_error = repr(exc)
        first = self.fault is None
        self.fault = self.last_error
        metrics.SINK_UP.labels(sink=self.name).set(0)
        log.error("sink delivery stuck on a local fault; retrying", exc_info=exc if first else None,
                  extra={"sink": self.name, "error": self.last_error,
                         "pending": self.spool.pending if self.spool else 0})

    def _decode(self, batch: list[Record]) -> tuple[list[dict[str, Any]], set[int]]:
        """JSON-decode payloads; an undecodable one (checksum fine, content not) is corrupt."""
        records: list[dict[str, Any]] = []
        bad: set[int] = set()
        for i, rec in enumerate(batch):
            try:
                value = orjson.loads(rec.payload)
                if not isinstance(value, dict):
                    raise ValueError("not an object")
                records.append(value)
            except ValueError:
                bad.add(i)
                metrics.SPOOL_CORRUPT.labels(sink=self.name).inc()
        return records, bad

    @staticmethod
    def _finished(batch: list[Record], records: list[dict[str, Any]], bad: set[int], done: int) -> int:
        """How many spool records (including corrupt ones) precede the first unfinished record."""
        if not bad:
            return done
        count = seen = 0
        for i in range(len(batch)):
            if i in bad:
                count += 1
                continue
            if seen >= done:
                break
            seen += 1
            count += 1
        return count

    def _account(self, outcome: Outcome, records: list[dict[str, Any]]) -> None:
        if outcome.rejected:
            self._dead_letter(outcome.rejected)
        delivered = outcome.done - len(outcome.rejected)
        if delivered > 0:
            metrics.SINK_DELIVERIES.labels(sink=self.name).inc(delivered)
            self.delivered += delivered
            log.debug("alerts delivered", extra={"sink": self.name, "alerts": delivered})  # routine: DEBUG

    def _failed(self, error: BaseException | None) -> None:
        metrics.SINK_FAILURES.labels(sink=self.name).inc()
        self.breaker.failure(self.clock())
        self.last_error = repr(error) if error else "incomplete delivery"
        if self.breaker.open:
            metrics.SINK_UP.labels(sink=self.name).set(0)
        log.warning("sink delivery failed", extra={"sink": self.name, "error": self.last_error,
                                                   "pending": self.spool.pending if self.spool else 0})

    def _dead_letter(self, rejected: list[tuple[dict[str, Any], str]]) -> None:
        """Records a sink can never take: kept on disk with the reason, counted as failures.
        Raises OSError when the file cannot be written: the batch is then not acknowledged."""
        lines = [orjson.dumps({"sink": self.name, "reason": reason, "at": self.clock(), "record": record}) + b"\n"
                 for record, reason in rejected]
        try:
            _append_lines(self.dead_letter, lines)
        except OSError:
            metrics.SPOOL_ERRORS.labels(sink=self.name, op="dead_letter").inc()
            raise
        self.dead_lettered += len(rejected)
        metrics.SINK_FAILURES.labels(sink=self.name).inc(len(rejected))
        log.error("records dead-lettered", extra={"sink": self.name, "count": len(rejected),
                                                  "reason": rejected[0][1], "file": str(self.dead_letter)})


__all__ = ["Position", "SinkWorker"]
