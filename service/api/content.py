"""What an event ingest body may be: its media type, its encoding and its decompressed size.

``POST /api/v1/events`` reads JSON (``application/json``: an array or one object) and NDJSON
(``application/x-ndjson`` and its aliases: one event per line); ``text/plain`` only when the
HTTP input's decoder reads text lines (``syslog``, ``regex``, ``text``). A request without a
content type is sniffed as before (``[``: array, else lines). Anything else is a 415.

``Content-Encoding: gzip`` is decompressed here, in steps, stopping as soon as the output
passes the ingest body limit (413): a small compressed body cannot expand into gigabytes. Other
encodings are a 415. Every JSON media type here needs a CORS preflight, which is why
:mod:`service.api.crossorigin` takes them as proof of a same-site client.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from service.errors import ServiceError
from service.sources.http import AUTO, JSON, LINES

JSON_TYPE = "application/json"
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines", "application/jsonlines"})
JSON_TYPES = frozenset({JSON_TYPE, *NDJSON_TYPES})
"""Media types of JSON ingest bodies (and of any JSON request, for the cross-origin guard)."""
TEXT_TYPE = "text/plain"
LINE_DECODERS = frozenset({"syslog", "regex", "text"})
ENCODINGS = frozenset({"gzip", "x-gzip", "identity"})
STEP = 262_144
"""Decompressed bytes produced per step."""


class BodyRefused(ServiceError):
    """The body cannot be read: ``status`` (413, 415) and ``reason`` (metric word) say why."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def media_type(content_type: str | None) -> str | None:
    """``application/json`` from ``Application/JSON; charset=utf-8``; None when absent or blank."""
    if content_type is None:
        return None
    kind = content_type.partition(";")[0].strip().lower()
    return kind or None


def split_mode(content_type: str | None, decoder: str) -> str:
    """How to split a body of this content type (``service.sources.http`` modes); raises 415."""
    kind = media_type(content_type)
    if kind is None:
        return AUTO
    if kind == JSON_TYPE:
        return JSON
    if kind in NDJSON_TYPES or (kind == TEXT_TYPE and decoder in LINE_DECODERS):
        return LINES
    accepted = ", ".join(sorted(JSON_TYPES) + ([TEXT_TYPE] if decoder in LINE_DECODERS else []))
    raise BodyRefused(415, "unsupported_media_type",
                      f"content type {kind[:64]!r} is not accepted here; send one of: {accepted}")


def decoded_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``body`` without its content encoding; raises :class:`BodyRefused` (415 unknown encoding,
    413 over ``limit`` once decompressed, 400 corrupt gzip)."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    unknown = [c for c in codings if c not in ENCODINGS]
    if unknown:
        raise BodyRefused(415, "unsupported_media_type",
                          f"content encoding {unknown[0][:32]!r} is not accepted; send gzip or identity")
    for _ in [c for c in codings if c != "identity"]:
        body = _gunzip(body, limit)
    return body


def _gunzip(data: bytes, limit: int) -> bytes:
    """Every gzip member of ``data`` (concatenated files are one stream), up to ``limit`` bytes."""
    out: list[bytes] = []
    size = 0
    pending = data
    try:
        while pending:
            inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            while not inflate.eof:
                chunk = inflate.decompress(pending, STEP)
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(413, "too_large", f"request body exceeds the limit of {limit} bytes "
                                      "once decompressed")
                out.append(chunk)
                pending = inflate.unconsumed_tail
                if not chunk and not pending:
                    raise BodyRefused(400, "invalid", "the gzip body is truncated")
            pending = inflate.unused_data
    except zlib.error as exc:
        raise BodyRefused(400, "invalid", f"the gzip body is corrupt: {exc}") from None
    return b"".join(out)
