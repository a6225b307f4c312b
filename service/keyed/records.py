"""The state record: what stage 1 sends through the internal topic for stage 2 (the one owner of
the format).

A message of the internal topic holds one record or several, one per line (NDJSON; stage 2 reads it
whole with :func:`decode_pack`). Stage 1 packs the records of one batch that go to the same internal
partition into as few messages as :data:`PACK_BYTES` allows (:func:`pack`), in their order: one Kafka
message instead of one per record is most of what keyed scope costs over instance scope. The
partition is the one Kafka's default partitioner gives the record's key (:func:`partition_for`,
murmur2 as in the Java client and aiokafka, computed by :func:`murmur2`), so a key keeps its partition whatever instance, and
whatever version, sends it. A record's position in its message is its index there.

A record is a small JSON object (``orjson``), versioned by ``v`` (version 2: records packed several
to a message; version 1, one record per message keyed by :meth:`StateRecord.key`, is still read):

- ``k: "c"`` (correlation input): ``id`` the correlation, ``r`` the matched base rules that feed
  it (in match order), ``t`` the event time, ``o`` the origin ``[topic, partition, offset]``
  (``key`` too when one message decoded into several events), ``f`` the fields the aggregation
  reads (group-by and value fields of the matched slots, as resolved in the event); a correlation
  alert re-keyed for a correlation referencing it (chained, sent by stage 2) has the referenced
  correlation as its rule, its alert key as ``x`` (the parent's evidence) and its origin in the
  internal topic (the stage-2 record or watermark that raised it, and the alert's index among the alerts its message raised);
- ``k: "a"`` (anomaly check input): ``id`` the check, ``t`` the event time, ``o`` the origin, ``f``
  only the fields the check reads (its ``by`` fields, its ``timestamp_field``, and the measured
  field(s) of ``metric``, ``new_value`` and ``cardinality``), ``s`` the event's log source
  ``[product, category, service]`` when the check keys by ``_source``, ``m`` (``ratio`` only) whether
  the check's selection matched in stage 1 (a ``threshold`` selection is applied in stage 1: only
  matching events send a record);
- ``k: "w"`` (watermark): ``p`` the producing instance, ``s`` its input partitions' progress
  (``[topic, partition, event time]``: no state record with an earlier time follows from that
  input partition), ``i`` its idle input partitions (``[topic, partition]``: read to the end without
  a record yet; they do not hold stage 2 back), ``n`` the partition count of every input topic (``[topic, count]``), so
  stage 2 knows which input partitions must have spoken before it may release a time. Stage 2's
  producer sends watermarks too, its rows naming the internal topic itself: ``s`` then holds each
  internal partition's chain mark of level 0, and ``c`` (only when the rules chain more than one
  level) its marks of the higher levels (``[partition, level, event time]``: no re-keyed record of
  a correlation of that level or below, with an earlier time, follows from that partition). ``c``
  came after version 2 without a new version: a reader that does not know it ignores it, as every
  reader ignores a field it does not read (docs/scaling.md, "Chained correlations").

Only what the compiled correlation specs and anomaly checks name is copied, never the whole event. A record larger
than ``MAX_RECORD_BYTES`` is refused at build time (:class:`RecordTooLarge`), and decoding checks
every field's type and bound: a record from another version or a hostile producer gets a
:class:`RecordError` naming what is wrong, never an exception from deep inside the engine.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from detectors.anomaly.base import Check
from detectors.anomaly.keys import SOURCE_FIELD, key_text, source_text
from detectors.anomaly.spec import CardinalitySpec, CheckCommon, MetricSpec, NewValueSpec
from detectors.anomaly.threshold import RatioCheck, ThresholdCheck
from detectors.correlation.fields import key_part
from detectors.correlation.spec import CorrelationSpec
from detectors.event import MISSING, get
from detectors.model import LogSource
from service.decoders import DecodeError, register_decoder
from service.errors import ServiceError

VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Versions :func:`from_mapping` reads: 1 (one record per message) differs from 2 only in the framing."""
MAX_RECORD_BYTES = 65_536
"""A state record's bound (encoded); an event whose group or value fields exceed it sends none."""
MAX_FIELDS = 64
MAX_RULES = 64
MAX_ID_CHARS = 512
MAX_PRODUCER_CHARS = 256
MAX_PARTITIONS = 4096
"""Input partitions (and topics) one watermark record may list."""
MAX_LEVELS = 64
"""Chain levels a watermark's ``c`` rows may name (a chain deeper than this is not sent marks for)."""
LEVEL_MARK = "#"
"""Inside an instance, the chain mark of ``level`` >= 1 of internal partition ``p`` travels with the
level-0 marks as the row ``(<topic>#<level>, p)`` (:func:`level_row`): ``#`` is never in a Kafka
topic name, so it is never an input partition's row."""
DECODER = "keyed-state"
"""The decoder stage 2 reads the internal topic with (:func:`decode_pack`)."""
PACK = "\x00records"
"""The key under which :func:`decode_pack` hands on a message's records (no JSON record is
the event itself: every one is inside the list)."""
PACK_BYTES = 262_144
"""A packed message's bound: far below Kafka's default ``message.max.bytes`` (1 MiB) and the
consumer's ``kafka.max_message_bytes`` (stage 1 keeps below a lower one), so a full pack is never
refused; a larger batch makes more messages."""


_PLAIN = frozenset((str, int, float, bool))
"""Value types :func:`~detectors.event.get` returns as they are when the literal key holds one."""
_make = tuple.__new__
"""Builds a record (a named tuple) from its fields in order without its generated ``__new__``
(a Python frame: on the hot paths of both stages)."""


class RecordError(ServiceError, ValueError):
    """A state record that cannot be read (wrong version, malformed, out of bounds)."""


class RecordTooLarge(RecordError):
    """An event's state record would exceed :data:`MAX_RECORD_BYTES`."""


class Origin(NamedTuple):
    """Where a record's event was read. Records are named tuples, not frozen dataclasses: as
    immutable, and built several times cheaper (one or two per record in each stage)."""

    topic: str
    partition: int
    offset: int
    key: str | None = None


def origin_of(ref: Any) -> Origin:
    """A record's origin from an item's (``Item.origin_ref``: a Kafka ``(topic, partition, offset)``
    tuple, kept as it is on the hot path, or an origin with a key)."""
    if type(ref) is tuple:
        return _make(Origin, (ref[0], ref[1], ref[2], None))
    return Origin(ref.topic or "", ref.partition or 0, ref.offset or 0, ref.key)


class StateRecord(NamedTuple):
    """One event's input to one correlation."""

    correlation: str
    rules: tuple[str, ...]
    ts: float
    origin: Origin
    fields: Mapping[str, Any]
    group: tuple[Any, ...] = ()
    """The normalised group key (what the Kafka key is made of); not sent (stage 2 recomputes it)."""
    ref: str | None = None
    """A chained input: the referenced correlation's alert key."""

    def key(self) -> bytes:
        """The Kafka key: correlation id and normalised group key, so one group has one partition."""
        return record_key(self.correlation, self.group)

    def encode(self) -> bytes:
        origin, fields = self.origin, self.fields
        doc: dict[str, Any] = {"v": VERSION, "k": "c", "id": self.correlation, "r": self.rules, "t": self.ts,
                               "o": origin[:3] if origin.key is None else origin[:4],
                               "f": fields if type(fields) is dict else dict(fields)}
        if self.ref is not None:
            doc["x"] = self.ref
        data = orjson.dumps(doc, default=str)
        if len(data) > MAX_RECORD_BYTES:
            raise RecordTooLarge(f"state record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
        return data


class AnomalyRecord(NamedTuple):
    """One event's input to one anomaly check."""

    check: str
    ts: float
    origin: Origin
    fields: Mapping[str, Any]
    source: tuple[str | None, str | None, str | None] | None = None
    """The event's log source, sent only when the check keys by ``_source``."""
    selected: bool | None = None
    """``ratio``: whether the check's selection matched (evaluated in stage 1)."""
    group: tuple[str, ...] = ()
    """The check's key (what the Kafka key is made of); not sent (stage 2 recomputes it)."""

    @property
    def logsource(self) -> LogSource | None:
        return None if self.source is None else LogSource(*self.source)

    def key(self) -> bytes:
        """The Kafka key: check id and key, so one key's model lives in one internal partition."""
        return record_key(self.check, self.group)

    def encode(self) -> bytes:
        origin: list[Any] = [self.origin.topic, self.origin.partition, self.origin.offset]
        if self.origin.key is not None:
            origin.append(self.origin.key)
        doc: dict[str, Any] = {"v": VERSION, "k": "a", "id": self.check, "t": self.ts, "o": origin,
                               "f": dict(self.fields)}
        if self.source is not None:
            doc["s"] = list(self.source)
        if self.selected is not None:
            doc["m"] = 1 if self.selected else 0
        data = orjson.dumps(doc, default=str)
        if len(data) > MAX_RECORD_BYTES:
            raise RecordTooLarge(f"state record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
        return data


@dataclass(frozen=True, slots=True)
class Watermark:
    """A stage-1 instance's promise per input partition it owns: no state record with an earlier
    time follows from that partition."""

    producer: str
    progress: tuple[tuple[str, int, float], ...]
    topics: tuple[tuple[str, int], ...]
    """Every input topic's partition count, as the producer's consumer sees it."""
    idle: tuple[tuple[str, int], ...] = ()
    chain: tuple[tuple[int, int, float], ...] = ()
    """Stage 2's producer: chain marks of level 1 and above, ``(internal partition, level, time)``
    (level 0's are ``progress`` rows naming the internal topic)."""

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"v": VERSION, "k": "w", "p": self.producer, "s": [list(p) for p in self.progress],
                               "n": [list(t) for t in self.topics], "i": [list(p) for p in self.idle]}
        if self.chain:
            doc["c"] = [list(row) for row in self.chain]
        return orjson.dumps(doc)


def level_row(topic: str, partition: int, level: int) -> tuple[str, int]:
    """The row under which the chain mark of ``level`` of an internal partition travels inside an
    instance (level 0: the partition itself; see :data:`LEVEL_MARK`)."""
    return (topic, partition) if level == 0 else (f"{topic}{LEVEL_MARK}{level}", partition)


def split_row(row: tuple[str, int]) -> tuple[tuple[str, int], int]:
    """:func:`level_row` read back: the partition and the level (0 for any other row)."""
    topic, partition = row
    name, mark, level = topic.rpartition(LEVEL_MARK)
    if mark and level.isdigit():
        return (name, partition), int(level)
    return row, 0


def record_key(correlation: str, group: Sequence[Any]) -> bytes:
    return correlation.encode() + b"|" + orjson.dumps(group if type(group) is tuple else list(group), default=str)


def partition_for(key: bytes, partitions: int) -> int:
    """The internal partition of ``key`` among ``partitions``: Kafka's default partitioner
    (``murmur2(key) & 0x7fffffff`` modulo the count), the one that placed version-1 records."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_M = 0x5BD1E995
_WORD = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``), as aiokafka's partitioner computes it,
    with the key read four bytes at a time in one :func:`struct.unpack_from` (several times faster
    than byte by byte: stage 1 hashes every new group key)."""
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    if words:
        for k in struct.unpack_from(f"<{words}I", data):
            k = (k * _M) & _WORD
            k = ((k ^ (k >> 24)) * _M) & _WORD
            h = ((h * _M) & _WORD) ^ k
    tail = length & 3
    if tail:
        end = length - tail
        if tail == 3:
            h ^= data[end + 2] << 16
        if tail >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & _WORD
    h = ((h ^ (h >> 13)) * _M) & _WORD
    return h ^ (h >> 15)


def pack(lines: Sequence[bytes], limit: int = PACK_BYTES) -> list[bytes]:
    """Encoded records as messages of one or more lines each, in order, each at most ``limit``
    bytes (a record is at most :data:`MAX_RECORD_BYTES`, so it always fits one)."""
    messages: list[bytes] = []
    start = size = 0
    for end, line in enumerate(lines):
        if end > start and size + len(line) > limit:
            messages.append(b"\n".join(lines[start:end]))
            start, size = end, 0
        size += len(line) + 1
    if start < len(lines):
        messages.append(b"\n".join(lines[start:]))
    return messages


def decode_lines(data: bytes) -> list[dict[str, Any]]:
    """Every line of a message of the internal topic as an object, parsed in one go (the lines joined into one JSON array: orjson never writes a raw newline
    inside a document); :func:`from_mapping` then checks each one."""
    try:
        docs: list[dict[str, Any]] = orjson.loads(b"[" + data.replace(b"\n", b",") + b"]")
    except orjson.JSONDecodeError as exc:
        raise DecodeError("decode", f"invalid state records: {exc}") from None
    for doc in docs:
        if not isinstance(doc, dict):
            raise DecodeError("not_object", "a state record is a JSON object")
    return docs


def decode_pack(data: bytes) -> list[dict[str, Any]]:
    """The :data:`DECODER` of the internal topic (stage 2's input): a message as one event, its
    lines parsed by :func:`decode_lines` under :data:`PACK`. Stage 2 reads them in place
    (:func:`packed`): one pipeline item and origin per message, not per record."""
    return [{PACK: decode_lines(data)}]


def packed(event: dict[str, Any]) -> list[Any]:
    """The record objects of an event of the internal topic: a message's (:func:`decode_pack`), or
    the event itself when it is one record (a message decoded line by line, as tests may feed)."""
    docs = event.get(PACK)
    return [event] if docs is None else docs


def unpack(data: bytes) -> list[StateRecord | AnomalyRecord | Watermark]:
    """Every record of one message of the internal topic (tests and tools; stage 2 reads the lines
    with :func:`decode_pack`, then :func:`from_mapping`)."""
    return [decode(line) for line in data.split(b"\n") if line.strip()]


class Plan(NamedTuple):
    """How :func:`build` copies an event for one correlation fed by given rules (the same for every
    event those rules match: stage 1 keeps it per set of matched rules)."""

    correlation: str
    names: tuple[str, ...]
    """The group-by and value fields of the matched slots, in slot order (each must be present)."""
    first: tuple[str, ...]
    """The group-by fields of the first matched slot (the engine's key)."""
    rules: tuple[str, ...]
    """The matched rules that feed the correlation, in match order."""
    extra: tuple[str, ...]


def plan(spec: CorrelationSpec, rule_ids: Sequence[str], *, chained: bool = False,
         extra: Sequence[str] = ()) -> Plan | None:
    """:func:`build`'s plan for ``spec`` and the matched ``rule_ids``, or None when none feeds it."""
    slots = [slot for slot in spec.slots if slot.correlation is chained and slot.rule_id in rule_ids]
    if not slots:
        return None
    names = tuple(dict.fromkeys(name for slot in slots for name in (*slot.group_fields, *slot.value_fields)))
    if len(slots) == 1:  # the usual case: one matched rule feeds the correlation
        ordered: tuple[str, ...] = (slots[0].rule_id,)
    else:
        feeding = {slot.rule_id for slot in slots}
        ordered = tuple(rule for rule in rule_ids if rule in feeding)
    return Plan(spec.info.id, names, slots[0].group_fields, ordered, tuple(extra))


def build(spec: CorrelationSpec, rule_ids: Sequence[str], event: Mapping[str, Any], ts: float,
          origin: Origin, *, ref: str | None = None, extra: Sequence[str] = ()) -> StateRecord | None:
    """The record of ``event`` for ``spec`` (``rule_ids``: its matched rules that feed ``spec``, in
    match order), or None when a group-by or value field is missing (the engine would skip it).
    With ``ref`` (a referenced correlation's alert key) ``rule_ids`` names that correlation and
    ``event`` is its alert's context: a chained input. ``extra``: fields copied when present (those
    the correlations referencing ``spec`` read from the firing event, see :func:`chain_fields`).

    The group key is the one the engine computes from the first matched slot's fields.
    """
    how = plan(spec, rule_ids, chained=ref is not None, extra=extra)
    return None if how is None else build_planned(how, event, ts, origin, ref)


def build_planned(how: Plan, event: Mapping[str, Any], ts: float, origin: Origin,
                  ref: str | None = None) -> StateRecord | None:
    """:func:`build` with its plan made already (stage 1's hot path: a field the event holds
    as a plain scalar under its literal name, :func:`get`'s first answer, is read without the call)."""
    fields: dict[str, Any] = {}
    for name in how.names:
        value = event.get(name, MISSING)
        if value is None or type(value) not in _PLAIN:
            value = get(event, name)
            if value is MISSING:
                return None
        fields[name] = value
    first = how.first
    if len(first) == 1:
        value = fields[first[0]]
        group: tuple[Any, ...] = (value.lower() if type(value) is str else key_part(value),)
    else:
        group = tuple([key_part(fields[name]) for name in first])
    for name in how.extra:
        if name not in fields:
            value = get(event, name)
            if value is not MISSING:
                fields[name] = value
    return _make(StateRecord, (how.correlation, how.rules, ts, origin, fields, group, ref))


def read_fields(spec: CheckCommon) -> tuple[str, ...]:
    """The event fields ``spec``'s check reads besides its key (``_source`` is the log source)."""
    names = [name for name in spec.by if name != SOURCE_FIELD]
    if spec.timestamp_field is not None:
        names.append(spec.timestamp_field)
    match spec:
        case MetricSpec() | CardinalitySpec():
            names.append(spec.field)
        case NewValueSpec():
            names.extend(spec.fields)
        case _:
            pass
    return tuple(dict.fromkeys(names))


class AnomalyPlan(NamedTuple):
    """How :func:`build_anomaly` copies an event for one check (the same for every event: stage 1
    keeps it per check)."""

    check: str
    matcher: Any
    """The selection stage 1 evaluates (``threshold``, ``ratio``), else None."""
    ratio: bool
    """``ratio``: the verdict is sent (``threshold``: only matching events send a record)."""
    by: tuple[str, ...]
    """The check's key fields (``_source``: the log source)."""
    reads: tuple[str, ...]
    """The other fields the check reads (:func:`read_fields` less ``by``), copied when present."""
    by_source: bool


def anomaly_plan(check: Check) -> AnomalyPlan:
    """:func:`build_anomaly`'s plan for ``check``."""
    ratio = isinstance(check, RatioCheck)
    matcher = check.matcher if isinstance(check, ThresholdCheck | RatioCheck) else None
    by = tuple(check.by)
    return AnomalyPlan(check.spec.id, matcher, ratio, by, tuple(name for name in read_fields(check.spec)
                                                                if name not in by), SOURCE_FIELD in by)


def build_anomaly(check: Check, event: Mapping[str, Any], ts: float, origin: Origin,
                  logsource: LogSource | None) -> AnomalyRecord | None:
    """The record of ``event`` for ``check``, or None when the check would not count it (a
    ``threshold`` selection that does not match) or cannot key it (a ``by`` field is missing: the
    engine would skip it too). Fields the check reads but the event lacks are left out: stage 2's
    check skips the event with the same reason as a local one."""
    return build_anomaly_planned(anomaly_plan(check), event, ts, origin, logsource)


def build_anomaly_planned(how: AnomalyPlan, event: Mapping[str, Any], ts: float, origin: Origin,
                          logsource: LogSource | None) -> AnomalyRecord | None:
    """:func:`build_anomaly` with its plan made already."""
    selected: bool | None = None
    matcher = how.matcher
    if matcher is not None:
        if how.ratio:
            selected = matcher(event)
        elif not matcher(event):
            return None
    group: list[str] = []
    fields: dict[str, Any] = {}
    for name in how.by:
        if name == SOURCE_FIELD:
            group.append(source_text(logsource))
            continue
        value = get(event, name)
        if value is MISSING:
            return None
        fields[name] = value
        group.append(key_text(value)[0])
    for name in how.reads:
        if name not in fields:
            value = get(event, name)
            if value is not MISSING:
                fields[name] = value
    source = None
    if how.by_source:
        source = (None, None, None) if logsource is None else (logsource.product, logsource.category,
                                                                  logsource.service)
    return _make(AnomalyRecord, (how.check, ts, origin, fields, source, selected, tuple(group)))


def chain_fields(specs: Sequence[CorrelationSpec]) -> dict[str, tuple[str, ...]]:
    """Per correlation id: the fields the correlations referencing it read (their slots' group-by
    and value fields), and those the correlations referencing *them* read, up the chain. Its alert
    gives them its group and value, then the firing input's fields, and a parent's alert gives
    its own parents the same again: so its records carry all of these (when the event has them),
    and a grandparent finds in its input what ``pipesentry eval`` finds in the merged stream."""
    direct: dict[str, dict[str, None]] = {}
    parents: dict[str, set[str]] = {}
    for spec in specs:
        for slot in spec.slots:
            if slot.correlation:
                direct.setdefault(slot.rule_id, {}).update(dict.fromkeys((*slot.group_fields, *slot.value_fields)))
                parents.setdefault(slot.rule_id, set()).add(spec.info.id)
    out: dict[str, tuple[str, ...]] = {}
    for cid in direct:
        names: dict[str, None] = {}
        seen, todo = {cid}, [cid]
        while todo:  # up the chain, each correlation once (a cycle cannot compile, nor loop here)
            child = todo.pop(0)
            names.update(direct.get(child, {}))
            for parent in sorted(parents.get(child, ())):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        out[cid] = tuple(names)
    return out


def chain_levels(specs: Sequence[CorrelationSpec]) -> dict[str, int]:
    """Per correlation id: its chain level, 0 for one that references no correlation, else one
    more than the highest level it references (stage 2 releases each level on its own lane, after
    the chain marks of the levels below: docs/scaling.md, "Chained correlations")."""
    refs = {spec.info.id: [slot.rule_id for slot in spec.slots if slot.correlation] for spec in specs}
    levels: dict[str, int] = {}

    def level(cid: str, path: frozenset[str]) -> int:
        known = levels.get(cid)
        if known is not None:
            return known
        found = 0
        for ref in refs.get(cid, ()):
            if ref in refs and ref not in path:
                found = max(found, level(ref, path | {ref}) + 1)
            else:
                found = max(found, 1)
        levels[cid] = min(found, MAX_LEVELS)
        return levels[cid]

    for cid in refs:
        level(cid, frozenset((cid,)))
    return levels


def decode(data: bytes | None) -> StateRecord | AnomalyRecord | Watermark:
    """Read one record of the internal topic; :class:`RecordError` says why one cannot be read."""
    if data is None:
        raise RecordError("empty record")
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError(f"record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc}") from None
    return from_mapping(doc)


def from_mapping(doc: Any) -> StateRecord | AnomalyRecord | Watermark:
    """:func:`decode` for an already parsed object.

    Stage 2 calls it once per record: a well-formed correlation or anomaly record is read here with
    every check inlined (no further call but the record's own construction); anything else, or one
    that fails a check, goes through the checked readers, which name what is wrong. The inline checks
    accept exactly what those accept (and refuse, for them to explain, only an unusual type such as
    a dict subclass)."""
    if type(doc) is dict:
        version, kind = doc.get("v"), doc.get("k")
        if (version == 2 or version == 1) and type(version) is int:
            if kind == "c":
                ts: Any = doc.get("t")
                correlation, rules, fields, where, ref = (doc.get("id"), doc.get("r"), doc.get("f"), doc.get("o"),
                                                          doc.get("x"))
                if (type(ts) in _NUMBERS and math.isfinite(ts) and type(correlation) is str
                        and 0 < len(correlation) <= MAX_ID_CHARS and type(rules) is list
                        and 0 < len(rules) <= MAX_RULES and type(fields) is dict and len(fields) <= MAX_FIELDS
                        and (ref is None or (type(ref) is str and 0 < len(ref) <= MAX_RECORD_BYTES))
                        and type(where) is list):
                    for rule in rules:
                        if type(rule) is not str or not 0 < len(rule) <= MAX_ID_CHARS:
                            break
                    else:
                        size = len(where)  # _plain_origin(where), inlined
                        if size == 3:
                            topic, partition, offset = where
                            key = None
                        elif size == 4:
                            topic, partition, offset, key = where
                            if type(key) is not str or not 0 < len(key) <= MAX_ID_CHARS:
                                size = 0
                        if ((size == 3 or size == 4) and type(topic) is str and 0 < len(topic) <= 249
                                and type(partition) is int and 0 <= partition < 2 ** 63
                                and type(offset) is int and 0 <= offset < 2 ** 63):
                            return _make(StateRecord, (correlation, tuple(rules), float(ts),
                                                       _make(Origin, (topic, partition, offset, key)), fields, (),
                                                       ref))
                return _checked_correlation(doc)
            if kind == "a":
                ts = doc.get("t")
                check, fields, where, raw, selected = (doc.get("id"), doc.get("f"), doc.get("o"), doc.get("s"),
                                                       doc.get("m"))
                if (type(ts) in _NUMBERS and math.isfinite(ts) and type(check) is str
                        and 0 < len(check) <= MAX_ID_CHARS and type(fields) is dict and len(fields) <= MAX_FIELDS
                        and type(where) is list and (selected is None or (type(selected) is int and 0 <= selected <= 1))
                        and (raw is None or (type(raw) is list and len(raw) == 3 and all(
                            part is None or (type(part) is str and len(part) <= MAX_ID_CHARS) for part in raw)))):
                    origin = _plain_origin(where)
                    if origin is not None:
                        return _make(AnomalyRecord, (check, float(ts), origin, fields,
                                                     None if raw is None else (raw[0], raw[1], raw[2]),
                                                     None if selected is None else selected == 1, ()))
                return _anomaly(doc)
    return _checked(doc)


def _checked(doc: Any) -> StateRecord | AnomalyRecord | Watermark:
    """:func:`from_mapping` with every check in turn (the first one wrong raises)."""
    if not isinstance(doc, dict):
        raise RecordError("a state record is a JSON object")
    version = doc.get("v")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise RecordError(f"state record version {version!r} is not supported (this version reads "
                          f"{', '.join(map(str, READABLE_VERSIONS))}); run the same pipesentry version on every "
                          "instance of the group")
    kind = doc.get("k")
    if kind == "w":
        return Watermark(_text(doc.get("p"), "producer", MAX_PRODUCER_CHARS),
                         tuple((topic, part, _time(ts)) for topic, part, ts in _rows(doc.get("s"), 3, "progress")),
                         tuple((topic, _int(n, "partition count")) for topic, n in _rows(doc.get("n"), 2, "topics")),
                         tuple((topic, part) for topic, part in _rows(doc.get("i", []), 2, "idle")),
                         _chain_rows(doc.get("c", [])))
    if kind == "c":
        return _checked_correlation(doc)
    if kind == "a":
        return _anomaly(doc)
    raise RecordError(f"unknown state record kind {kind!r}")


def _plain_origin(value: list[Any]) -> Origin | None:
    """:func:`_origin` of a well-formed origin, else None."""
    size = len(value)
    if size == 3:
        topic, partition, offset = value
        key = None
    elif size == 4:
        topic, partition, offset, key = value
        if type(key) is not str or not 0 < len(key) <= MAX_ID_CHARS:
            return None
    else:
        return None
    if (type(topic) is str and 0 < len(topic) <= 249 and type(partition) is int and 0 <= partition < 2 ** 63
            and type(offset) is int and 0 <= offset < 2 ** 63):
        return _make(Origin, (topic, partition, offset, key))
    return None


def _checked_correlation(doc: dict[str, Any]) -> StateRecord:
    """A correlation record with every field checked in turn (the first one wrong raises)."""
    ts = _time(doc.get("t"))
    correlation = _text(doc.get("id"), "correlation id", MAX_ID_CHARS)
    rules = doc.get("r")
    if type(rules) is not list or not 0 < len(rules) <= MAX_RULES:
        raise RecordError(f"rules must be a list of 1 to {MAX_RULES} ids")
    for rule in rules:
        _text(rule, "rule id", MAX_ID_CHARS)
    rule_ids = tuple(rules)
    fields = doc.get("f")
    if not isinstance(fields, dict) or len(fields) > MAX_FIELDS:
        raise RecordError(f"fields must be an object of at most {MAX_FIELDS} entries")
    ref = doc.get("x")
    return StateRecord(correlation, rule_ids, ts, _origin(doc.get("o")), fields,
                       ref=None if ref is None else _text(ref, "chained alert key", MAX_RECORD_BYTES))


def _anomaly(doc: dict[str, Any]) -> AnomalyRecord:
    fields = doc.get("f")
    if not isinstance(fields, dict) or len(fields) > MAX_FIELDS:
        raise RecordError(f"fields must be an object of at most {MAX_FIELDS} entries")
    source: tuple[str | None, str | None, str | None] | None = None
    raw = doc.get("s")
    if raw is not None:
        if not isinstance(raw, list) or len(raw) != 3 or not all(
                part is None or (isinstance(part, str) and len(part) <= MAX_ID_CHARS) for part in raw):
            raise RecordError("log source must be [product, category, service] (strings or null)")
        source = (raw[0], raw[1], raw[2])
    selected = doc.get("m")
    if selected is not None and selected not in (0, 1):
        raise RecordError("selection flag must be 0 or 1")
    return AnomalyRecord(_text(doc.get("id"), "check id", MAX_ID_CHARS), _time(doc.get("t")), _origin(doc.get("o")),
                         fields, source, None if selected is None else bool(selected))


_NUMBERS = (int, float)
"""Exact types (``type() in``: a bool is not a number here, and orjson makes no subclasses)."""


def _time(value: Any) -> float:
    if type(value) not in _NUMBERS or not math.isfinite(value):
        raise RecordError("event time must be a finite number")
    return float(value)


def _text(value: Any, what: str, limit: int) -> str:
    if type(value) is not str or not 0 < len(value) <= limit:
        raise RecordError(f"{what} must be a string of 1 to {limit} characters")
    return value


def _int(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2 ** 63:
        raise RecordError(f"{what} must be a non-negative 64-bit integer")
    return value


def _rows(value: Any, width: int, what: str) -> list[tuple[Any, ...]]:
    """A watermark's list of ``[topic, number, ...]`` rows, checked."""
    if not isinstance(value, list) or len(value) > MAX_PARTITIONS:
        raise RecordError(f"watermark {what} must be a list of at most {MAX_PARTITIONS} entries")
    rows = []
    for row in value:
        if not isinstance(row, list) or len(row) != width:
            raise RecordError(f"watermark {what} entries have {width} items")
        rows.append((_text(row[0], "topic", 249), _int(row[1], what), *row[2:]))
    return rows


def _chain_rows(value: Any) -> tuple[tuple[int, int, float], ...]:
    """A watermark's ``c`` rows (``[internal partition, level, time]``), checked."""
    if not isinstance(value, list) or len(value) > MAX_PARTITIONS * MAX_LEVELS:
        raise RecordError(f"watermark chain marks must be a list of at most {MAX_PARTITIONS * MAX_LEVELS} entries")
    rows = []
    for row in value:
        if not isinstance(row, list) or len(row) != 3:
            raise RecordError("watermark chain marks have 3 items")
        level = _int(row[1], "chain level")
        if not 0 < level <= MAX_LEVELS:
            raise RecordError(f"chain level must be 1 to {MAX_LEVELS}")
        rows.append((_int(row[0], "chain partition"), level, _time(row[2])))
    return tuple(rows)


def _origin(value: Any) -> Origin:
    if not isinstance(value, list) or len(value) not in (3, 4):
        raise RecordError("origin must be [topic, partition, offset] or [topic, partition, offset, key]")
    key = _text(value[3], "origin key", MAX_ID_CHARS) if len(value) == 4 else None
    return Origin(_text(value[0], "origin topic", 249), _int(value[1], "origin partition"),
                  _int(value[2], "origin offset"), key)


register_decoder(DECODER, decode_pack, replace=True)
