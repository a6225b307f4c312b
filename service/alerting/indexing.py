"""What the alert store indexes of an alert document beside the document itself (no I/O).

* **Entities** (``host``, ``user``): the values of well-known field names
  (:data:`ENTITY_FIELDS`, case-insensitive, nested or dotted) found in the
  original event, the matched fields, a correlation's group and an anomaly
  check's key. Lower-cased, at most :data:`MAX_ENTITY_VALUES` per kind.
* **Tags**: the rule's tags lower-cased; a sub-technique (``attack.t1059.001``)
  also under its technique (``attack.t1059``), so a technique filter finds both.
* **Search text**: the values (never the key names) of the document's strings
  and of the original event, lower-cased, one per line; ``q`` is a substring of
  one value. A truncated original (``event.original`` cut at its cap) is not
  JSON any more: its quoted strings not followed by ``:`` (values, not keys)
  and its bare numbers are taken instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from detectors.alert import ATTACK_TACTICS
from detectors.event import flatten

ENTITY_FIELDS: Mapping[str, frozenset[str]] = {
    "host": frozenset({
        "host", "hostname", "host.name", "host.hostname", "computer", "computername", "computer_name",
        "agent.hostname", "device.hostname", "devicename", "dvchost", "node", "nodename", "node.name",
        "kubernetes.node.name", "runner.name", "runner_name", "machine", "machinename", "workstation",
        "workstationname",
    }),
    "user": frozenset({
        "user", "user.name", "user.username", "user.login", "user.email", "username", "user_name", "login",
        "actor", "actor.name", "actor.login", "author_name", "sender.login", "subjectusername",
        "targetusername", "useridentity.username", "useridentity.arn", "principal", "principal.name",
        "account", "account.name", "accountname", "email", "user_email",
    }),
}
"""Field names (lower-case paths) whose values are a host's or a user's name."""
ENTITY_KINDS = tuple(ENTITY_FIELDS)
MAX_ENTITY_VALUES = 16
MAX_ENTITY_CHARS = 256
MAX_SEARCH_CHARS = 65_536
"""Characters of an alert's search text kept (the original event is itself capped)."""
MAX_TAGS = 64

_TECHNIQUE = re.compile(r"^attack\.(t\d{4})\.\d{3}$")
_TACTIC_IDS = {tid.lower(): f"attack.{name}" for name, (tid, _) in ATTACK_TACTICS.items()}
_QUOTED_VALUE = re.compile(r'"((?:[^"\\]|\\.)*)"(?!\s*:)')
_BARE_NUMBER = re.compile(r"(?<=[:\[,])\s*(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)")
_FIELD_NAMES = frozenset({"field"})
"""Keys whose values name fields (``pipesentry.matched[].field``, a correlation's value field): names, not values."""


@dataclass(frozen=True, slots=True)
class Indexed:
    entities: list[tuple[str, str]]
    """(kind, lower-cased value)."""
    tags: list[str]
    search: str
    product: str
    service: str
    category: str


def normalise_tag(tag: str) -> str:
    """A tag filter as stored: lower-case, ``attack.`` added to a bare technique or tactic
    (``T1059``, ``execution``), a tactic id (``TA0002``) as its name."""
    t = tag.strip().lower()
    if t in _TACTIC_IDS:
        return _TACTIC_IDS[t]
    if not t.startswith("attack.") and (re.fullmatch(r"t\d{4}(\.\d{3})?", t) or t in ATTACK_TACTICS):
        return "attack." + t
    return t


def _section(doc: Mapping[str, Any], inner: str) -> Mapping[str, Any]:
    """``pipesentry.<inner>``, or ``log.source`` in alerts stored by builds before the ECS placement
    (it held the origin and the log source together)."""
    for outer, name in (("pipesentry", inner), ("log", "source")):
        node = doc.get(outer)
        node = node.get(name) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and node:
            return node
    return {}


def origin_of(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """Where the alert's event came from (input, topic, partition, offset, token)."""
    return _section(doc, "origin")


def logsource_of(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The alert's log source (product, service, category)."""
    return _section(doc, "logsource")


def original_event(doc: Mapping[str, Any]) -> Any:
    """The alert's original event as parsed JSON, or ``None`` (truncated, absent or not JSON)."""
    event = doc.get("event")
    original = event.get("original") if isinstance(event, Mapping) else None
    if not isinstance(original, str) or not original:
        return None
    pipesentry = doc.get("pipesentry")
    if isinstance(pipesentry, Mapping) and pipesentry.get("original_truncated"):
        return None
    try:
        return orjson.loads(original)
    except orjson.JSONDecodeError:
        return None


def _scalars(value: Any, depth: int = 0) -> Iterator[Any]:
    if isinstance(value, Mapping):
        if depth < 32:
            for item in value.values():
                yield from _scalars(item, depth + 1)
    elif isinstance(value, list | tuple):
        if depth < 32:
            for item in value:
                yield from _scalars(item, depth + 1)
    elif value is not None and not isinstance(value, bool):
        yield value


_LEFT_OUT: frozenset[tuple[str, ...]] = frozenset({
    ("@timestamp",), ("event", "original"), ("event", "created"), ("event", "kind"), ("rule", "uuid"),
    ("rule", "reference"), ("rule", "license"), ("threat",), ("pipesentry", "alert_id"),
    ("pipesentry", "severity_label"), ("pipesentry", "rule_source"), ("pipesentry", "rule_kind"),
})
"""Document paths not searched: the original (read as an event instead), times, duplicates of other
values and text derived from the tags (ATT&CK names and links)."""


def _doc_strings(doc: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[str]:
    """The document's string values, the :data:`_LEFT_OUT` paths and field names excepted."""
    for key, value in doc.items():
        here = (*path, key)
        if here in _LEFT_OUT or key in _FIELD_NAMES:
            continue
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping) and len(here) < 32:
            yield from _doc_strings(value, here)
        elif isinstance(value, list) and len(here) < 32:
            for item in value:
                if isinstance(item, str):
                    yield item
                elif isinstance(item, Mapping):
                    yield from _doc_strings(item, here)


def _truncated_values(text: str) -> Iterator[str]:
    for m in _QUOTED_VALUE.finditer(text):
        raw = m.group(1)
        try:
            yield orjson.loads(f'"{raw}"')
        except orjson.JSONDecodeError:
            yield raw
    for m in _BARE_NUMBER.finditer(text):
        yield m.group(1)


def _entity_pairs(doc: Mapping[str, Any], event: Any) -> Iterator[tuple[str, Any]]:
    """(lower-case field path, value) from the event, the matched fields and the details' group/key."""
    if isinstance(event, Mapping):
        for path, values in flatten(event).items():
            for value in values:
                yield path, value
    pipesentry = doc.get("pipesentry")
    if not isinstance(pipesentry, Mapping):
        return
    for item in pipesentry.get("matched") or ():
        if isinstance(item, Mapping):
            yield str(item.get("field", "")).lower(), item.get("value")
    details = pipesentry.get("details")
    if isinstance(details, Mapping):
        for part in ("group", "key"):
            fields = details.get(part)
            if isinstance(fields, Mapping):
                for name, value in fields.items():
                    yield str(name).lower(), value


def entities(doc: Mapping[str, Any], event: Any) -> list[tuple[str, str]]:
    found: dict[str, list[str]] = {kind: [] for kind in ENTITY_KINDS}
    for path, value in _entity_pairs(doc, event):
        if not isinstance(value, str | int) or isinstance(value, bool):
            continue
        for kind, names in ENTITY_FIELDS.items():
            if path in names:
                text = str(value).strip().lower()[:MAX_ENTITY_CHARS]
                bucket = found[kind]
                if text and text not in bucket and len(bucket) < MAX_ENTITY_VALUES:
                    bucket.append(text)
    return [(kind, value) for kind, values in found.items() for value in values]


def tags(doc: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for tag in doc.get("tags") or ():
        if not isinstance(tag, str):
            continue
        t = tag.strip().lower()
        m = _TECHNIQUE.match(t)
        for name in (t, f"attack.{m.group(1)}" if m else None):
            if name and name not in out and len(out) < MAX_TAGS:
                out.append(name)
    return out


def search_text(doc: Mapping[str, Any], event: Any) -> str:
    parts: list[str] = list(_doc_strings(doc))
    if event is not None:
        parts.extend(str(v) for v in _scalars(event))
    else:
        original = (doc.get("event") or {}).get("original")
        if isinstance(original, str):
            parts.extend(_truncated_values(original))
    text = "\n".join(dict.fromkeys(p.replace("\n", " ") for p in parts if p))
    return text[:MAX_SEARCH_CHARS].lower()


def index(doc: Mapping[str, Any]) -> Indexed:
    """What the store keeps of ``doc`` beside it."""
    event = original_event(doc)
    source = logsource_of(doc)

    def field(name: str) -> str:
        value = source.get(name)
        return str(value).lower() if value else ""

    return Indexed(entities=entities(doc, event), tags=tags(doc), search=search_text(doc, event),
                   product=field("product"), service=field("service"), category=field("category"))
