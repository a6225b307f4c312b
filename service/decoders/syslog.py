"""Syslog decoder: RFC 5424 and the older BSD format of RFC 3164, told apart per message.

Both yield the same field names: ``facility``, ``severity`` (numbers),
``facility_name``/``severity_name``, ``timestamp`` (as written), ``hostname``,
``app_name``, ``procid``, ``msgid`` (5424 only), ``structured_data``
(``{sd-id: {param: value}}``, 5424 only) and ``message``. A missing PRI is
accepted for 3164 (relays strip it); then facility and severity are absent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from service.decoders import DecodeError, Decoder, positive_int

FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
              "authpriv", "ftp", "ntp", "security", "console", "solaris-cron", "local0", "local1",
              "local2", "local3", "local4", "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_PRI = re.compile(rb"<(\d{1,3})>")
_RFC5424 = re.compile(
    r"(?P<version>[1-9]\d{0,2}) (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app_name>\S+) "
    r"(?P<procid>\S+) (?P<msgid>\S+) (?P<rest>.*)\Z", re.S)
_RFC3164 = re.compile(
    r"(?P<timestamp>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}|\d{4}-\d{2}-\d{2}T\S+) "
    r"(?:(?P<hostname>[^\s:\[]+) )?(?P<tag>[^\s:\[]{1,48})(?:\[(?P<procid>[^\]]*)\])?: ?(?P<message>.*)\Z", re.S)
_SD_ELEMENT = re.compile(r'\[(?P<id>[^\s\]=" ]+)(?P<params>(?: [^\s=\]"]+="(?:[^"\\]|\\.)*")*)\]')
_SD_PARAM = re.compile(r' ([^\s=\]"]+)="((?:[^"\\]|\\.)*)"')
_SD_UNESCAPE = re.compile(r'\\([\\"\]])')


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def _structured_data(text: str) -> tuple[dict[str, dict[str, str]], str]:
    """Parse the STRUCTURED-DATA part; returns it and the remaining MSG text."""
    if text.startswith("-"):
        return {}, text[2:] if text.startswith("- ") else text[1:]
    data: dict[str, dict[str, str]] = {}
    pos = 0
    while pos < len(text) and text[pos] == "[":
        element = _SD_ELEMENT.match(text, pos)
        if element is None:
            raise DecodeError("decode", f"malformed RFC 5424 structured data at column {pos}")
        params = {name: _SD_UNESCAPE.sub(r"\1", value) for name, value in _SD_PARAM.findall(element["params"])}
        data[element["id"]] = params
        pos = element.end()
    if pos == 0:
        raise DecodeError("decode", "RFC 5424 structured data must be '-' or start with '['")
    rest = text[pos:]
    return data, rest[1:] if rest.startswith(" ") else rest


def _pri_fields(pri: int) -> dict[str, Any]:
    if pri > 191:
        raise DecodeError("decode", f"syslog PRI {pri} out of range 0..191")
    facility, severity = divmod(pri, 8)
    return {"facility": facility, "severity": severity,
            "facility_name": FACILITIES[facility], "severity_name": SEVERITIES[severity]}


def decode_syslog(data: bytes, max_bytes: int = 65_536) -> list[dict[str, Any]]:
    if len(data) > max_bytes:
        raise DecodeError("oversize", f"message of {len(data)} bytes exceeds {max_bytes}")
    data = data.rstrip(b"\r\n")
    pri = _PRI.match(data)
    body = data[pri.end():] if pri else data
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("utf8", f"invalid UTF-8 at byte {exc.start}") from None
    event: dict[str, Any] = _pri_fields(int(pri.group(1))) if pri else {}
    modern = _RFC5424.match(text) if pri else None
    if modern is not None:
        structured, message = _structured_data(modern["rest"])
        if message.startswith("\ufeff"):
            message = message[1:]
        event.update(
            version=int(modern["version"]), timestamp=_nil(modern["timestamp"]),
            hostname=_nil(modern["hostname"]), app_name=_nil(modern["app_name"]),
            procid=_nil(modern["procid"]), msgid=_nil(modern["msgid"]),
            structured_data=structured, message=message, syslog_format="rfc5424")
        return [event]
    bsd = _RFC3164.match(text)
    if bsd is None:
        raise DecodeError("decode", "neither RFC 5424 nor RFC 3164 syslog")
    event.update(timestamp=bsd["timestamp"], hostname=bsd["hostname"], app_name=bsd["tag"],
                 procid=bsd["procid"], message=bsd["message"], syslog_format="rfc3164")
    return [event]


def factory(options: Mapping[str, Any]) -> Decoder:
    unknown = set(options) - {"max_bytes"}
    if unknown:
        raise ValueError(f"unknown syslog decoder option(s): {', '.join(sorted(unknown))}")
    max_bytes = positive_int(options, "max_bytes", 65_536, "syslog")

    def decode(data: bytes) -> list[dict[str, Any]]:
        return decode_syslog(data, max_bytes)

    return decode
