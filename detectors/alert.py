"""The alert model: one detection turned into a document every sink can store.

Pure on purpose (no clock, no I/O): the alert's times come in as arguments, so
the same match on the same event always yields the same alert and the same id.
The id is what makes re-delivery harmless downstream: Elasticsearch indexes it
as ``_id``, the local store uses it as primary key and pagers derive their
dedup keys from it.

The rule author is always present in the document: the Detection Rule License
(DRL 1.1) of SigmaHQ rules requires it wherever a match of the rule is shown.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from .entities import extract, place
from .model import LEVELS, Event, LogSource, Match, Origin, RuleInfo, level_rank, slot_twin

SEVERITY: Mapping[str, int] = {"informational": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}
"""ECS ``event.severity`` per Sigma level (the 0-100 risk scale Elastic rules use)."""

DEFAULT_MAX_ORIGINAL_BYTES = 16_384
"""Cap on ``event.original``; a larger event is cut and flagged as truncated."""

MAX_MATCHED_FIELDS = 64
"""``pipesentry.matched`` pairs kept per alert (each is a nested document in the index)."""

MAX_MATCHED_VALUE_CHARS = 1024
"""Matched field values are shown, not stored whole: a multi-megabyte field stays out of pages."""

ATTACK_TACTICS: Mapping[str, tuple[str, str]] = {
    "reconnaissance": ("TA0043", "Reconnaissance"),
    "resource-development": ("TA0042", "Resource Development"),
    "initial-access": ("TA0001", "Initial Access"),
    "execution": ("TA0002", "Execution"),
    "persistence": ("TA0003", "Persistence"),
    "privilege-escalation": ("TA0004", "Privilege Escalation"),
    "defense-evasion": ("TA0005", "Defense Evasion"),
    "credential-access": ("TA0006", "Credential Access"),
    "discovery": ("TA0007", "Discovery"),
    "lateral-movement": ("TA0008", "Lateral Movement"),
    "collection": ("TA0009", "Collection"),
    "command-and-control": ("TA0011", "Command and Control"),
    "exfiltration": ("TA0010", "Exfiltration"),
    "impact": ("TA0040", "Impact"),
}
"""Sigma tactic tags (``attack.<name>``) with their ATT&CK ids. Tactic tags not
listed here (newer ATT&CK versions) still appear in ``threat.tactic.name``."""

_TECHNIQUE = re.compile(r"^t(\d{4})(?:\.(\d{3}))?$")
_GROUP = re.compile(r"^g\d{4}$")
_SOFTWARE = re.compile(r"^s\d{4}$")
_ATTACK_URL = "https://attack.mitre.org"


@dataclass(frozen=True, slots=True)
class Threat:
    """ATT&CK classification parsed from a rule's tags (ECS ``threat.*``)."""

    technique_ids: tuple[str, ...] = ()
    subtechnique_ids: tuple[str, ...] = ()
    tactic_ids: tuple[str, ...] = ()
    tactic_names: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    software_ids: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.technique_ids or self.tactic_names or self.group_ids or self.software_ids)

    def to_ecs(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"framework": "MITRE ATT&CK"}
        if self.technique_ids:
            doc["technique"] = {
                "id": list(self.technique_ids),
                "reference": [f"{_ATTACK_URL}/techniques/{t}/" for t in self.technique_ids],
            }
            if self.subtechnique_ids:
                doc["technique"]["subtechnique"] = {
                    "id": list(self.subtechnique_ids),
                    "reference": [f"{_ATTACK_URL}/techniques/{s.replace('.', '/')}/"
                                  for s in self.subtechnique_ids],
                }
        if self.tactic_names:
            tactic: dict[str, Any] = {"name": list(self.tactic_names)}
            if self.tactic_ids:
                tactic["id"] = list(self.tactic_ids)
                tactic["reference"] = [f"{_ATTACK_URL}/tactics/{t}/" for t in self.tactic_ids]
            doc["tactic"] = tactic
        if self.group_ids:
            doc["group"] = {"id": list(self.group_ids)}
        if self.software_ids:
            doc["software"] = {"id": list(self.software_ids)}
        return doc


def parse_attack_tags(tags: tuple[str, ...] | list[str]) -> Threat:
    """Cached front of :func:`_parse_attack_tags` (a rule's tags are parsed once)."""
    return _parse_cached(tuple(tags))


@lru_cache(maxsize=8192)
def _parse_cached(tags: tuple[str, ...]) -> Threat:
    return _parse_attack_tags(tags)


@lru_cache(maxsize=8192)
def _threat_json(threat: Threat) -> bytes:
    return orjson.dumps(threat.to_ecs())


def _parse_attack_tags(tags: tuple[str, ...]) -> Threat:
    """Read ``attack.*`` tags: techniques (``attack.t1059.001``), tactics
    (``attack.execution``; underscores accepted), groups and software.

    Unknown ``attack.`` tags that look like tactic names are kept as names
    without id, so a newer ATT&CK tactic is not silently dropped.
    """
    techniques: dict[str, None] = {}
    subtechniques: dict[str, None] = {}
    tactic_ids: dict[str, None] = {}
    tactic_names: dict[str, None] = {}
    groups: dict[str, None] = {}
    software: dict[str, None] = {}
    for tag in tags:
        namespace, _, value = tag.strip().lower().partition(".")
        if namespace != "attack" or not value:
            continue
        if m := _TECHNIQUE.match(value):
            techniques[f"T{m.group(1)}"] = None
            if m.group(2):
                subtechniques[f"T{m.group(1)}.{m.group(2)}"] = None
        elif _GROUP.match(value):
            groups[value.upper()] = None
        elif _SOFTWARE.match(value):
            software[value.upper()] = None
        elif re.fullmatch(r"[a-z][a-z_-]*", value):
            key = value.replace("_", "-")
            known = ATTACK_TACTICS.get(key)
            if known:
                tactic_ids[known[0]] = None
                tactic_names[known[1]] = None
            else:
                tactic_names[key.replace("-", " ").title()] = None
    return Threat(tuple(techniques), tuple(subtechniques), tuple(tactic_ids), tuple(tactic_names),
                  tuple(groups), tuple(software))


def alert_id(rule_id: str, key: str) -> str:
    """Stable id of the alert ``rule_id`` raised for the event at ``key``.

    sha256 over both parts with a separator no rule id contains, cut to 128 bits
    (32 hex chars): collisions are out of reach, ids stay short in URLs. Each rule's hash state
    after its part is kept and copied (:data:`_PREFIXES`): a new sha256 costs its look-up by
    name in OpenSSL, more than hashing the key.
    """
    prefix = _PREFIXES.get(rule_id)
    if prefix is None:
        prefix = hashlib.sha256(f"{rule_id}\x1f".encode())
        if len(_PREFIXES) < MAX_PREFIXES:
            _PREFIXES[rule_id] = prefix
    digest = prefix.copy()
    digest.update(key.encode())
    return digest.digest()[:16].hex()  # == hexdigest()[:32], cheaper


_PREFIXES: dict[str, Any] = {}
"""Rule id -> the sha256 state after ``rule id + separator`` (never updated: copied per alert)."""

MAX_PREFIXES = 65_536
"""Rule ids whose hash state is kept (a ruleset has thousands; past this, ids are hashed whole)."""


def severity(level: str | None) -> int:
    return SEVERITY.get((level or "informational").lower(), SEVERITY["informational"])


@lru_cache(maxsize=4096)
def iso_time(ts: float) -> str:
    """RFC 3339 UTC with milliseconds (what ECS ``date`` fields and pagers accept). Cached: every alert
    of a batch has the same ``event.created``, and an event's alerts its ``@timestamp``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _as_ts(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    return float(value)


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else _compact_json(value).decode()
    return text if len(text) <= MAX_MATCHED_VALUE_CHARS else text[:MAX_MATCHED_VALUE_CHARS] + "…"


def _deep_json(value: Any) -> bytes:
    """Compact JSON of ``value`` at any depth, without recursion: the fallback of
    :func:`cap_original` for the events orjson refuses as too deep. Scalars and keys are written
    by orjson as there; containers through an explicit stack of (is_text, item) pairs."""
    out: list[bytes] = []
    pending: list[tuple[bool, Any]] = [(False, value)]
    while pending:
        is_text, item = pending.pop()
        if is_text:
            out.append(item)
        elif isinstance(item, dict):
            out.append(b"{")
            pending.append((True, b"}"))
            for index, (key, inner) in enumerate(reversed(item.items())):
                name = orjson.dumps(key if isinstance(key, str) else str(key))
                pending += [(False, inner), (True, (b"" if index == len(item) - 1 else b",") + name + b":")]
        elif isinstance(item, list | tuple):
            out.append(b"[")
            pending.append((True, b"]"))
            for index, inner in enumerate(reversed(item)):
                pending += [(False, inner)] + ([(True, b",")] if index != len(item) - 1 else [])
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append(str(item).encode())  # also past 64 bits, which orjson refuses
        else:
            out.append(orjson.dumps(item, default=str))
    return b"".join(out)


def _compact_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # deeper than orjson writes (255 levels; decoders may allow more)
        return _deep_json(value)  # or an integer past 64 bits


def cap_original(event: Event, max_bytes: int) -> tuple[str, bool, int]:
    """The event as compact JSON, cut to ``max_bytes`` on a UTF-8 boundary.

    Returns ``(text, truncated, full_size_in_bytes)``.
    """
    raw = _compact_json(event)
    if len(raw) <= max_bytes:
        return raw.decode(), False, len(raw)
    return raw[:max_bytes].decode("utf-8", errors="ignore"), True, len(raw)


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert. Immutable; ``to_document()`` renders the ECS-style document.

    What the document reads from the event (``original``, ``entities``) and from the rule's tags
    (``threat``) is derived on first use, not when the alert is raised: ``pipesentry eval`` and a
    filtered or suppressed alert never render a document, and deriving them cost more than the
    rest of the alert. The event is not changed after detection, so the derived values are those
    the alert would have had when raised."""

    id: str
    rule: RuleInfo
    timestamp: float
    """Event time (unix seconds): ``@timestamp``."""
    created: float
    """When pipesentry raised the alert: ``event.created``."""
    origin: Origin
    logsource: LogSource
    matched: tuple[tuple[str, Any], ...] = ()
    details: Mapping[str, Any] | None = None
    event: Event | None = field(default=None, compare=False, repr=False)
    """The decoded event, for routing on fields; never serialised (``original`` is)."""
    max_original_bytes: int = field(default=DEFAULT_MAX_ORIGINAL_BYTES, compare=False, repr=False)
    """Cap on ``original``."""
    _derived: tuple[str, bool, int, tuple[tuple[str, Any], ...]] | None = field(
        default=None, init=False, compare=False, repr=False)

    def _derive(self) -> tuple[str, bool, int, tuple[tuple[str, Any], ...]]:
        derived = self._derived
        if derived is None:
            event = self.event if self.event is not None else {}
            original, truncated, size = cap_original(event, self.max_original_bytes)
            derived = (original, truncated, size, extract(event, self.logsource))
            object.__setattr__(self, "_derived", derived)
        return derived

    @property
    def original(self) -> str:
        """The event as compact JSON, cut to ``max_original_bytes``: ``event.original``."""
        return self._derive()[0]

    @property
    def truncated(self) -> bool:
        return self._derive()[1]

    @property
    def original_size(self) -> int:
        """The event's full size in bytes as compact JSON."""
        return self._derive()[2]

    @property
    def entities(self) -> tuple[tuple[str, Any], ...]:
        """ECS entity fields read from the event, typed (:mod:`detectors.entities`)."""
        return self._derive()[3]

    @property
    def threat(self) -> Threat:
        """The rule's ATT&CK tags, parsed (once per rule)."""
        return parse_attack_tags(self.rule.tags)

    @property
    def level(self) -> str:
        """The Sigma level, normalised (unknown levels read as informational)."""
        return LEVELS[level_rank(self.rule.level)]

    @property
    def rank(self) -> int:
        return level_rank(self.rule.level)

    @property
    def severity(self) -> int:
        return severity(self.rule.level)

    def summary(self) -> str:
        """One line for pages and logs: ``[high] Rule title (input:topic:0:42)``."""
        return f"[{self.level}] {self.rule.title} ({self.origin.token()})"

    def to_document(self) -> dict[str, Any]:
        """The ECS-style alert document (schema: ``service/alerting/schemas/alert.schema.json``).

        What depends on the rule alone is built once per rule (:func:`_rule_parts`); every container
        of the document is new (the router and sinks may change a document: no other alert's sees it)."""
        rule = self.rule
        parts = _RULE_PARTS.get(id(rule))
        if parts is None or parts.rule is not rule:
            parts = _rule_parts(rule)
        original, truncated, original_size, entities = self._derive()
        token = self.origin.token()
        origin: dict[str, Any] = {"input": self.origin.input, "token": token}
        for key in ("topic", "partition", "offset", "key"):
            value = getattr(self.origin, key)
            if value is not None:
                origin[key] = value
        pipesentry = parts.pipesentry.copy()
        pipesentry["alert_id"] = self.id
        pipesentry["origin"] = origin
        pipesentry["logsource"] = _logsource_dict(self.logsource).copy()
        pipesentry["falsepositives"] = list(parts.falsepositives)
        pipesentry["matched"] = [
            {"field": name, "value": value if type(value) is str and len(value) <= MAX_MATCHED_VALUE_CHARS
             else _shown(value)}
            for name, value in self.matched[:MAX_MATCHED_FIELDS]]
        pipesentry["original_truncated"] = truncated
        pipesentry["original_size"] = original_size
        rule_doc = parts.rule_doc.copy()
        rule_doc["reference"] = list(parts.references)
        doc: dict[str, Any] = {
            "@timestamp": iso_time(self.timestamp),
            "message": f"{parts.summary}{token})",
            "event": {
                "kind": "alert",
                "id": self.id,
                "created": iso_time(self.created),
                "severity": parts.severity,
                "original": original,
            },
            "rule": rule_doc,
            "tags": list(rule.tags),
            "pipesentry": pipesentry,
        }
        if entities:
            place(doc, entities)
        if parts.threat is not None:
            doc["threat"] = orjson.loads(parts.threat)  # a new copy per alert
        if self.details:
            pipesentry["details"] = orjson.loads(_compact_json(dict(self.details)))  # big ints too
        return doc


@dataclass(frozen=True, slots=True)
class _RuleParts:
    """A rule's share of its alerts' documents. The dicts are templates, copied per alert (their
    values are strings and numbers); the lists are kept as tuples and listed per alert."""

    rule: RuleInfo
    """Kept so its ``id()`` (the cache key) is not reused by another rule."""
    rule_doc: dict[str, Any]
    """``rule``, its ``reference`` to fill."""
    references: tuple[str, ...]
    pipesentry: dict[str, Any]
    """``pipesentry`` in its key order, the per-alert values to fill."""
    falsepositives: tuple[str, ...]
    summary: str
    """``message`` up to the origin token: ``[high] Rule title (``."""
    severity: int
    threat: bytes | None
    """``threat`` as JSON, or None when the rule has no ATT&CK tag."""


_RULE_PARTS: dict[int, _RuleParts] = {}
"""By the rule's ``id()``: a rule is immutable, and hashing one (all its fields) costs more than
building its part of the document. Holds only rules that fired; cleared when it reaches
:data:`_MAX_RULE_PARTS` (rules of earlier reloads), so what it keeps alive stays bounded."""
_MAX_RULE_PARTS = 8192


def _rule_parts(rule: RuleInfo) -> _RuleParts:
    level = LEVELS[level_rank(rule.level)]
    threat = parse_attack_tags(rule.tags)
    parts = _RuleParts(
        rule=rule,
        rule_doc={
            "id": rule.id,
            "uuid": rule.id,
            "name": rule.title,
            "description": rule.description,
            "author": rule.author or "unknown",
            "reference": None,
            "version": rule.modified or rule.date or "",
            "ruleset": rule.ruleset,
            "license": rule.license or "",
            "category": rule.kind,
        },
        references=tuple(rule.references),
        pipesentry={
            "alert_id": None,
            "origin": None,
            "logsource": None,
            "level": level,
            "severity_label": level,
            "rule_kind": rule.kind,
            "rule_status": rule.status or "",
            "rule_source": rule.source,
            "falsepositives": None,
            "matched": None,
            "original_truncated": None,
            "original_size": None,
            "suppressed_count": 0,
        },
        falsepositives=tuple(rule.falsepositives),
        summary=f"[{level}] {rule.title} (",
        severity=severity(rule.level),
        threat=_threat_json(threat) if threat else None,
    )
    if len(_RULE_PARTS) >= _MAX_RULE_PARTS:
        _RULE_PARTS.clear()
    _RULE_PARTS[id(rule)] = parts
    return parts


@lru_cache(maxsize=1024)
def _logsource_dict(logsource: LogSource) -> dict[str, str]:
    """Template: copied per alert."""
    return logsource.as_dict()


def build_alert(match: Match, event: Event, origin: Origin, *, event_time: float | datetime,
                now: float | datetime, logsource: LogSource | None = None,
                max_original_bytes: int = DEFAULT_MAX_ORIGINAL_BYTES) -> Alert:
    """Turn a detection into an alert.

    The id uses ``match.details["alert_key"]`` when a detector provides one
    (correlations, anomaly checks: events they aggregate have no single
    origin) and the event's origin token otherwise. A match about another event
    than ``event`` (``match.about``: an anomaly window's first event) takes that
    event's time and origin, and shows no original (the detector kept none).
    """
    about = match.about
    if about is not None:
        event, origin, event_time = {}, about.origin, about.time
    details = match.details
    key = details.get("alert_key") if details else None
    return event_alert(match, event, origin, str(key) if key is not None else origin.token(),
                       event_time if type(event_time) is float else _as_ts(event_time),
                       now if type(now) is float else _as_ts(now), logsource or NO_LOGSOURCE, max_original_bytes)


def event_alert(match: Match, event: Event, origin: Origin, key: str, event_time: float, now: float,
                logsource: LogSource, max_original_bytes: int) -> Alert:
    """:func:`build_alert`'s alert once its arguments are settled (``key``: what the id is made of;
    times as floats): the detector's way for a match about the event itself, whose origin token
    it reads once for all of the event's matches."""
    # Alert(...) made from a plain twin with the same slots: a frozen dataclass's __init__ costs three times as much
    alert = _ALERT()
    rule = alert.rule = match.rule
    alert.id = alert_id(rule.id, key)
    alert.timestamp = event_time
    alert.created = now
    alert.origin = origin
    alert.logsource = logsource
    matched = match.fields
    alert.matched = matched if type(matched) is tuple else tuple(matched)
    alert.details = match.details
    alert.event = event
    alert.max_original_bytes = max_original_bytes
    alert._derived = None
    alert.__class__ = Alert
    return alert  # type: ignore[no-any-return]


NO_LOGSOURCE = LogSource()
"""An alert's log source when its event had none."""
_ALERT = slot_twin(Alert, ("id", "rule", "timestamp", "created", "origin", "logsource", "matched", "details", "event",
                           "max_original_bytes", "_derived"))
