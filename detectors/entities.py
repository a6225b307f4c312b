"""Entity fields of an alert: well-known ECS fields read from the original event, typed.

An analyst pivots on who (``user.*``), where (``host.*``, ``source.*``, ``destination.*``,
``cloud.*``, ``orchestrator.*``, ``container.*``) and what (``process.*``, ``file.*``, ``url.*``,
``http.*``, ``event.action``/``outcome``/``provider``). The alert document carries those fields
at their ECS place, mapped with their ECS types, so they can be searched and aggregated; the
whole event stays in ``event.original``.

Where a value comes from, per field, first found wins:

1. the ECS path itself (events shipped by Elastic Agent / Beats, or already ECS-shaped);
2. the native field names of the event's log source, as the rule pack's README lists them and
   ``sigma-rules/pipelines/ecs.pipeline`` maps them (CloudTrail ``sourceIPAddress`` ->
   ``source.ip``, Kubernetes audit ``user.username`` -> ``user.name``, ...);
3. for log sources without such a table only, SigmaHQ's generic taxonomy names (Sysmon-style
   ``Image``, ``CommandLine``, ``User``, ``SourceIp``, ...).

Values are checked against the field's type here, not by the index: a value that is not an IP
for an ``ip`` field, not an integer for a ``long``, a string longer than the field's cap, or an
object, is left out of the typed field (it stays in ``event.original``), so a hostile event can
never make the index reject the alert. At most :data:`MAX_VALUES` values per field.

Field names follow :mod:`detectors.event` (case-insensitive, nested or dotted keys, list
elements): the event is flattened once and every candidate path is a dict lookup.

Pure: no I/O; a log source's lookup plan is built once and cached.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final, Literal

from .event import flatten
from .model import LogSource

EntityType = Literal["keyword", "wildcard", "ip", "long"]

MAX_VALUES: Final = 16
"""Values kept per field (a list of 10,000 source IPs is not an entity)."""
MAX_KEYWORD_CHARS: Final = 1024
"""Longer strings are left out of ``keyword`` fields (the mapping's ``ignore_above``)."""
MAX_WILDCARD_CHARS: Final = 8192
"""Longer command lines and URLs are left out of ``wildcard`` fields."""
_LONG_MIN, _LONG_MAX = -(2 ** 63), 2 ** 63 - 1
_INTEGER = re.compile(r"^[+-]?\d{1,19}$")
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<v4>\d{1,3}(?:\.\d{1,3}){3})):\d{1,5}$")

ENTITY_FIELDS: Final[Mapping[str, EntityType]] = {
    "user.name": "keyword",
    "user.id": "keyword",
    "user.domain": "keyword",
    "user.target.name": "keyword",
    "host.name": "keyword",
    "host.hostname": "keyword",
    "host.ip": "ip",
    "source.address": "keyword",
    "source.ip": "ip",
    "source.port": "long",
    "destination.address": "keyword",
    "destination.domain": "keyword",
    "destination.ip": "ip",
    "destination.port": "long",
    "process.name": "keyword",
    "process.executable": "keyword",
    "process.pid": "long",
    "process.command_line": "wildcard",
    "process.parent.executable": "keyword",
    "process.parent.pid": "long",
    "process.parent.command_line": "wildcard",
    "file.path": "keyword",
    "file.name": "keyword",
    "url.original": "wildcard",
    "url.full": "wildcard",
    "url.path": "keyword",
    "url.domain": "keyword",
    "http.request.method": "keyword",
    "http.response.status_code": "long",
    "user_agent.original": "keyword",
    "cloud.provider": "keyword",
    "cloud.account.id": "keyword",
    "cloud.region": "keyword",
    "container.id": "keyword",
    "container.image.name": "keyword",
    "orchestrator.type": "keyword",
    "orchestrator.namespace": "keyword",
    "orchestrator.resource.type": "keyword",
    "orchestrator.resource.name": "keyword",
    "event.action": "keyword",
    "event.outcome": "keyword",
    "event.provider": "keyword",
}
"""The ECS fields an alert carries from its event, with their ECS types."""

RESERVED: Final = frozenset({"event.kind", "event.id", "event.created", "event.severity", "event.original"})
"""The alert's own ``event.*`` fields: never taken from the source event."""

_Sources = Mapping[str, tuple[str, ...]]
"""ECS field -> the native field names it is read from, in order."""

NATIVE_FIELDS: Final[tuple[tuple[LogSource, _Sources, Mapping[str, str]], ...]] = (
    (LogSource(product="aws", service="cloudtrail"), {
        "event.action": ("eventName",), "event.provider": ("eventSource",), "cloud.region": ("awsRegion",),
        "cloud.account.id": ("recipientAccountId", "userIdentity.accountId"),
        "source.address": ("sourceIPAddress",), "source.ip": ("sourceIPAddress",),
        "user.name": ("userIdentity.userName", "userIdentity.sessionContext.sessionIssuer.userName"),
        "user.id": ("userIdentity.principalId",), "user_agent.original": ("userAgent",),
    }, {"cloud.provider": "aws"}),
    (LogSource(product="kubernetes", service="audit"), {
        "user.name": ("user.username",), "user.id": ("user.uid",), "source.ip": ("sourceIPs",),
        "event.action": ("verb",), "orchestrator.namespace": ("objectRef.namespace",),
        "orchestrator.resource.type": ("objectRef.resource",), "orchestrator.resource.name": ("objectRef.name",),
        "url.original": ("requestURI",), "user_agent.original": ("userAgent",),
    }, {"orchestrator.type": "kubernetes"}),
    (LogSource(product="github", service="audit"), {
        "event.action": ("action",), "user.name": ("actor",), "user.target.name": ("user",),
        "source.ip": ("actor_ip",),
    }, {}),
    (LogSource(product="github", service="webhook"), {"user.name": ("pusher.name", "sender.login")}, {}),
    (LogSource(product="gitlab", service="audit"), {
        "event.action": ("event_type",), "user.name": ("author_name",), "source.ip": ("ip_address",),
    }, {}),
    (LogSource(product="jenkins", service="audit"), {
        "user.name": ("user",), "source.address": ("remote_addr",), "source.ip": ("remote_addr",),
        "url.path": ("uri",),
    }, {}),
    (LogSource(product="jenkins", service="build"), {"host.name": ("node",)}, {}),
    (LogSource(product="argocd", service="events"), {
        "event.action": ("reason",), "orchestrator.namespace": ("involvedObject.namespace",),
        "orchestrator.resource.type": ("involvedObject.kind",),
        "orchestrator.resource.name": ("involvedObject.name",),
    }, {"orchestrator.type": "kubernetes"}),
    (LogSource(product="container_registry", service="distribution"), {
        "event.action": ("action",), "user.name": ("actor.name",), "container.image.name": ("target.repository",),
        "source.address": ("request.addr",), "source.ip": ("request.addr",),
        "user_agent.original": ("request.useragent",), "host.name": ("source.instanceID",),
    }, {}),
    (LogSource(product="linux", service="auth"), {
        "host.hostname": ("hostname",), "process.name": ("app_name",), "process.pid": ("procid",),
    }, {}),
    (LogSource(product="linux", service="auditd"), {
        "process.executable": ("exe",), "process.name": ("comm",), "process.pid": ("pid",),
        "process.parent.pid": ("ppid",), "user.id": ("uid",), "file.path": ("name",),
    }, {}),
    (LogSource(product="linux", category="file_event"), {
        "file.path": ("TargetFilename",), "process.executable": ("Image",), "user.name": ("User",),
        "process.pid": ("ProcessId",),
    }, {}),
    (LogSource(category="webserver"), {
        "url.original": ("cs-uri-query", "request_uri", "path"), "url.path": ("cs-uri-stem", "uri"),
        "http.request.method": ("cs-method", "request_method", "method"),
        "http.response.status_code": ("sc-status", "status", "response_code"),
        "user_agent.original": ("cs-user-agent", "http_user_agent", "user_agent"),
        "url.domain": ("cs-host", "host", "authority"),
        "source.address": ("c-ip", "remote_addr", "downstream_remote_address"),
        "source.ip": ("c-ip", "remote_addr", "downstream_remote_address"),
    }, {}),
    (LogSource(product="json", category="application"), {
        "user.name": ("user",), "source.ip": ("client_ip",), "source.address": ("client_ip",),
    }, {}),
)
"""Per log source (a rule-style log source that covers the event's): native names and constants."""

GENERIC_FIELDS: Final[_Sources] = {
    "process.executable": ("Image",), "process.command_line": ("CommandLine",),
    "process.pid": ("ProcessId",), "process.parent.executable": ("ParentImage",),
    "process.parent.command_line": ("ParentCommandLine",), "process.parent.pid": ("ParentProcessId",),
    "user.name": ("User",), "host.name": ("Computer",), "file.path": ("TargetFilename",),
    "source.ip": ("SourceIp",), "source.port": ("SourcePort",), "destination.ip": ("DestinationIp",),
    "destination.port": ("DestinationPort",), "destination.domain": ("DestinationHostname",),
}
"""SigmaHQ taxonomy names (Sysmon-style), for log sources without a table in :data:`NATIVE_FIELDS`."""

_Fields = tuple[tuple[str, EntityType, tuple[str, ...], str | None], ...]
_Plan = tuple[_Fields, Mapping[str, tuple[int, ...]], frozenset[int]]


@lru_cache(maxsize=1024)
def _plan(source: LogSource) -> _Plan:
    """The fields with their candidate paths (lower-cased); for each candidate path the fields it may
    fill; the fields with a constant."""
    fields = _fields(source)
    by_path: dict[str, list[int]] = {}
    for i, (_, _, paths, _) in enumerate(fields):
        for path in paths:
            by_path.setdefault(path, []).append(i)
    constants = frozenset(i for i, field in enumerate(fields) if field[3] is not None)
    return fields, {path: tuple(ids) for path, ids in by_path.items()}, constants


def _fields(source: LogSource) -> _Fields:
    tables = [(fields, constants) for covers, fields, constants in NATIVE_FIELDS if covers.covers(source)]
    out = []
    for name, kind in ENTITY_FIELDS.items():
        paths: list[str] = [name]
        constant: str | None = None
        for fields, constants in tables:
            paths.extend(fields.get(name, ()))
            constant = constant or constants.get(name)
        if not tables:
            paths.extend(GENERIC_FIELDS.get(name, ()))
        out.append((name, kind, tuple(dict.fromkeys(p.lower() for p in paths)), constant))
    return tuple(out)


def _ip(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    return _parse_ip(value)


@lru_cache(maxsize=4096)
def _parse_ip(value: str) -> str | None:
    """Addresses repeat (a few clients make most events): parsed once each."""
    text = value.strip()
    m = _HOST_PORT.match(text)
    if m:
        text = m.group("v6") or m.group("v4")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _long(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and _LONG_MIN <= value <= _LONG_MAX:
        return value
    return None


def _text(value: Any, cap: int) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value and len(value) <= cap:
        return value
    return None


def _keyword(value: Any) -> str | None:
    return _text(value, MAX_KEYWORD_CHARS)


def _wildcard(value: Any) -> str | None:
    return _text(value, MAX_WILDCARD_CHARS)


_TYPED: Final[Mapping[str, Callable[[Any], Any]]] = {"ip": _ip, "long": _long, "keyword": _keyword,
                                                      "wildcard": _wildcard}


def typed(kind: EntityType, value: Any) -> Any:
    """``value`` as the field type holds it, or None when it does not fit."""
    convert = _TYPED.get(kind)
    if convert is None:
        raise TypeError(kind)
    return convert(value)


def extract(event: Mapping[str, Any] | None, source: LogSource) -> tuple[tuple[str, Any], ...]:
    """``(ecs_field, value)`` pairs for the alert of ``event`` (a value is a scalar, or a list when the
    event has several); fields without a fitting value are absent."""
    if not event:
        return ()
    flat = flatten(event)  # one pass over the event, then a dict lookup per candidate path
    fields, by_path, constants = _plan(source)
    wanted = set(constants)
    if len(flat) <= len(by_path):  # no set of either's keys: the smaller is walked, the other looked up
        for path in flat:
            if (ids := by_path.get(path)) is not None:
                wanted.update(ids)
    else:
        for path, ids in by_path.items():
            if path in flat:
                wanted.update(ids)
    out: list[tuple[str, Any]] = []
    for i in sorted(wanted):
        name, kind, paths, constant = fields[i]
        convert = _TYPED[kind]
        found: list[Any] = []
        for path in paths:
            for raw in flat.get(path, ()):
                value = convert(raw)
                if value is not None and value not in found:
                    found.append(value)
                    if len(found) >= MAX_VALUES:
                        break
            if found:
                break
        if not found and constant is not None:
            found.append(constant)
        if found:
            out.append((name, found[0] if len(found) == 1 else found))
    return tuple(out)


def place(doc: dict[str, Any], entities: tuple[tuple[str, Any], ...]) -> None:
    """Put ``entities`` into ``doc`` at their dotted paths (objects are created or extended; the
    alert's own fields (:data:`RESERVED`) and non-object values on the way are never replaced)."""
    for name, value in entities:
        path = _PATHS.get(name)
        if path is None:
            path = _path(name)
        if not path:
            continue
        node = doc
        for part in path[:-1]:
            child = node.get(part)
            if child is None and part not in node:
                child = node[part] = {}
            elif not isinstance(child, dict):
                break
            node = child
        else:
            if path[-1] not in node:
                node[path[-1]] = value[:] if type(value) is list else value  # the document's own list


_PATHS: dict[str, tuple[str, ...]] = {}
"""Entity name -> its path (empty for :data:`RESERVED` names): split once per name."""


def _path(name: str) -> tuple[str, ...]:
    path = () if name in RESERVED else tuple(name.split("."))
    if len(_PATHS) < 4096:  # entity names come from ENTITY_FIELDS; the bound is for other callers
        _PATHS[name] = path
    return path


__all__ = ["ENTITY_FIELDS", "GENERIC_FIELDS", "MAX_VALUES", "NATIVE_FIELDS", "RESERVED", "EntityType", "extract",
           "place", "typed"]
