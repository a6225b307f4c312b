"""Parsing an ingest request body into raw messages (``POST /api/v1/events``).

How the body is split depends on its content type (:data:`LINES`, :data:`JSON`, :data:`AUTO`):

* NDJSON (``application/x-ndjson`` and its aliases, ``text/plain``): one message per line,
  whatever the line starts with; each is read by the input's decoder on its own, so a bad
  line (``[1, 2]`` among objects) is one rejected line, and text or syslog lines work too;
* ``application/json``: a JSON array of events, or one JSON object (one event); a body of
  several JSON values, one per line, is read as NDJSON;
* no content type: a body starting with ``[`` is a JSON array, anything else NDJSON.

Array elements are re-encoded one by one so every event goes through the same
decoder and the same checks as any other input; an element nested too deep to
re-encode is rejected on its own (``depth``), as is a body nested too deep to parse.

Events posted over HTTP carry no position, so their origin key is a hash of
their bytes: a client retrying a request after a timeout gets the same alert
ids, which sinks drop as duplicates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from hashlib import blake2b

import orjson

from detectors.model import LogSource, Origin, keyed_origin
from service.decoders.json import json_type
from service.errors import ServiceError
from service.pipeline.source import Batch
from service.sources.base import InputSpec, RawMessage

log = logging.getLogger(__name__)


AUTO, JSON, LINES = "auto", "json", "lines"
"""How a body is split: sniffed (no content type), JSON document(s), one message per line."""


class IngestError(ServiceError, ValueError):
    """The body as a whole is unusable (not an array, too many events); ``reason`` is a metric word."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class ParsedBody:
    messages: list[RawMessage] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    """Index of each message in the body (its array element or non-blank line, from 0)."""
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    """(index, reason, message) of elements that are not even candidate events."""


CONTENT_DIGEST = 12
"""Bytes of the blake2b digest that keys a message by its content."""


def content_key(data: bytes) -> str:
    return blake2b(data, digest_size=CONTENT_DIGEST).hexdigest()


def content_origin(input_name: str, data: bytes) -> Origin:
    """The origin of a pushed message: its input and a hash of its bytes (a resent message keeps
    its alert ids)."""
    return keyed_origin(input_name, blake2b(data, digest_size=CONTENT_DIGEST).hexdigest())


def _message(data: bytes, received: float, input_name: str) -> RawMessage:
    return RawMessage(data, partial(content_origin, input_name, data), received)


PARSE_CHUNK = 2000
"""Messages made between two yields of :func:`parse_body_async` to the event loop."""


def _too_deep(exc: Exception) -> bool:
    text = str(exc).lower()
    return "depth" in text or "recursion" in text


def _document(stripped: bytes, mode: str) -> object | None:
    """The body as one JSON value, or None when it is to be read line by line."""
    if mode == AUTO and not stripped.startswith(b"["):
        return None
    try:
        value: object = orjson.loads(stripped)
    except orjson.JSONDecodeError as exc:
        if _too_deep(exc):
            raise IngestError("the body is nested deeper than JSON parsing allows", "depth") from None
        if mode == JSON and not stripped.startswith(b"["):
            return None  # several values (NDJSON sent as application/json) or a bad first line: by line
        raise IngestError(f"body starts with '[' but is not a JSON array: {exc}", "decode") from None
    return value


def _parse_steps(body: bytes, received: float, max_events: int, input_name: str,
                 parsed: ParsedBody, mode: str = AUTO) -> Iterator[None]:
    """Fill ``parsed`` from ``body``, yielding after every ``PARSE_CHUNK`` messages."""
    stripped = body.strip()
    document = None if mode == LINES else _document(stripped, mode)
    if isinstance(document, dict):
        parsed.messages.append(_message(stripped, received, input_name))
        parsed.positions.append(0)
        return
    if document is not None:
        if not isinstance(document, list):
            raise IngestError(f"expected a JSON array or object, got {json_type(document)}", "not_object")
        if len(document) > max_events:
            raise IngestError(f"{len(document)} events exceed the limit of {max_events} per request")
        for start in range(0, len(document), PARSE_CHUNK):
            yield
            for index, value in enumerate(document[start:start + PARSE_CHUNK], start):
                try:
                    data = orjson.dumps(value)
                except TypeError:  # deeper than orjson writes (255 levels): no decoder would take it
                    parsed.errors.append((index, "depth", "element nested too deep"))
                    continue
                parsed.messages.append(_message(data, received, input_name))
                parsed.positions.append(index)
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
    parsed.positions.extend(range(len(kept)))


def parse_body(body: bytes, received: float, *, max_events: int, input_name: str = "http",
               mode: str = AUTO) -> ParsedBody:
    """Split ``body`` into raw messages; raises :class:`IngestError` for a body that is wrong as a whole."""
    parsed = ParsedBody()
    for _ in _parse_steps(body, received, max_events, input_name, parsed, mode):
        pass
    return parsed


async def parse_body_async(body: bytes, received: float, *, max_events: int,
                           input_name: str = "http", mode: str = AUTO) -> ParsedBody:
    """:func:`parse_body` letting the event loop run between chunks, so a 10 MB body does not
    hold up other requests (``/healthz`` among them) while it is split."""
    parsed = ParsedBody()
    for _ in _parse_steps(body, received, max_events, input_name, parsed, mode):
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

    async def parse(self, body: bytes, received: float, mode: str = AUTO) -> ParsedBody:
        """The request body's messages; raises :class:`IngestError` for a body wrong as a whole."""
        return await parse_body_async(body, received, max_events=self.max_events, input_name=self.name, mode=mode)

    def batch_of(self, parsed: ParsedBody, logsource: LogSource | None = None) -> Batch:
        """The request's batch (``logsource`` from the query overrides the configured one)."""
        spec = self.spec
        if logsource is not None:
            spec = InputSpec(spec.name, spec.decoder, logsource, spec.time_fields)
        return Batch(parsed.messages, spec, retry=_answer_503)

    async def batch(self, body: bytes, received: float, logsource: LogSource | None = None,
                    mode: str = AUTO) -> Batch:
        """:meth:`parse` then :meth:`batch_of`."""
        return self.batch_of(await self.parse(body, received, mode), logsource)


def _answer_503(error: Exception) -> bool:
    log.warning("ingest: alerts not accepted", extra={"error": f"{type(error).__name__}: {error}"})
    return False
