"""Value types shared by every detector and by the service shell.

Everything here is immutable and free of I/O so that detections can be built,
compared and serialised without a running service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

Event = Mapping[str, Any]
"""A decoded log event: a JSON object (nested mappings, lists, scalars)."""

LEVELS: tuple[str, ...] = ("informational", "low", "medium", "high", "critical")
"""Sigma levels, lowest first; the index is the level's rank."""


def level_rank(level: str | None) -> int:
    """Rank of a Sigma level (unknown or missing levels rank as informational)."""
    try:
        return LEVELS.index((level or "informational").lower())
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class LogSource:
    """Sigma log source triple. ``None`` means "not specified"."""

    product: str | None = None
    category: str | None = None
    service: str | None = None

    def covers(self, event_source: LogSource) -> bool:
        """True when a rule with this log source applies to events of ``event_source``.

        Every attribute the rule names must equal the event source's attribute
        (case-insensitively); attributes the rule leaves out match anything.
        """
        for mine, theirs in (
            (self.product, event_source.product),
            (self.category, event_source.category),
            (self.service, event_source.service),
        ):
            if mine is not None and (theirs is None or mine.lower() != theirs.lower()):
                return False
        return True

    @classmethod
    def parse(cls, text: str) -> LogSource:
        """Parse ``product=X,category=Y,service=Z`` (any subset, any order)."""
        values: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in ("product", "category", "service") or not value.strip():
                raise ValueError(f"invalid log source part {part!r}: expected product=, category= or service=")
            values[key] = value.strip()
        return cls(**values)

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("product", self.product), ("category", self.category),
                                  ("service", self.service)) if v is not None}


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """Metadata of a detection rule, correlation rule or anomaly check.

    ``author`` is always a string: the Detection Rule License requires every
    view of a SigmaHQ rule's match to show it.
    """

    id: str
    title: str
    level: str = "informational"
    author: str = "unknown"
    description: str = ""
    status: str | None = None
    name: str | None = None
    date: str | None = None
    modified: str | None = None
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()
    logsource: LogSource = field(default_factory=LogSource)
    license: str | None = None
    ruleset: str = ""
    source: str = ""
    kind: str = "sigma"
    """``sigma``, ``correlation`` or ``anomaly``."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event came from; the basis of stable alert ids.

    For Kafka: ``input="kafka"`` with topic, partition and offset (plus ``key``
    when one message decodes into several events). For other
    inputs ``key`` identifies the event within the input (for example a file
    path and line, or an event's own id).
    """

    input: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None

    def token(self) -> str:
        """A stable string identifying this event's position in its input."""
        if self.topic is not None:
            position = f"{self.input}:{self.topic}:{self.partition}:{self.offset}"
            # A message that decodes into several events (report decoders) keys each one.
            return position if self.key is None else f"{position}:{self.key}"
        return f"{self.input}:{self.key}"


OriginRef = Origin | tuple[str, int, int]
"""An origin as the hot path carries it: a Kafka record's ``(topic, partition, offset)`` stays a tuple
until an alert needs its :class:`Origin` (see :func:`as_origin`)."""


def as_origin(ref: OriginRef) -> Origin:
    """The :class:`Origin` of ``ref`` (a tuple is a Kafka record's position)."""
    if isinstance(ref, tuple):
        return Origin("kafka", ref[0], ref[1], ref[2])
    return ref


@dataclass(frozen=True, slots=True)
class EventRef:
    """The event a match is about when that is not the event being processed: its event time and origin.

    An anomaly window closes on a later, unrelated event (or the timer); the alert names the first
    event of the anomalous window instead. Detectors keep only this (a time and an origin), never
    the event itself, so the alert has no original event to show.
    """

    time: float
    origin: Origin


@dataclass(frozen=True, slots=True)
class Match:
    """One detection: a rule (or correlation, or anomaly check) that fired.

    ``fields`` lists the event fields and values that made the rule match
    (an empty field name stands for a keyword match over all values).
    ``details`` carries kind-specific data: for correlations the group key,
    aggregated value, window and contributing ids; for anomaly checks the
    observed value, expected band and score.
    """

    rule: RuleInfo
    fields: tuple[tuple[str, Any], ...] = ()
    details: Mapping[str, Any] | None = None
    about: EventRef | None = None
    """The event the alert is about when not the one being processed (None: that one)."""


# -- fast construction of the hot types ---------------------------------------------------------
# A frozen dataclass sets each field through ``object.__setattr__`` looked up per field; the hot
# path (an origin per event, a match and an alert per detection) fills a plain twin of the class
# instead (same slots, in the same order) with ordinary stores, then gives it the frozen class:
# the very object the constructor makes (same class, fields, equality and hash), at a third of
# the cost of setting each slot through its descriptor.


def slot_twin(cls: type, names: Sequence[str]) -> type:
    """A plain class with the slot layout of the slotted dataclass ``cls``: fill an instance's slots
    (every field, ``names`` in order), then set its ``__class__`` to ``cls``. Checked here: a
    layout that differs raises at import, never on the hot path."""
    assert tuple(f.name for f in fields(cls)) == tuple(names), f"{cls.__name__}: name every field, in order"
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": tuple(names)})
    probe = twin()
    probe.__class__ = cls  # TypeError unless the layouts are the same
    return twin


_ORIGIN = slot_twin(Origin, ("input", "topic", "partition", "offset", "key"))
_MATCH = slot_twin(Match, ("rule", "fields", "details", "about"))


def keyed_origin(input: str, key: str) -> Origin:
    """``Origin(input, key=key)`` (a push input's or a file's position), made faster."""
    origin = _ORIGIN()
    origin.input = input
    origin.topic = origin.partition = origin.offset = None
    origin.key = key
    origin.__class__ = Origin
    return origin  # type: ignore[no-any-return]


def new_match(rule: RuleInfo, fields: tuple[tuple[str, Any], ...]) -> Match:
    """``Match(rule, fields)`` (a Sigma rule's match: no details, about the event itself), made faster."""
    match = _MATCH()
    match.rule = rule
    match.fields = fields
    match.details = match.about = None
    match.__class__ = Match
    return match  # type: ignore[no-any-return]
