"""Plain-text decoders: a named-group regex per line (``regex``) or the line as ``message`` (``text``).

Options for ``regex``: ``pattern`` (required, at least one named group; every
named group that took part in the match becomes a field), ``keep_message``
(default true: the whole line also goes to ``message``) and ``max_bytes``.
The pattern is the operator's, compiled once with Python ``re`` and applied
with ``search``: anchor it (``^...$``) to require the whole line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from service.decoders import DecodeError, Decoder, positive_int

DEFAULT_MAX_BYTES = 65_536


def _text(data: bytes, max_bytes: int) -> str:
    if len(data) > max_bytes:
        raise DecodeError("oversize", f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DecodeError("utf8", f"invalid UTF-8 at byte {exc.start}") from None


def factory(options: Mapping[str, Any]) -> Decoder:
    unknown = set(options) - {"pattern", "keep_message", "max_bytes"}
    if unknown:
        raise ValueError(f"unknown regex decoder option(s): {', '.join(sorted(unknown))}")
    source = options.get("pattern")
    if not isinstance(source, str) or not source:
        raise ValueError("regex decoder needs option 'pattern' (a regex with named groups)")
    try:
        pattern = re.compile(source)
    except re.error as exc:
        raise ValueError(f"regex decoder pattern does not compile: {exc}") from None
    if not pattern.groupindex:
        raise ValueError("regex decoder pattern has no named groups (?P<name>...)")
    keep_message = options.get("keep_message", True)
    if not isinstance(keep_message, bool):
        raise ValueError("regex decoder option keep_message must be true or false")
    max_bytes = positive_int(options, "max_bytes", DEFAULT_MAX_BYTES, "regex")

    def decode_regex(data: bytes) -> list[dict[str, Any]]:
        line = _text(data, max_bytes)
        found = pattern.search(line)
        if found is None:
            raise DecodeError("no_match", "line does not match the configured pattern")
        event: dict[str, Any] = {k: v for k, v in found.groupdict().items() if v is not None}
        if keep_message:
            event.setdefault("message", line)
        return [event]

    return decode_regex


def text_factory(options: Mapping[str, Any]) -> Decoder:
    unknown = set(options) - {"max_bytes"}
    if unknown:
        raise ValueError(f"unknown text decoder option(s): {', '.join(sorted(unknown))}")
    max_bytes = positive_int(options, "max_bytes", DEFAULT_MAX_BYTES, "text")

    def decode_text(data: bytes) -> list[dict[str, Any]]:
        return [{"message": _text(data, max_bytes)}]

    return decode_text
