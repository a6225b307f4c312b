"""The pipeline core over a finite file: what ``pipesentry eval`` and ``pipesentry anomaly replay`` run.

:class:`LineFileSource` reads a file (or stdin) once, from its first line to its last, and
gives every line the origin the live inputs give it: a file read through ``files:`` with
``start_at: beginning`` (``path:inode:byte offset:line hash``), stdin by a hash of the line.
Run through the same :class:`~service.pipeline.core.Pipeline` (screen, decoder, detector,
settings) into a :class:`Collector`, a file therefore raises the same alerts, with the same
ids, in ``eval`` and ``anomaly replay`` (the backtests) as in ``pipesentry run``.
:func:`replay_file` is that run, shared by both commands.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from hashlib import blake2b
from itertools import chain
from typing import IO, Any, Protocol

from detectors.alert import Alert
from detectors.model import LogSource, Origin, keyed_origin
from service.detection import DetectionSet, Detector, StateScope
from service.pipeline.core import Content, IngestResult, MixedSpecs, Pipeline
from service.pipeline.source import Batch, drive
from service.sources.base import InputSpec, LazyMessages, RawMessage, Rejected, raw_messages
from service.sources.filetail import line_origin
from service.sources.http import CONTENT_DIGEST

BATCH_LINES = 1000


class Collector:
    """An alert router that keeps what it is given, in order (``eval``'s sink)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    async def submit(self, alerts: Sequence[Alert]) -> None:
        self.alerts.extend(alerts)


Seen = dict[int, tuple[int, Origin]]
"""id of an origin built in a batch -> (its line, the origin): alerts carry the origin object."""


def _stdin_origin(seen: Seen, number: int, at: int, line: bytes) -> Origin:
    """A stdin line's origin, :func:`~service.sources.http.content_origin` inlined (once per event),
    noted in ``seen`` (``at`` unused: a stdin line is keyed by its content alone)."""
    del at
    origin = keyed_origin("stdin", blake2b(line, digest_size=CONTENT_DIGEST).hexdigest())
    seen[id(origin)] = (number, origin)
    return origin


def _file_origin(prefix: str, seen: Seen, number: int, at: int, line: bytes) -> Origin:
    """A file line's origin (see :func:`~service.sources.filetail.line_origin`), noted in ``seen``."""
    origin = line_origin(prefix, at, line)
    seen[id(origin)] = (number, origin)
    return origin


Outcome = Callable[[list[tuple[int, Alert]], list[tuple[int, Rejected]]], None]
"""Told after each accepted batch: its alerts and rejects, each with its line number."""


class _Counter(Protocol):
    lines: int


READ_BYTES = 65536
"""How much :func:`line_blocks` asks the stream for at a time."""


def line_blocks(stream: IO[bytes], block: int = READ_BYTES) -> Iterator[list[bytes]]:
    """The lines of ``stream`` (blank ones included; without their ``\\n``, a ``\\r`` before it
    kept), a list of them per block read.

    Read ``block`` bytes at a time and cut there: iterating the stream line by line cost about a
    third more per line. ``read1`` where the stream has it, so a line piped in slowly is handed on
    once whole, as line iteration did; a line spanning blocks is pieced together once."""
    read = getattr(stream, "read1", None) or stream.read
    pending: list[bytes] = []  # the start of a line that spans blocks
    while True:
        data = read(block)
        if not data:
            break
        if data.find(b"\n") < 0:
            pending.append(data)
            continue
        lines = data.split(b"\n")
        if pending:
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending.clear()
        tail = lines.pop()  # after the last newline: the start of the next line (maybe empty)
        if tail:
            pending.append(tail)
        yield lines
    if pending:  # the last line, without a newline
        yield [b"".join(pending)]


def numbered_lines(stream: IO[bytes], counter: _Counter | None = None,
                   block: int = READ_BYTES) -> Iterator[tuple[int, int, bytes]]:
    """``(line number, byte offset, line)`` of every non-blank line, cut as the ``files:`` follower
    cuts them (``\\n`` or ``\\r\\n``); ``counter.lines`` follows the lines read, blank ones included.
    (:meth:`LineFileSource.batches` does the same inline.)"""
    number = at = 0
    for raw in chain.from_iterable(line_blocks(stream, block)):
        number += 1
        start = at
        at += len(raw) + 1
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if (line and line[0] > 32) or line.strip():  # a first byte above space: not blank, strip spared
            if counter is not None:
                counter.lines = number
            yield number, start, line
    if counter is not None:
        counter.lines = number


def reject_text(reject: Rejected) -> str:
    """How a line the decoder rejected is reported (``line N: <this>``)."""
    if reject.reason == "not_object":
        return f"not a JSON object ({reject.error})"
    return reject.error


class LineFileSource:
    """A finite stream of lines as a :class:`~service.pipeline.source.Source`.

    ``path``: the file's name as the ``files:`` input would be configured (its origins are the
    follower's); None reads ``stream`` as stdin. ``spec_of``: the spec of a line (e.g. by a log
    source field). A batch holds up to ``batch_lines`` lines whatever their specs (see
    :class:`~service.pipeline.core.MixedSpecs`), so a file that mixes log sources line by line is
    still read in large batches.
    ``received_at``: the time a line (by number) counts as read at, the event time of an event
    without one (None, or no hook: the clock when the line's block was read, as the live inputs
    read theirs).
    """

    name = "file"

    def __init__(self, stream: IO[bytes], spec: InputSpec, outcome: Outcome, *, path: str | None = None,
                 spec_of: Callable[[bytes], InputSpec] | None = None, batch_lines: int = BATCH_LINES,
                 received_at: Callable[[int], float | None] | None = None) -> None:
        self._stream = stream
        self._received_at = received_at
        self._spec = spec
        self._outcome = outcome
        self._path = path
        self._spec_of = spec_of
        self._batch_lines = batch_lines
        self.name = "stdin" if path is None else "file"
        self.lines = 0
        """Lines read (blank ones included)."""
        self.events = 0
        """Events accepted by the pipeline (screen-cleared ones included)."""
        self.last_line = 0
        """The last line handed on: alerts decided at the end of the input are reported on it."""
        self._last: LazyMessages | None = None
        self.mixed: Callable[[Sequence[RawMessage], list[InputSpec]], Content] | None = None
        """With ``spec_of``: makes one batch's content out of messages of several specs (set by
        :func:`replay_file`: :class:`~service.pipeline.core.MixedSpecs`); None: a batch ends at
        every change of spec."""

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]:
        seen: Seen = {}
        origin_of: Callable[[Seen, int, int, bytes], Origin] = _stdin_origin
        if self._path is not None:
            origin_of = partial(_file_origin, f"{self._path}:{os.fstat(self._stream.fileno()).st_ino}")
        # a batch is its lines, kept as bytes with their numbers, offsets and read times: a message
        # (and its origin) is built only for a line the screen picks (see LazyMessages)
        lines: list[bytes] = []
        numbers: list[int] = []
        starts: list[int] = []
        times: list[float] = []
        specs: list[InputSpec] = []
        spec = self._spec
        mixed = self.mixed
        spec_of = self._spec_of
        received_at = self._received_at
        batch_lines = self._batch_lines
        check = True  # look at ``stop`` after the next line: it can only be set while a batch is out (a yield)
        number = at = 0
        for block in line_blocks(self._stream):  # numbered_lines, inline
            read = time.time()  # the fallback time of an event without one: when its block was read
            for raw in block:
                number += 1
                start = at
                at += len(raw) + 1
                line = raw[:-1] if raw.endswith(b"\r") else raw
                if not ((line and line[0] > 32) or line.strip()):  # blank (a first byte above space: strip spared)
                    continue
                line_spec = spec_of(line) if spec_of is not None else spec
                if lines and (len(lines) >= batch_lines or (mixed is None and line_spec is not spec)):
                    self.lines = number
                    yield self._batch(LazyMessages(lines, times, _builder(origin_of, seen, lines, numbers, starts, times)),
                                      numbers, spec, seen, specs)
                    lines, numbers, starts, times, specs = [], [], [], [], []
                    check = True
                spec = line_spec
                if mixed is not None:
                    specs.append(spec)
                if received_at is None:
                    times.append(read)
                else:
                    given = received_at(number)
                    times.append(read if given is None else given)
                lines.append(line)
                numbers.append(number)
                starts.append(start)
                if check:
                    check = False
                    if stop.is_set():
                        break
            else:
                continue
            break  # stopped
        self.lines = number
        if lines:
            yield self._batch(LazyMessages(lines, times, _builder(origin_of, seen, lines, numbers, starts, times)),
                              numbers, spec, seen, specs)

    def _batch(self, messages: LazyMessages, numbers: list[int], spec: InputSpec,
               seen: Seen, specs: list[InputSpec]) -> Batch:
        content = None
        if self.mixed is not None and any(other is not spec for other in specs):
            content = self.mixed(messages, specs)  # several log sources: one batch all the same

        async def ack(result: IngestResult) -> None:
            last = numbers[-1]
            unseen = (last, None)
            alerts = [(seen.get(id(alert.origin), unseen)[0], alert) for alert in result.alerts]
            rejects: list[tuple[int, Rejected]] = []
            if result.rejected:  # a rejected message was built
                index = {id(message): numbers[position] for position, message in messages.built().items()}
                rejects = [(index.get(id(reject.message), last), reject) for reject in result.rejected]
            if content is not None:  # detected spec by spec: back in line order (stable: rule order kept)
                alerts.sort(key=_line)
                rejects.sort(key=_line)
            self.last_line = last
            self.events += result.accepted
            self._last = messages
            seen.clear()
            self._outcome(alerts, rejects)

        return Batch(messages, spec, ack, content=content)

    @property
    def last_origin(self) -> Origin | None:
        """The origin of the last line handed on (None before the first batch is accepted)."""
        return self._last[-1].origin if self._last is not None else None


def _builder(origin_of: Callable[[Seen, int, int, bytes], Origin], seen: Seen, lines: list[bytes],
             numbers: list[int], starts: list[int], times: list[float]) -> Callable[[Sequence[int]], list[RawMessage]]:
    """How :class:`LazyMessages` builds a batch's messages at some positions: each with its origin,
    noted in ``seen`` (a built message is decoded or rejected: either needs the origin)."""
    if origin_of is _stdin_origin:
        def build(positions: Sequence[int]) -> list[RawMessage]:  # _stdin_origin inlined (once per event)
            origins = []
            for position in positions:
                origin = keyed_origin("stdin", blake2b(lines[position], digest_size=CONTENT_DIGEST).hexdigest())
                seen[id(origin)] = (numbers[position], origin)
                origins.append(origin)
            return raw_messages([lines[p] for p in positions], origins, [times[p] for p in positions])
    else:
        def build(positions: Sequence[int]) -> list[RawMessage]:
            origins = [origin_of(seen, numbers[p], starts[p], lines[p]) for p in positions]
            return raw_messages([lines[p] for p in positions], origins, [times[p] for p in positions])
    return build


def _line(pair: tuple[int, Any]) -> int:
    return pair[0]


def logsource_spec(field: str, base: InputSpec) -> Callable[[bytes], InputSpec]:
    """The spec of a line whose log source is in ``field`` (an object with product/category/service
    or a ``product=X,...`` string); lines without one keep ``base``'s."""
    import orjson

    specs: dict[LogSource | None, InputSpec] = {base.logsource: base}

    def spec_of(line: bytes) -> InputSpec:
        try:
            event: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            return base
        logsource = event_logsource(event, field, base.logsource) if isinstance(event, dict) else base.logsource
        spec = specs.get(logsource)
        if spec is None:
            spec = specs[logsource] = InputSpec(base.name, base.decoder, logsource, base.time_fields)
        return spec

    return spec_of


def event_logsource(event: dict[str, Any], field: str, default: LogSource | None) -> LogSource | None:
    """The log source an event carries in ``field`` (object or ``product=X,...`` string), else ``default``."""
    value = event.get(field)
    if isinstance(value, dict):
        parts = {k: value.get(k) for k in ("product", "category", "service")}
        if any(isinstance(v, str) for v in parts.values()):
            return LogSource(**{k: v if isinstance(v, str) else None for k, v in parts.items()})
    elif isinstance(value, str):
        try:
            return LogSource.parse(value)
        except ValueError:
            pass
    return default


@dataclass
class Replayed:
    """What :func:`replay_file` read and raised."""

    detector: Detector
    """The detector the file went through: its engines hold the state at the end of the input."""
    source: LineFileSource
    alerts: list[tuple[int, Alert]] = field(default_factory=list)
    """Every alert with its line, in input order."""
    bad_lines: int = 0

    @property
    def lines(self) -> int:
        return self.source.lines

    @property
    def events(self) -> int:
        return self.source.events


def replay_file(stream: IO[bytes], spec: InputSpec, detection: DetectionSet, *, path: str | None,
                on_reject: Callable[[int, Rejected], None], spec_of: Callable[[bytes], InputSpec] | None = None,
                screen: bool = True, scope: StateScope = "partition",
                received_at: Callable[[int], float | None] | None = None, mixed_batches: bool = True,
                on_alerts: Callable[[list[tuple[int, Alert]]], None] | None = None,
                alert_events: bool = True) -> Replayed:
    """Run ``stream`` once through the pipeline core (screen, decode, detect) with ``detection``.

    The one offline driver of the core, so a backtest reads, times and identifies events as the
    live input named by ``path`` (None: stdin) would. ``on_reject`` hears of each rejected line as
    it is read. The stateful engines of ``detection`` are used in place (restore a snapshot into
    them first to continue a stream). ``mixed_batches`` False: a batch ends at every change of
    ``spec_of``'s spec (what it did before batches could mix them; kept for the tests comparing both).
    ``on_alerts``: hears each accepted batch's alerts (with their lines, in input order) instead of
    :attr:`Replayed.alerts` keeping them, so a caller that keeps less (``eval``'s records) lets the
    alerts and their events go batch by batch. ``alert_events`` False: the caller reads no alert's
    event or time (see :attr:`~service.pipeline.core.Pipeline.alert_events`).
    """
    replayed: Replayed

    def outcome(alerts: list[tuple[int, Alert]], rejects: list[tuple[int, Rejected]]) -> None:
        for line, reject in rejects:
            on_reject(line, reject)
        replayed.bad_lines += len(rejects)
        if on_alerts is not None:
            on_alerts(alerts)
        else:
            replayed.alerts.extend(alerts)

    source = LineFileSource(stream, spec, outcome, path=path, spec_of=spec_of, received_at=received_at)
    detector = Detector(detection, scope=scope)
    replayed = Replayed(detector, source)
    pipeline = Pipeline(detector, Collector(), screen=screen, inline=True,  # nothing else runs on its loop
                        alert_events=alert_events)
    if spec_of is not None and mixed_batches:
        source.mixed = partial(MixedSpecs, pipeline, source.name)
    asyncio.run(drive(source, pipeline, asyncio.Event()))
    return replayed
