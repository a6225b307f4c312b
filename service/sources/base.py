"""Types every input shares, and the decode step that turns raw messages into detector items.

An input hands over raw messages; :func:`decode_batch` runs the input's decoder
on each, keeping the rejects (with reason and original bytes) apart so the
input can dead-letter or count them. Event time is looked up lazily by the
detector (only when a stateful engine or an alert needs it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, overload

from detectors.event import event_time
from detectors.model import LogSource, Origin, OriginRef
from service.decoders import DecodeError, Decoder, build_decoder


@dataclass(frozen=True, slots=True)
class InputSpec:
    """How one input (or one Kafka topic) is read: decoder, log source and event time fields."""

    name: str
    decoder: Decoder
    logsource: LogSource | None
    """``None`` (no log source configured): every rule applies, whatever its logsource."""
    time_fields: tuple[str, ...]

    @classmethod
    def from_settings(cls, name: str, settings: Any, default_time_fields: Sequence[str]) -> InputSpec:
        """From an ``InputSettings``-shaped model (logsource, decoder, timestamp_field)."""
        fields = (settings.timestamp_field,) if settings.timestamp_field else tuple(default_time_fields)
        logsource = settings.logsource.to_logsource()
        return cls(name=name, decoder=build_decoder(settings.decoder.type, settings.decoder.options),
                   logsource=logsource if logsource != LogSource() else None, time_fields=fields)


class RawMessage:
    """One message as it arrived; ``fallback_time`` is used when the event carries no time.

    ``origin`` may be handed over as a function that builds it (push inputs key each message by
    a hash of its content, and the native screen clears most messages without anyone asking) or
    as a Kafka ``(topic, partition, offset)`` tuple, kept as it is by the items decoded from it.
    ``value`` is None for a Kafka tombstone (rejected as ``empty``); ``headers`` are kept as the
    input gave them (Kafka header values may be None) until a dead letter needs them.
    """

    __slots__ = ("_origin", "fallback_time", "headers", "key", "value")

    def __init__(self, value: bytes | None, origin: Origin | tuple[str, int, int] | Callable[[], Origin],
                 fallback_time: float, headers: Sequence[tuple[str, bytes | None]] = (),
                 key: bytes | None = None) -> None:
        self.value = value
        self._origin = origin
        self.fallback_time = fallback_time
        self.headers = headers
        self.key = key

    @property
    def origin(self) -> Origin:
        origin = self._origin
        if isinstance(origin, tuple):
            origin = self._origin = Origin("kafka", origin[0], origin[1], origin[2])
        elif not isinstance(origin, Origin):
            origin = self._origin = origin()
        return origin

    @property
    def item_origin(self) -> Origin | tuple[str, int, int]:
        """The origin as :class:`Item` takes it: a Kafka tuple stays a tuple (built only for an alert)."""
        origin = self._origin
        if isinstance(origin, (tuple, Origin)):
            return origin
        origin = self._origin = origin()  # :attr:`origin`'s last case, inlined (once per decoded event)
        return origin


def raw_messages(values: Sequence[bytes], origins: Sequence[Origin], times: Sequence[float]) -> list[RawMessage]:
    """``[RawMessage(value, origin, time) ...]`` of aligned values, origins and fallback times, their
    slots set here (a line reader's picked lines: one call per batch, not one per line)."""
    out = []
    for value, origin, ts in zip(values, origins, times, strict=True):
        message = _new(RawMessage)
        message.value = value
        message._origin = origin
        message.fallback_time = ts
        message.headers = ()
        message.key = None
        out.append(message)
    return out


_new = object.__new__


class LazyMessages(Sequence[RawMessage]):
    """A batch's messages kept as their values and fallback times, the :class:`RawMessage` of each
    built by ``build(positions)`` (the messages at those positions, in order) when first asked
    for, and kept: the same object every time. The native screen reads the values alone and
    clears most messages: a line reader then builds messages (and their origins) only for the
    lines the screen picks, as the Kafka input builds items only for the records it picks."""

    __slots__ = ("_build", "_built", "times", "values")

    def __init__(self, values: list[bytes], times: list[float],
                 build: Callable[[Sequence[int]], list[RawMessage]]) -> None:
        assert len(values) == len(times), "one fallback time per value"
        self.values = values
        self.times = times
        self._build = build
        self._built: dict[int, RawMessage] = {}

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> RawMessage: ...

    @overload
    def __getitem__(self, index: slice) -> list[RawMessage]: ...

    def __getitem__(self, index: int | slice) -> RawMessage | list[RawMessage]:
        if isinstance(index, slice):
            return self.at(range(*index.indices(len(self.values))))
        if index < 0:
            index += len(self.values)
        if not 0 <= index < len(self.values):
            raise IndexError(index)
        return self.at((index,))[0]

    def __iter__(self) -> Iterator[RawMessage]:
        return iter(self.at(range(len(self.values))))

    def at(self, positions: Sequence[int]) -> list[RawMessage]:
        """The messages at ``positions`` (valid ones, in any order), built in one call where none is built yet."""
        built = self._built
        if not built:  # the common case: the screen's picks, once
            messages = self._build(positions)
            built.update(zip(positions, messages, strict=True))
            return messages
        missing = [position for position in positions if position not in built]
        if missing:
            built.update(zip(missing, self._build(missing), strict=True))
        return [built[position] for position in positions]

    def built(self) -> dict[int, RawMessage]:
        """The messages built so far, by position."""
        return self._built


class Item:
    """One decoded event on its way through detection.

    ``origin`` may be given as a ``(topic, partition, offset)`` tuple for Kafka
    records: the :class:`Origin` is then built only if the event raises an
    alert, which keeps the per-event cost of the hot path down.
    """

    __slots__ = ("_origin", "decided", "event", "fallback_time", "logsource", "time_fields")

    def __init__(self, event: dict[str, Any], origin: Origin | tuple[str, int, int], logsource: LogSource | None,
                 time_fields: tuple[str, ...], fallback_time: float) -> None:
        self.event = event
        self._origin = origin
        self.logsource = logsource
        self.time_fields = time_fields
        self.fallback_time = fallback_time
        self.decided: tuple[Sequence[Any], tuple[list[int], list[int]]] | None = None
        """The native screen's decision on the raw message (the route's rules, and the positions
        of those matching and undecided: see ``detectors.sigma.screen.Decision``); None: the
        Sigma engine evaluates the event in full."""

    @property
    def origin(self) -> Origin:
        origin = self._origin
        if isinstance(origin, tuple):
            origin = self._origin = Origin("kafka", origin[0], origin[1], origin[2])
        return origin

    @property
    def origin_ref(self) -> OriginRef:
        """The origin as detectors keep it (a Kafka tuple stays a tuple: see :func:`detectors.model.as_origin`)."""
        return self._origin

    def scope_key(self) -> tuple[str, int] | None:
        """(topic, partition) for Kafka events: stateful detectors keep their state per partition."""
        origin = self._origin
        if isinstance(origin, tuple):
            return origin[0], origin[1]
        if origin.topic is not None and origin.partition is not None:
            return origin.topic, origin.partition
        return None

    def time(self) -> float:
        """Event time (unix seconds) from the first usable time field (see
        :func:`detectors.event.event_time`), else the fallback."""
        ts = event_time(self.event, self.time_fields)
        return self.fallback_time if ts is None else ts


class Tick(Item):
    """Events the native screen cleared (no rule can match them), as one item at their latest
    event time: stateful detectors see time pass as they would have from each event."""

    __slots__ = ()

    def __init__(self, origin: Origin | tuple[str, int, int], logsource: LogSource | None, ts: float) -> None:
        super().__init__({}, origin, logsource, (), ts)


class Undecoded(Item):
    """An event left undecoded: the native screen decided its rules, and what the matching ones show
    came with the decision (see :func:`decode_batch`'s ``lean``). Its event is empty and its time is the time it was
    read at: for a consumer that needs neither (``eval`` prints no alert's event or time)."""

    __slots__ = ()

    def time(self) -> float:
        return self.fallback_time


@dataclass(slots=True)
class Rejected:
    """A message no decoder could read: the original, where it came from, and why."""

    message: RawMessage
    reason: str
    error: str


@dataclass(slots=True)
class Decoded:
    items: list[Item] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def decode_batch(messages: Sequence[RawMessage], spec: InputSpec, out: Decoded | None = None, *,
                 max_bytes: int | None = None, partition: tuple[str, int] | None = None,
                 decisions: Sequence[Any] | None = None, rules: Sequence[Any] = (), lean: bool = False) -> Decoded:
    """Decode ``messages`` with ``spec``'s decoder into ``out`` (appending; created if None).

    The one decode step of every input: a message without a value (Kafka tombstone) is rejected
    as ``empty``, one over ``max_bytes`` (an input's own limit, e.g. Kafka's
    ``max_message_bytes``) as ``oversize``, then the decoder decides. Rejects keep the original
    message (bytes, origin, headers, key) for the dead letters.

    ``partition``: ``messages`` are the Kafka records of this ``(topic, partition)`` as the
    consumer returned them (``value``, ``offset``, ``timestamp`` in ms, ``headers``, ``key``);
    they are read in place, and a :class:`RawMessage` is made only for a reject (the hot path
    of the busiest input builds nothing per record but its item).

    ``decisions``: the native screen's decision on each message (one per message, None where it
    made none), over ``rules``; an item is given its message's decision (:attr:`Item.decided`)
    when the message decodes into exactly one event.

    ``lean``: a message whose decision leaves no rule undecided and names only matching rules
    that show no field (``not selection``...) or whose fields the decision shows is not decoded: it becomes an :class:`Undecoded`
    item (the screen reads only what the decoder would accept as one object, so nothing it would
    reject is let through). For stateless detection whose alerts need neither event nor event time.
    """
    result = out if out is not None else Decoded()
    decoder = spec.decoder
    items = result.items
    append = items.append
    rejected = result.rejected
    logsource = spec.logsource
    time_fields = spec.time_fields
    topic, number = partition if partition is not None else ("", 0)
    assert decisions is None or len(decisions) == len(messages), "one decision per message"
    for message, decision in zip(messages, decisions if decisions is not None else repeat(None), strict=False):
        if lean and decision is not None and not decision[1]:
            shown = decision[2] if len(decision) > 2 else None
            for at, position in enumerate(decision[0]):
                if rules[position].positives and (shown is None or shown[at] is None):
                    break  # a field to show that the screen did not: the event is read
            else:
                # Undecoded({}, origin, logsource, (), fallback) with its slots set here (once per event)
                item: Item = _new(Undecoded)
                if partition is None:
                    origin = message._origin  # item_origin, inlined for a built origin (once per event)
                    item._origin = origin if isinstance(origin, (Origin, tuple)) else message.item_origin
                    item.fallback_time = message.fallback_time
                else:
                    record: Any = message  # a Kafka ConsumerRecord
                    item._origin = (topic, number, record.offset)
                    item.fallback_time = record.timestamp / 1000.0
                item.event = {}
                item.logsource = logsource
                item.time_fields = ()
                item.decided = (rules, decision)
                append(item)
                continue
        value = message.value
        try:
            if value is None:
                raise DecodeError("empty", "message has no value (tombstone)")
            if max_bytes is not None and len(value) > max_bytes:
                raise DecodeError("oversize", f"message of {len(value)} bytes exceeds {max_bytes}")
            events = decoder(value)
        except Exception as exc:  # a decoder bug must not stop the input either
            raw = message if partition is None else _record_message(message, topic, number)
            if isinstance(exc, DecodeError):
                rejected.append(_rejected(raw, exc.reason, exc.message))
            else:
                rejected.append(_rejected(raw, "decoder_error", f"{type(exc).__name__}: {exc}"))
            continue
        if partition is None:
            origin = message._origin  # item_origin, inlined for a built origin (once per event)
            if not isinstance(origin, (Origin, tuple)):
                origin = message.item_origin
            fallback = message.fallback_time
        else:
            record = message
            origin, fallback = (topic, number, record.offset), record.timestamp / 1000.0
        if len(events) == 1:
            item = Item(events[0], origin, logsource, time_fields, fallback)
            if decision is not None:
                item.decided = (rules, decision)
            append(item)
        else:
            base = origin if isinstance(origin, Origin) else Origin("kafka", *origin)
            for index, event in enumerate(events):
                sub = Origin(base.input, base.topic, base.partition, base.offset,
                             f"{base.key}#{index}" if base.key else str(index))
                append(Item(event, sub, logsource, time_fields, fallback))
    return result


def _record_message(record: Any, topic: str, partition: int) -> RawMessage:
    """A Kafka record as a :class:`RawMessage` (for a reject: its metadata goes to the dead letters)."""
    return RawMessage(record.value, (topic, partition, record.offset), record.timestamp / 1000.0,
                      record.headers or (), record.key)


def _rejected(message: RawMessage, reason: str, error: str) -> Rejected:
    """A reject as the dead letters take it: bytes (empty for a tombstone) and headers with bytes values."""
    if message.value is None:
        message.value = b""
    if message.headers:
        message.headers = tuple((k, v or b"") for k, v in message.headers)
    return Rejected(message, reason, error)


class LineSplitter:
    """Cuts a byte stream into non-blank lines, each with the stream offset it starts at.

    A line longer than ``max_line`` without a newline is handed on as it is, so
    one endless line cannot hold memory (the decoder then rejects it as oversize).
    """

    def __init__(self, max_line: int, position: int = 0) -> None:
        self._rest = b""
        self._max = max_line
        self._rest_at = position

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        data = self._rest + chunk if self._rest else chunk
        out: list[tuple[int, bytes]] = []
        start = 0
        base = self._rest_at
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line = data[start:end]
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                out.append((base + start, line))
            start = end + 1
        self._rest = data[start:]
        self._rest_at = base + start
        if len(self._rest) > self._max:
            out.append((self._rest_at, self._rest))
            self._rest_at += len(self._rest)
            self._rest = b""
        return out

    @property
    def position(self) -> int:
        """Stream offset of the first byte not yet handed out in a line."""
        return self._rest_at

    def flush(self) -> list[tuple[int, bytes]]:
        """The unterminated last line, if any (at end of input or before a rotation)."""
        rest, at = self._rest, self._rest_at
        self._rest_at += len(rest)
        self._rest = b""
        return [(at, rest)] if rest.strip() else []
