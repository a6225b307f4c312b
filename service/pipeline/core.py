"""The pipeline core every input runs through: screen -> decode -> detect -> submit.

:meth:`Pipeline.ingest` takes one batch of raw messages of one input and returns
once the alert router has accepted its alerts (and the dead letters its rejects),
or raises: the caller (:func:`service.pipeline.source.drive`, the HTTP route) then
acknowledges the batch or retries it. JSON messages meet the native screen first
(:mod:`service.screening`); what it cannot clear is decoded by
:func:`~service.sources.base.decode_batch` and detected in a worker thread under
the detector's lock, so a slow rule or a hostile event delays its own batch, never
the event loop. ``pipesentry eval`` runs this same core over a file (see
:mod:`service.pipeline.replay`).

The two halves are steps of their own, :meth:`Pipeline.detect` and :meth:`Pipeline.submit`, so
:func:`~service.pipeline.source.drive` can detect one batch while the one before it is being
submitted (the Kafka input). A batch whose messages the core cannot screen and decode itself
(Kafka's records of several partitions, screened ahead in their own thread) brings its
:class:`Content`; everything after the decode is the same.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from detectors.alert import Alert
from service import metrics
from service.detection import Detector
from service.screening import decode_screened, screening_for
from service.sources.base import Decoded, InputSpec, LazyMessages, RawMessage, Rejected, decode_batch


class AlertSink(Protocol):
    """Where alerts go: the alert router in the service, a collector in ``eval``."""

    async def submit(self, alerts: Sequence[Alert]) -> Any: ...


class DeadLetters(Protocol):
    async def send(self, rejected: Sequence[Rejected]) -> None: ...


class StateRecords(Protocol):
    """Where ``state.scope: keyed`` sends a batch's state records (stage 1: the internal topic).

    ``progress``: the newest event time per Kafka partition the batch covered."""

    async def send(self, records: Sequence[Any], progress: dict[tuple[str, int], float]) -> None: ...


class Content(Protocol):
    """A batch that turns into detector items itself; both calls run in the detection thread
    under the detector's lock, one right before and one right after the detectors see the items."""

    def decode(self, current: Any) -> tuple[Decoded, int]:
        """Items for the detectors (and rejects) under the detection set ``current``, and the
        number of events read (screen-cleared ones included)."""
        ...

    def detected(self) -> None:
        """The detectors have seen the items (a source may capture their state now)."""
        ...


@dataclass
class IngestResult:
    accepted: int = 0
    """Events read (screen-cleared ones included)."""
    rejected: list[Rejected] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    started: float = 0.0
    """``perf_counter`` when detection started (the latency metric runs from there)."""
    dead_lettered: bool = False
    """The rejects are with the dead letters: a retried submit does not send them again."""
    records: list[Any] = field(default_factory=list)
    """``state.scope: keyed``: the batch's state records, sent before its alerts are submitted."""
    progress: dict[tuple[str, int], float] | None = None
    """``state.scope: keyed``: newest event time per partition of the batch (None: not keyed)."""
    records_sent: bool = False


class MixedSpecs:
    """A batch of messages read with several specs (one log source per message: ``pipesentry eval
    --logsource-field`` over a mixed file), as one :class:`Content`: one detection call for the
    whole batch instead of one batch per change of log source.

    Each spec's messages are screened and decoded together. With stateful detectors (they see
    events and cleared runs in input order) the batch is cut into runs of consecutive messages of
    one spec instead, each screened and decoded in turn: the detectors then see exactly what
    one batch per run would have shown them. Without them, the order in which events are
    detected changes no match; alerts and rejects come out grouped by spec (the caller puts
    them back in message order if it reports by position).
    """

    def __init__(self, pipeline: Pipeline, source: str, messages: Sequence[RawMessage],
                 specs: Sequence[InputSpec]) -> None:
        assert len(messages) == len(specs), "one spec per message"
        self.pipeline = pipeline
        self.source = source
        self.messages = messages
        self.specs = specs

    def parts(self, stateful: bool) -> list[tuple[InputSpec, list[RawMessage]]]:
        """The (spec, messages) parts to screen and decode in turn (see the class doc)."""
        parts: list[tuple[InputSpec, list[RawMessage]]] = []
        if stateful:
            for message, spec in zip(self.messages, self.specs, strict=True):
                if parts and parts[-1][0] is spec:
                    parts[-1][1].append(message)
                else:
                    parts.append((spec, [message]))
            return parts
        groups: dict[int, tuple[InputSpec, list[RawMessage]]] = {}
        for message, spec in zip(self.messages, self.specs, strict=True):
            group = groups.get(id(spec))
            if group is None:
                group = groups[id(spec)] = (spec, [])
            group[1].append(message)
        return list(groups.values())

    def decode(self, current: Any) -> tuple[Decoded, int]:
        decoded = Decoded()
        events = 0
        for spec, messages in self.parts(bool(current.stateful)):
            part, count = self.pipeline.decode_messages(self.source, messages, spec)
            decoded.items.extend(part.items)
            decoded.rejected.extend(part.rejected)
            events += count
        return decoded, events

    def detected(self) -> None:
        return None


class Pipeline:
    """Screen, decode, detect and submit one batch at a time; returns once alerts are accepted (or raises)."""

    def __init__(self, detector: Detector, router: AlertSink, dead_letters: DeadLetters | None = None, *,
                 screen: bool = True, state_records: StateRecords | None = None, inline: bool = False,
                 alert_events: bool = True) -> None:
        self.detector = detector
        self.alert_events = alert_events
        """Alerts carry their event and its time. False (``eval``, which prints neither): with stateless
        detection, an event whose rules the screen decided, each matching one showing no field or the
        fields the decision shows, is not decoded (its alerts, ids and matches the same, carry an empty
        event at the time it was read)."""
        self.inline = inline
        """Detect in the calling thread: an offline replay has no event loop to keep free, and
        handing each batch to a thread and back cost it ~15 % more CPU."""
        self.state_records = state_records
        """``state.scope: keyed`` stage 1: the batch's state records go there (acknowledged) first."""
        self.router = router
        self.dead_letters = dead_letters
        self.screen = screen
        """Clear JSON messages no rule can match with the native screen (``events.screen``)."""
        self._pool: ThreadPoolExecutor | None = None
        """One thread for every input's batches: they queue for it (and the detector's lock) in
        arrival order instead of parking one pool thread each."""

    def close(self) -> None:
        """Let the detection thread go (a later batch starts a new one)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    async def ingest(self, source: str, messages: Sequence[RawMessage], spec: InputSpec) -> IngestResult:
        """Both steps: detect, then submit."""
        result = await self.detect(source, messages, spec)
        await self.submit(source, result)
        return result

    async def detect(self, source: str, messages: Sequence[RawMessage], spec: InputSpec | None,
                     content: Content | None = None) -> IngestResult:
        """Screen, decode and detect one batch in the detection thread (``content``: the batch
        decodes itself, ``messages`` and ``spec`` are unused)."""
        if self.inline:
            return self.detect_now(source, messages, spec, content)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="pipesentry-detect")
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self.detect_now, source, messages, spec, content)

    def detect_now(self, source: str, messages: Sequence[RawMessage], spec: InputSpec | None,
                   content: Content | None = None) -> IngestResult:
        """:meth:`detect`'s body, in the calling thread: a slow rule never stalls the event loop.

        The detector's lock spans the screen and the detection, so both see the same rule set.
        """
        started = time.perf_counter()
        with self.detector.exclusive():
            if content is not None:
                decoded, events = content.decode(self.detector.current)
            else:
                assert spec is not None, "a batch without content has a spec"
                decoded, events = self.decode_messages(source, messages, spec)
            alerts = self.detector.process(decoded.items) if decoded.items else []
            records, progress = self.detector.take_records() if self.state_records is not None else ([], None)
            if content is not None:
                content.detected()
        for reason, count in Counter(rejected.reason for rejected in decoded.rejected).items():
            metrics.MESSAGES_REJECTED.labels(source, reason).inc(count)
        metrics.EVENTS.labels(source).inc(events)
        return IngestResult(events, decoded.rejected, alerts, started, records=records, progress=progress)

    async def submit(self, source: str, result: IngestResult) -> None:
        """Hand a detected batch on: rejects to the dead letters (once), then alerts to the router.
        Returns once both accepted; raises otherwise (the caller retries or gives up)."""
        if result.rejected and self.dead_letters is not None and not result.dead_lettered:
            await self.dead_letters.send(result.rejected)
        result.dead_lettered = True
        if self.state_records is not None and result.progress is not None and not result.records_sent:
            await self.state_records.send(result.records, result.progress)  # acknowledged (acks=all)
            result.records_sent = True
        if result.alerts:
            await self.router.submit(result.alerts)
        metrics.DETECTION_LATENCY.observe(time.perf_counter() - result.started)

    def decode_messages(self, source: str, messages: Sequence[RawMessage], spec: InputSpec) -> tuple[Decoded, int]:
        """Items for the detector and the number of events read (screen-cleared ones included).

        Messages the screen clears are not decoded; with stateful detectors each run of them is
        one :class:`Tick` whose origin is the run's last message. Their fallback time is read to
        the millisecond (the screen's unit), the only way a tick may differ from the events' own.
        """
        screening = screening_for(spec, self.detector.current) if self.screen and messages else None
        if screening is None:
            decoded = decode_batch(messages, spec)
            return decoded, len(decoded.items)
        screen, time_fields, max_bytes, max_depth = screening
        timed = time_fields is not None
        messages_at: Callable[[Sequence[int]], Sequence[RawMessage]]
        if type(messages) is LazyMessages:  # read as they are: only the picked messages are built
            values: list[Any] = messages.values
            times = messages.times
            messages_at = messages.at
        else:
            messages_at = partial(_at, messages)
            values = [message.value for message in messages]
            times = [message.fallback_time for message in messages] if timed else []
        fallbacks = [int(ts * 1000) for ts in times] if timed else []
        picked, latest, decisions = screen.decide(values, fallbacks, time_fields, max_bytes, max_depth)
        result = (picked, latest, decisions, screen.rules)
        metrics.EVENTS_SCREENED.labels(source).inc(len(messages) - len(picked))
        decoded = Decoded()
        events = decode_screened(result, len(messages), spec, decoded, timed,
                                 messages_at, lambda position: messages[position].item_origin,
                                 lean=not self.alert_events and not timed)
        return decoded, events


def _at(messages: Sequence[RawMessage], positions: Sequence[int]) -> list[RawMessage]:
    return [messages[position] for position in positions]
