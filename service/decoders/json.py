"""JSON decoders: one object per message (``json``) or one per line (``ndjson``).

Checks are ordered so the common case costs one ``orjson.loads``: size first,
nesting depth only when the message holds enough brackets to exceed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from service.decoders import DecodeError, Decoder, positive_int

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_BYTES = 1_048_576


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of ``value``, stopping early once it passes ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, dict | list))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
    return deepest


JSON_TYPE_NAMES: dict[type, str] = {dict: "object", list: "array", str: "string", int: "number", float: "number",
                               bool: "boolean", type(None): "null"}


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type (``null``, ``array``, ...), not Python's."""
    return JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _options(options: Mapping[str, Any]) -> tuple[int, int]:
    unknown = set(options) - {"max_depth", "max_bytes"}
    if unknown:
        raise ValueError(f"unknown json decoder option(s): {', '.join(sorted(unknown))}")
    return (positive_int(options, "max_depth", DEFAULT_MAX_DEPTH, "json"),
            positive_int(options, "max_bytes", DEFAULT_MAX_BYTES, "json"))


def parse_object(data: bytes, max_depth: int, max_bytes: int) -> dict[str, Any]:
    """One JSON object from ``data`` or a :class:`DecodeError` naming why not."""
    if len(data) > max_bytes:
        raise DecodeError("oversize", f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        if "utf-8" in text.lower() or "surrogate" in text.lower():
            raise DecodeError("utf8", f"invalid UTF-8: {text}") from None
        if "recursion" in text.lower() or "depth" in text.lower():  # orjson stops at 1,024 levels
            raise DecodeError("depth", f"nesting deeper than {max_depth}") from None
        raise DecodeError("decode", f"invalid JSON: {text}") from None
    if not isinstance(value, dict):
        raise DecodeError("not_object", f"expected a JSON object, got {json_type(value)}")
    if data.count(b"{") + data.count(b"[") > max_depth and _depth(value, max_depth) > max_depth:
        raise DecodeError("depth", f"nesting deeper than {max_depth}")
    return value


class JsonObjectDecoder:
    """The ``json`` decoder; its limits are public so the Kafka loop can hand raw messages to
    the native screen (:mod:`detectors.sigma.screen`), which must refuse what this refuses."""

    __slots__ = ("max_bytes", "max_depth")

    def __init__(self, max_depth: int, max_bytes: int) -> None:
        self.max_depth = max_depth
        self.max_bytes = max_bytes

    def __call__(self, data: bytes) -> list[dict[str, Any]]:
        return [parse_object(data, self.max_depth, self.max_bytes)]


def factory(options: Mapping[str, Any]) -> Decoder:
    return JsonObjectDecoder(*_options(options))


def ndjson_factory(options: Mapping[str, Any]) -> Decoder:
    """Several objects in one message, one per line; any bad line rejects the whole message."""
    max_depth, max_bytes = _options(options)

    def decode_ndjson(data: bytes) -> list[dict[str, Any]]:
        if len(data) > max_bytes:
            raise DecodeError("oversize", f"message of {len(data)} bytes exceeds {max_bytes}")
        events = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                events.append(parse_object(line, max_depth, max_bytes))
            except DecodeError as exc:
                raise DecodeError(exc.reason, f"line {number}: {exc.message}") from None
        return events

    return decode_ndjson
