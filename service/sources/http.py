"""Parsing an ingest request body into raw messages (``POST /api/v1/events``).

A body starting with ``[`` is a JSON array of events; anything else is NDJSON
(one message per line, read by the input's decoder, so text or syslog lines
work too). Array elements are re-encoded one by one so every event goes
through the same decoder and the same checks as any other input.

Events posted over HTTP carry no position, so their origin key is a hash of
their bytes: a client retrying a request after a timeout gets the same alert
ids, which sinks drop as duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import orjson

from detectors.model import LogSource, Origin
from service.errors import ServiceError
from service.pipeline.source import Batch
from service.sources.base import InputSpec, RawMessage

log = logging.getLogger(__name__)


class IngestError(ServiceError, ValueError):
    """The body as a whole is unusable (not an array, too many events)."""


@dataclass
class ParsedBody:
    messages: list[RawMessage] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    """(index, reason, message) of elements that are not even candidate events."""


def content_key(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def content_origin(input_name: str, data: bytes) -> Origin:
    """The origin of a pushed message: its input and a hash of its bytes (a resent message keeps
    its alert ids)."""
    return Origin(input_name, key=content_key(data))


def _message(data: bytes, received: float, input_name: str) -> RawMessage:
    return RawMessage(data, partial(content_origin, input_name, data), received)


PARSE_CHUNK = 2000
"""Messages made between two yields of :func:`parse_body_async` to the event loop."""


def _parse_steps(body: bytes, received: float, max_events: int, input_name: str,
                 parsed: ParsedBody) -> Iterator[None]:
    """Fill ``parsed`` from ``body``, yielding after every ``PARSE_CHUNK`` messages."""
    stripped = body.lstrip()
    if stripped.startswith(b"["):
        try:
            values = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise IngestError(f"body starts with '[' but is not a JSON array: {exc}") from None
        if not isinstance(values, list):
            raise IngestError("body is not a JSON array")
        if len(values) > max_events:
            raise IngestError(f"{len(values)} events exceed the limit of {max_events} per request")
        for start in range(0, len(values), PARSE_CHUNK):
            yield
            parsed.messages.extend(_message(orjson.dumps(value), received, input_name)
                                   for value in values[start:start + PARSE_CHUNK])
        return
    lines = body.splitlines()
    kept: list[bytes] = []
    for start in range(0, len(lines), PARSE_CHUNK):
        yield
        kept.extend(line for line in lines[start:start + PARSE_CHUNK] if line.strip())
    if len(kept) > max_events:
        raise IngestError(f"{len(kept)} events exceed the limit of {max_events} per request")
    for start in range(0, len(kept), PARSE_CHUNK):
        yield
        parsed.messages.extend(_message(line, received, input_name) for line in kept[start:start + PARSE_CHUNK])


def parse_body(body: bytes, received: float, *, max_events: int, input_name: str = "http") -> ParsedBody:
    """Split ``body`` into raw messages; raises :class:`IngestError` for a body that is wrong as a whole."""
    parsed = ParsedBody()
    for _ in _parse_steps(body, received, max_events, input_name, parsed):
        pass
    return parsed


async def parse_body_async(body: bytes, received: float, *, max_events: int,
                           input_name: str = "http") -> ParsedBody:
    """:func:`parse_body` letting the event loop run between chunks, so a 10 MB body does not
    hold up other requests (``/healthz`` among them) while it is split."""
    parsed = ParsedBody()
    for _ in _parse_steps(body, received, max_events, input_name, parsed):
        await asyncio.sleep(0)
    return parsed


class HttpInput:
    """``POST /api/v1/events`` as an input: each request body is one :class:`Batch`, acknowledged
    by the response. A batch the pipeline cannot take is not retried here: the client gets a 503
    and resends (with the same alert ids)."""

    name = "http"

    def __init__(self, spec: InputSpec, max_events: int) -> None:
        self.spec = spec
        self.max_events = max_events

    async def batch(self, body: bytes, received: float, logsource: LogSource | None = None) -> Batch:
        """The request's batch (``logsource`` from the query overrides the configured one);
        raises :class:`IngestError` for a body that is wrong as a whole."""
        parsed = await parse_body_async(body, received, max_events=self.max_events, input_name=self.name)
        spec = self.spec
        if logsource is not None:
            spec = InputSpec(spec.name, spec.decoder, logsource, spec.time_fields)
        return Batch(parsed.messages, spec, retry=_answer_503)


def _answer_503(error: Exception) -> bool:
    log.warning("ingest: alerts not accepted", extra={"error": f"{type(error).__name__}: {error}"})
    return False
