"""The Kafka input as a :class:`~service.pipeline.source.Source`: consumer group -> batches whose
acknowledgement marks their offsets for commit, at least once.

:class:`KafkaSource` fetches with ``getmany`` and screens each fetched batch in a worker thread
while it fetches the next (up to ``SCREEN_AHEAD`` wait there), then yields it to
:func:`~service.pipeline.source.drive`, which decodes and detects it in the pipeline core's
detection thread while earlier batches are submitted, and acknowledges batches in order. Up to
``max_in_flight_batches`` detected batches may wait for the router (besides the one in detection
and the one being submitted); beyond that every assigned partition is paused (polling continues so the group keeps us), so a slow
router holds memory flat instead of growing it. Before partitions leave, the batches handed out
are drained: acknowledged (and committed), or, for a batch not detected yet, dropped uncommitted
(the next owner reads it again).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

import service.partition_state as partition_states  # a module import: partition_state imports this package
from service import metrics
from service.config import EventSettings, KafkaSettings
from service.detection import Detector
from service.pipeline.core import AlertSink, IngestResult, Pipeline
from service.pipeline.source import Batch, drive
from service.screening import Screening, ScreenResult, decode_screened, screening_for
from service.sources.base import Decoded, InputSpec, decode_batch
from service.sources.kafka.client import consumer_kwargs
from service.sources.kafka.deadletters import DeadLetterWriter
from service.sources.kafka.offsets import OffsetTracker, Rebalance, commit
from service.waits import stopped_within

log = logging.getLogger(__name__)


def subscription_pattern(settings: KafkaSettings) -> str | None:
    """One regex for ``topics`` plus ``topic_pattern`` (aiokafka takes topics or a pattern, not both)."""
    if not settings.topic_pattern:
        return None
    names = "|".join(re.escape(t) for t in settings.topics)
    return f"(?:{names})$|(?:{settings.topic_pattern})" if names else settings.topic_pattern


SCREEN_AHEAD = 2
"""Fetched batches that may wait for (or be in) the native screen while the loop fetches on."""

IN_HAND = 2
"""Batches in flight beyond the ``max_in_flight_batches`` that wait for the router: the one in
detection and the one being submitted."""


@dataclass(frozen=True)
class Screened:
    detection: Any
    """The detection set whose rules the screen applied."""
    results: dict[TopicPartition, ScreenResult]


def _run_screens(jobs: list[tuple[TopicPartition, list[Any], Screening]]) -> dict[TopicPartition, ScreenResult]:
    """Worker-thread body: every partition's records through its screen."""
    out: dict[TopicPartition, ScreenResult] = {}
    for tp, records, (screen, time_fields, max_bytes, max_depth) in jobs:
        picked, latest, decisions = screen.decide_records(records, time_fields, max_bytes, max_depth)
        out[tp] = (picked, latest, decisions, screen.rules)
    return out


@dataclass(eq=False)
class Records:
    """One fetched batch as the pipeline core's :class:`~service.pipeline.core.Content`: records of
    several partitions, decoded (with their screen results) and captured by :class:`KafkaSource`."""

    source: KafkaSource
    batches: dict[TopicPartition, list[Any]]
    consumer: Any
    screened: Screened | None
    rebalances: int
    """The source's rebalance count when the batch was fetched: a batch of an earlier one is dropped."""
    session: int
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    """Offset after the batch's last record per partition, once decoded."""
    snapshots: dict[TopicPartition, partition_states.Snapshot] = field(default_factory=dict)
    """Detector state captured right after this batch, saved once the batch's offsets are committed."""
    held: dict[TopicPartition, int] = field(default_factory=dict)
    """The oldest offset per partition whose record still waits in the detector right after this batch."""

    def decode(self, current: Any) -> tuple[Decoded, int]:
        return self.source._decode(self, current)

    def detected(self) -> None:
        self.snapshots = self.source.partition_state.capture(self.offsets)
        self.held = self.source.partition_state.held(self.offsets)


class KafkaSource:
    """Consumes the configured topics in a consumer group until stopped; never loses an alert.

    Offsets move only through :class:`OffsetTracker` when a batch is acknowledged: after the
    router accepted every alert of the batch and the dead-letter topic has every reject. The
    source runs through a pipeline of its own (:meth:`run`), whose dead letters are the topic.
    """

    name = "kafka"

    def __init__(self, settings: KafkaSettings, events: EventSettings, detector: Detector, router: AlertSink,
                 *, shutdown_timeout_s: float = 30.0, dead_letters: DeadLetterWriter | None = None,
                 consumer_factory: Callable[..., Any] = AIOKafkaConsumer, state_store: Any | None = None,
                 snapshot_interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 instance_id: str | None = None, state_records: Any | None = None,
                 consumer: str = "input") -> None:
        self.settings = settings
        self.consumer_label = consumer
        """The ``consumer`` label of this source's gauges: ``input``, or ``keyed`` for stage 2 (its series
        appear when the source first runs, so a stage-1-only instance exports none for stage 2)."""
        self.name = "kafka" if consumer == "input" else f"kafka-{consumer}"
        """The ``source`` label of its counters: stage 2's state records are not input events."""
        self.events = events
        self.detector = detector
        self.tracker = OffsetTracker()
        self.dead_letters = dead_letters or DeadLetterWriter(settings)
        self.state_records = state_records
        """``state.scope: keyed`` stage 1: a :class:`~service.keyed.stage1.StateRecordProducer` (started
        and stopped with the consumer), told which partitions this source owns and which lag."""
        if state_records is not None:
            state_records.view = self.keyed_view
        self.pipeline = Pipeline(detector, router, self.dead_letters, screen=events.screen,
                                 state_records=state_records)
        self.shutdown_timeout_s = shutdown_timeout_s
        self._consumer_factory = consumer_factory
        self.state_store = state_store
        """``service.state_store.StateStore`` for per-partition detector state, or None (kept in memory only)."""
        self.partition_state = partition_states.PartitionState(detector, state_store, self.tracker, snapshot_interval_s, clock,
                                              instance_id)
        self._lag: dict[TopicPartition, int] = {}
        self._leaving: set[TopicPartition] = set()
        self._settling: set[TopicPartition] = set()
        """Partitions being taken over: paused until their state is restored."""
        self._processed: dict[TopicPartition, int] = {}
        """Offset after the last record detected per partition (acknowledged or not)."""
        self.connected = False
        self.assigned: set[TopicPartition] = set()
        self._specs: dict[str, InputSpec] = {}
        self._paused = False
        self._consumer: AIOKafkaConsumer | None = None
        self._session = 0
        """Counts consumer sessions: a late acknowledgement of an earlier one is ignored."""
        self._abandon = False
        self._in_flight: set[Records] = set()
        """Batches handed out and not acknowledged yet."""
        self._settled = asyncio.Event()
        self._settled.set()
        self._rebalances = 0
        self._screen_ahead = asyncio.Semaphore(SCREEN_AHEAD)
        self._screen_pool: ThreadPoolExecutor | None = None
        """The one worker thread the native screen runs in (while :meth:`batches` runs)."""

    @property
    def ready(self) -> bool:
        return self.connected and bool(self.assigned)

    @property
    def depth(self) -> int:
        """Batches between detection and acknowledgement (see :func:`drive`)."""
        return self.settings.max_in_flight_batches + IN_HAND

    def spec(self, topic: str) -> InputSpec:
        spec = self._specs.get(topic)
        if spec is None:
            spec = InputSpec.from_settings(f"kafka:{topic}", self.settings.topic_settings(topic),
                                           self.events.timestamp_fields)
            self._specs[topic] = spec
        return spec

    # -- lifecycle ---------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Drive this source through its pipeline until ``stop``, overlapped ``depth`` batches deep."""
        try:
            await drive(self, self.pipeline, stop, depth=self.depth)
        finally:
            self.pipeline.close()

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]:
        """Connect (retrying with backoff), yield fetched batches until ``stop``, then wait for the
        ones handed out, commit and close."""
        backoff = self.settings.connect_backoff_initial_s
        metrics.KAFKA_PARTITIONS_ASSIGNED.labels(consumer=self.consumer_label).set(len(self.assigned))
        metrics.KAFKA_PAUSED_PARTITIONS.labels(consumer=self.consumer_label).set(0)
        try:
            while not stop.is_set():
                consumer = self._consumer_factory(**consumer_kwargs(self.settings))
                try:
                    await consumer.start()
                    await self.dead_letters.start()
                    if self.state_records is not None:
                        await self.state_records.start()
                except Exception as exc:
                    metrics.KAFKA_CONNECT_ERRORS.inc()
                    log.warning("cannot reach Kafka; retrying", extra={"retry_in_s": round(backoff, 2),
                                                                       "error": f"{type(exc).__name__}: {exc}"})
                    await _quiet_stop(consumer)
                    if await stopped_within(stop, backoff):
                        return
                    backoff = min(backoff * 2, self.settings.connect_backoff_max_s)
                    continue
                backoff = self.settings.connect_backoff_initial_s
                self.connected = True
                self._consumer = consumer
                driven = True  # False once drive closed us: nothing acknowledges what is in flight any more
                session = self._consume(consumer, stop)
                try:
                    async for batch in session:
                        try:
                            yield batch
                        except GeneratorExit:
                            driven = False
                            raise
                except Exception:
                    log.exception("Kafka consume loop failed; reconnecting")
                    await stopped_within(stop, backoff)
                finally:
                    await session.aclose()
                    self.connected = False
                    await self._close(consumer, driven)
        finally:
            await self.dead_letters.stop()
            if self.state_records is not None:
                await self.state_records.stop()
            if self._screen_pool is not None:
                self._screen_pool.shutdown(wait=True)
            self._screen_pool = None

    async def _close(self, consumer: AIOKafkaConsumer, driven: bool) -> None:
        if driven:
            await self._finish_in_flight()
        self._abandon = True  # what is still in flight is the next owner's to read: not acknowledged
        self._in_flight.clear()
        self._settled.set()
        await commit(consumer, self.tracker)
        await self._handover(list(self.tracker.assigned))
        self._consumer = None
        await _quiet_stop(consumer)
        self.tracker.revoke(list(self.tracker.assigned))
        self._set_assigned(set())

    async def _finish_in_flight(self) -> None:
        try:
            await asyncio.wait_for(self._settled.wait(), timeout=self.shutdown_timeout_s)
        except TimeoutError:
            log.warning("in-flight alerts not accepted before shutdown; their offsets stay uncommitted")

    # -- consume loop ----------------------------------------------------------------
    async def _consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> AsyncGenerator[Batch, None]:
        """One consumer session's batches, screened, in fetch order.

        A batch fetched before a rebalance began is dropped: nothing of it was acknowledged,
        and the partitions' owners (this instance among them) re-read it from the committed
        offset.
        """
        listener = Rebalance(self.tracker, self._drain, lambda: consumer, self._set_assigned,
                             handover=self._handover, takeover=lambda tps: self._take_over(consumer, tps))
        pattern = subscription_pattern(self.settings)
        if pattern is not None:
            consumer.subscribe(pattern=pattern, listener=listener)
        else:
            consumer.subscribe(topics=list(self.settings.topics), listener=listener)
        self._session += 1
        self._abandon = False
        self._screen_ahead = asyncio.Semaphore(SCREEN_AHEAD)
        fetched: asyncio.Queue[tuple[dict[TopicPartition, list[Any]], int, Any] | None] = asyncio.Queue()
        committer = asyncio.create_task(self._commit_loop(consumer, stop), name="kafka-committer")
        fetcher = asyncio.create_task(self._fetch_loop(consumer, stop, fetched, committer), name="kafka-fetcher")
        try:
            while (entry := await fetched.get()) is not None:
                batches, rebalances, screening = entry
                try:
                    screened = await screening
                finally:
                    self._screen_ahead.release()
                if screened is None or rebalances != self._rebalances:
                    continue
                content = Records(self, batches, consumer, screened, rebalances, self._session)
                self._in_flight.add(content)
                self._settled.clear()
                yield Batch((), None, partial(self._ack, content), partial(self._retry, content), content)
            fetcher.result()  # surface a crash: the consumer reconnects, nothing stops silently
        finally:
            for task in (fetcher, committer):
                task.cancel()
            await asyncio.gather(fetcher, committer, return_exceptions=True)

    async def _fetch_loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event, fetched: asyncio.Queue[Any],
                          committer: asyncio.Task[None]) -> None:
        max_batch = self.settings.max_batch
        try:
            while not stop.is_set():
                if committer.done():
                    committer.result()  # surface a crash: the consumer reconnects, nothing stops silently
                self._backpressure(consumer)
                batches = await consumer.getmany(timeout_ms=200, max_records=max_batch)
                if batches:
                    # screened in the worker thread while the next batch is fetched; at most
                    # SCREEN_AHEAD batches wait there (the fetcher's prefetch bounds the rest)
                    await self._screen_ahead.acquire()
                    screening = asyncio.ensure_future(self._screen_batches(batches))
                    fetched.put_nowait((batches, self._rebalances, screening))
        finally:
            fetched.put_nowait(None)  # what was fetched is handed out first, in order

    async def _screen_batches(self, batches: dict[TopicPartition, list[Any]]) -> Screened | None:
        """Run the native screen over the fetched records in a worker thread (it releases the GIL,
        so the event loop goes on fetching meanwhile). None: a rebalance happened meanwhile, and the
        batch is dropped uncommitted (its partitions' owners re-read it from the committed offset).
        """
        current = self.detector.current
        jobs: list[tuple[TopicPartition, list[Any], Screening]] = []
        for tp, records in batches.items():
            screening = self._screen(self.spec(tp.topic), current)
            if screening is not None and records:
                jobs.append((tp, records, screening))
        if not jobs:
            return Screened(current, {})
        rebalances = self._rebalances
        if self._screen_pool is None:
            self._screen_pool = ThreadPoolExecutor(1, thread_name_prefix="pipesentry-screen")
        results = await asyncio.get_running_loop().run_in_executor(self._screen_pool, _run_screens, jobs)
        if rebalances != self._rebalances:
            return None
        return Screened(current, results)

    def _process(self, batches: dict[TopicPartition, list[Any]], consumer: AIOKafkaConsumer,
                 screened: Screened | None = None) -> IngestResult:
        """One fetched batch through the pipeline's detection step, in the calling thread."""
        return self.pipeline.detect_now(self.name, (), None,
                                        Records(self, batches, consumer, screened, self._rebalances, self._session))

    def _decode(self, batch: Records, current: Any) -> tuple[Decoded, int]:
        """Decode one fetched batch, in the detection thread, under the detector's lock (the
        ruleset cannot change midway); a batch fetched before a rebalance began gives nothing.

        Screen results are used only if the ruleset they were made for is still the current one.
        """
        decoded = Decoded()
        if batch.rebalances != self._rebalances:
            return decoded, 0
        offsets = batch.offsets
        consumer = batch.consumer
        leaving = self._leaving
        screened = batch.screened
        results = screened.results if screened is not None and screened.detection is current else {}
        max_bytes = self.settings.max_message_bytes
        events = 0
        for tp, records in batch.batches.items():
            if not records or tp in leaving:
                continue
            spec = self.spec(tp.topic)
            self.partition_state.observe(tp, records[0].offset)
            result = results.get(tp)
            if result is None:
                before = len(decoded.items)
                decode_batch(records, spec, decoded, max_bytes=max_bytes, partition=(tp.topic, tp.partition))
                events += len(decoded.items) - before
            else:
                metrics.EVENTS_SCREENED.labels(self.name).inc(len(records) - len(result[0]))
                events += decode_screened(result, len(records), spec, decoded, current.stateful,
                                          *_picked(tp, records), max_bytes, (tp.topic, tp.partition))
            next_offset = records[-1].offset + 1
            offsets[tp] = next_offset
            self._processed[tp] = next_offset
            high = consumer.highwater(tp)
            if high is not None:
                self._lag[tp] = max(high - next_offset, 0)
                metrics.KAFKA_CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(self._lag[tp])
        return decoded, events

    def _screen(self, spec: InputSpec, current: Any) -> Screening | None:
        """How to screen a topic's records (see :func:`screening_for`), or None: decode them all."""
        if not self.events.screen:
            return None
        return screening_for(spec, current, self.settings.max_message_bytes)

    def busy_scopes(self) -> set[tuple[str, int] | None]:
        """Scopes with records left to read: their event time must not be moved on by the heartbeat.

        With ``state.scope: instance`` every partition feeds the local scope (``None``).
        """
        busy: set[tuple[str, int] | None] = {(tp.topic, tp.partition) for tp, lag in self._lag.items() if lag > 0}
        if busy and not self.detector.per_partition:
            return {None}
        return busy

    async def keyed_view(self) -> Any:
        """``state.scope: keyed``: this source's partitions as stage 1's watermark needs them
        (a :class:`~service.keyed.stage1.InputView`)."""
        from service.keyed.stage1 import InputView

        view = InputView()
        consumer = self._consumer
        if consumer is None:
            return view
        for tp in self.assigned:
            key = (tp.topic, tp.partition)
            view.owned.add(key)
            high = consumer.highwater(tp)
            if self._lag.get(tp, 0) > 0:
                view.busy.add(key)
            elif high is not None and tp not in self._settling:
                try:
                    position = self._processed.get(tp)
                    if position is None:
                        position = await asyncio.wait_for(consumer.position(tp), timeout=1.0)
                except Exception:  # revoked meanwhile, or not known yet: not caught up
                    continue
                if position >= high:
                    view.caught_up.add(key)
        for topic in consumer.subscription() or ():
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                view.counts[topic] = len(partitions)
        return view

    def _backpressure(self, consumer: AIOKafkaConsumer) -> None:
        in_flight = len(self._in_flight)
        full = in_flight >= self.settings.max_in_flight_batches + IN_HAND
        assignment = consumer.assignment()
        if full:
            paused = consumer.paused()
            to_pause = [tp for tp in assignment if tp not in paused]
            if to_pause:
                consumer.pause(*to_pause)
            if not self._paused:
                log.info("router is slow: partitions paused", extra={"in_flight": in_flight})
            self._paused = True
            metrics.KAFKA_PAUSED_PARTITIONS.labels(consumer=self.consumer_label).set(len(assignment))
        elif self._paused:
            consumer.resume(*(set(consumer.paused()) - self._settling))
            self._paused = False
            metrics.KAFKA_PAUSED_PARTITIONS.labels(consumer=self.consumer_label).set(0)

    # -- acknowledge and commit ----------------------------------------------------------
    async def _ack(self, batch: Records, result: IngestResult) -> None:
        """The batch's alerts and rejects are accepted: its offsets may be committed, its snapshots saved.

        Not after its session ended or gave up in-flight batches: a later batch must not be
        committed past one that was not accepted.
        """
        try:
            if batch.session == self._session and not self._abandon and batch.offsets:
                self.tracker.ack(batch.offsets, batch.held)
                if batch.snapshots:
                    await self.partition_state.persist(self._consumer, batch.snapshots, self._leaving)
        finally:
            self._in_flight.discard(batch)
            if not self._in_flight:
                self._settled.set()

    def _retry(self, batch: Records, error: Exception) -> bool:
        """Submit a refused batch again, unless its session is over (the next owner re-reads it)."""
        return batch.session == self._session and not self._abandon

    async def _commit_loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.settings.commit_interval_s)
            if await commit(consumer, self.tracker):
                await self.partition_state.snapshot_idle(self._processed, self._leaving)

    async def _drain(self, leaving: set[TopicPartition] | None = None) -> None:
        """Wait (bounded) until every batch handed out is acknowledged: called before partitions leave.

        A batch not detected yet gives nothing (see :meth:`_decode`), and records of ``leaving``
        partitions are not processed from now on (the next owner reads them), so the state
        handed over matches the committed offset exactly.
        """
        self._rebalances += 1  # a batch being screened or not yet detected is dropped
        if leaving:
            self._leaving |= leaving
        try:
            await asyncio.wait_for(self._settled.wait(), timeout=min(self.shutdown_timeout_s, 20.0))
        except TimeoutError:
            log.warning("rebalance: in-flight batches not accepted in time; the next owner re-reads them")

    # -- per-partition detector state ---------------------------------------------------
    async def _handover(self, partitions: list[TopicPartition]) -> None:
        """Partitions leave: save their detector state (see :class:`PartitionState`) and forget them."""
        for tp in partitions:
            self._leaving.discard(tp)
            self._lag.pop(tp, None)
            await self.partition_state.hand_over(tp, self._processed.pop(tp, None))

    async def _take_over(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Restore new partitions' state while they are paused (see :class:`PartitionState`).

        aiokafka hands out records of a new assignment while this listener still runs (its
        fetcher has positions before the listener is called): detected then, they would meet
        the engines before the saved state is restored (and before the rewind), and a batch
        dropped at the end of the rebalance would never be read again. Paused partitions
        return nothing; they are resumed once their state and position are settled.
        """
        self._settling.update(partitions)
        consumer.pause(*partitions)
        try:
            await self.partition_state.take_over(consumer, partitions)
        finally:
            self._settling.difference_update(partitions)
            if not self._paused:  # else the backpressure resumes them with the others
                try:
                    consumer.resume(*partitions)
                except Exception:  # revoked or closed meanwhile: nothing to resume
                    log.debug("cannot resume partitions after takeover", exc_info=True)

    def _set_assigned(self, assigned: set[TopicPartition]) -> None:
        self._rebalances += 1
        self.assigned = assigned
        metrics.KAFKA_PARTITIONS_ASSIGNED.labels(consumer=self.consumer_label).set(len(assigned))


def _picked(tp: TopicPartition, records: Sequence[Any]) -> tuple[
        Callable[[Sequence[int]], list[Any]], Callable[[int], tuple[str, int, int]]]:
    """For :func:`decode_screened`: the records at the screen's picked positions, and a cleared
    run's origin."""
    def records_at(positions: Sequence[int]) -> list[Any]:
        return [records[position] for position in positions]

    def origin_at(position: int) -> tuple[str, int, int]:
        return tp.topic, tp.partition, records[position].offset

    return records_at, origin_at


async def _quiet_stop(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.stop()
    except Exception:
        log.debug("error while stopping the Kafka consumer", exc_info=True)
