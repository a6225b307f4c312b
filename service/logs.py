"""Structured JSON logging for the service, with credentials masked out of every line.

One JSON object per line on stderr, so container runtimes and log shippers can
read it without parsing free text.

No credential may reach a log line, whoever logs it. Settings hold secrets as
``pydantic.SecretStr``, but libraries do not know that: httpx logs every
request URL at INFO (a Slack webhook URL *is* the credential), exceptions quote
URLs, headers and connection strings. So, in depth:

1. HTTP and Kafka client libraries log at WARNING unless asked otherwise;
2. a :class:`RedactingFilter` on the service's handler rewrites every record
   (message, extra fields, traceback) before any formatter sees it, masking
   URL credentials, secret-bearing webhook paths, ``Authorization`` values and
   every configured secret value (:func:`register_settings_secrets`), in its
   raw, URL-encoded, base64 and JSON-escaped forms;
3. :class:`JsonFormatter` masks the finished line once more.

Secrets that were never configured (an AWS key or a ``db_password=`` in a logged event, a rejected
record quoted in an error) are replaced by the same markers as in alerts
(:mod:`detectors.redaction`): after ``service.redaction.Redaction.start`` under the installation's
key, so a log line's marker matches the alert's; before it under a random key of the process.

:func:`redact` is the same masking for text that leaves by other ways (an API
error body, a sink's last error, a message printed on exit).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus, urlsplit

import orjson
from pydantic import BaseModel, SecretStr

from detectors.redaction import Redactor as FormatRedactor
from service.log_filters import DemoteSuccessfulRequests, RepeatFilter

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter configured secrets are not registered: masking every 'abc' would garble the logs, and
the service refuses such short tokens anyway (API tokens need 16 characters)."""

LIBRARY_LOGGERS = ("httpx", "httpcore", "urllib3", "elastic_transport", "elasticsearch", "opensearch",
                   "opensearchpy", "aiokafka", "kafka", "aiohttp.client", "hpack")
"""Third-party clients that log request URLs, headers or connection details at INFO/DEBUG."""

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
DROPPED_FIELDS = frozenset({"color_message"})
"""Extras libraries add for their own console formatters (uvicorn's ANSI-coloured copy of the
message), left out of the JSON lines."""
_TOKEN = r"[A-Za-z0-9._~+/=\-]+"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://***@host (and a lone token as user info)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@'\"<>]+@"), rf"\1{MASK}@"),
    # incoming-webhook URLs whose path is the credential
    (re.compile(r"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s'\"<>?#]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)(discord(?:app)?\.com/api/webhooks/)[^\s'\"<>?#]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)(\.webhook\.office\.com/webhookb2/)[^\s'\"<>?#]+"), rf"\1{MASK}"),
    # Authorization headers, in HTTP, dict and JSON notation; the scheme word is kept
    (re.compile(r"(?i)\b((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?"
                r"(?:(?:bearer|basic|apikey|genie ?key|token|digest)\s+)?)[^\s'\",}]+"),
     rf"\1{MASK}"),
    (re.compile(rf"\b(Bearer|Basic|ApiKey|GenieKey)\s+{_TOKEN}"), rf"\1 {MASK}"),
    # credentials in query strings and key=value / "key": "value" text
    (re.compile(r"(?i)([?&](?:access_token|token|api_key|apikey|key|password|passwd|secret|signature|sig|"
                r"auth|routing_key)=)(?!\[REDACTED:)[^&\s'\"#]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)\b((?:sasl_)?password|passwd|secret|api_?key|routing_key|access_token|token)"
                r"(['\"]?\s*[:=]\s*['\"]?)(?!\*\*\*|\[REDACTED:)[^\s'\",}&]+"), rf"\1\2{MASK}"),
)
_SENSITIVE_HEADER = re.compile(r"(?i)authorization|token|key|secret|password|cookie|signature")
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s'\"<>]+")


class Redactor:
    """Masks credentials in text: fixed patterns plus registered secret values (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._values_re: re.Pattern[str] | None = None
        self._formats: Callable[[str], str] | None = None

    def use_formats(self, redact_formats: Callable[[str], str]) -> None:
        """Replace secrets of known formats by markers too (``detectors.redaction.Redactor.text``)."""
        self._formats = redact_formats

    def _format_redactor(self) -> Callable[[str], str]:
        formats = self._formats
        if formats is None:
            with self._lock:  # a random key of this process until the service starts
                if self._formats is None:
                    self._formats = FormatRedactor(os.urandom(32)).text
                formats = self._formats
        return formats

    def add(self, *secrets: str | None) -> None:
        """Mask these values wherever they appear, in every form a library may print them in."""
        forms: set[str] = set()
        for secret in secrets:
            if not secret or len(secret) < MIN_SECRET_LENGTH:
                continue
            forms.update(_forms(secret))
        with self._lock:
            if forms <= self._values:
                return
            self._values |= forms
            ordered = sorted(self._values, key=len, reverse=True)  # longest first: no partial masks
            self._values_re = re.compile("|".join(re.escape(v) for v in ordered))

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._values_re = None

    def __call__(self, text: str) -> str:
        values_re = self._values_re
        if values_re is not None:
            text = values_re.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return self._format_redactor()(text)


def _forms(secret: str) -> set[str]:
    raw = secret.encode("utf-8", "surrogatepass")
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret),
             orjson.dumps(secret).decode()[1:-1], json.dumps(secret)[1:-1], repr(secret)[1:-1],
             base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    forms |= {f.rstrip("=") for f in list(forms) if f.endswith("=")}
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


REDACTOR = Redactor()
"""The process-wide redactor: logging is process-wide, so are the secrets it must never print."""


def redact(text: str) -> str:
    """``text`` with every known credential masked (for API bodies, exit messages, metrics)."""
    return REDACTOR(text)


def use_format_redactor(redact_formats: Callable[[str], str]) -> None:
    """Mark secrets of known formats in log lines with this redactor (the installation's key)."""
    REDACTOR.use_formats(redact_formats)


def register_secrets(*secrets: str | None) -> None:
    REDACTOR.add(*secrets)


def register_settings_secrets(settings: BaseModel) -> None:
    """Register every secret the settings hold: each ``SecretStr`` (inline or read from a ``*_file``),
    the user info of any URL, and the values of credential-like headers; ``user:pass`` pairs also
    in their HTTP Basic (base64) form."""
    REDACTOR.add(*_collect(settings))


def _collect(value: Any, key: str = "") -> Iterable[str]:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        yield secret
        if _URL.fullmatch(secret):
            yield from _secret_url_parts(secret)
    elif isinstance(value, BaseModel):
        fields = dict(value)
        username = fields.get("username") or fields.get("sasl_username")
        password = fields.get("password") or fields.get("sasl_password")
        if isinstance(username, str) and isinstance(password, SecretStr):
            yield f"{username}:{password.get_secret_value()}"
        for name, item in fields.items():
            yield from _collect(item, name)
    elif isinstance(value, Mapping):
        headers = "header" in key.lower()
        for name, item in value.items():
            if headers and isinstance(item, str) and _SENSITIVE_HEADER.search(str(name)):
                yield item
                yield item.split(None, 1)[-1]  # "Bearer <token>": the token alone too
            else:
                yield from _collect(item, str(name))
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _collect(item, key)
    elif isinstance(value, str):
        for url in _URL.findall(value):
            yield from _url_secrets(url)


def _secret_url_parts(url: str) -> Iterable[str]:
    """A URL that is a secret as a whole (a Slack webhook) holds its credential in the path or query:
    the path, its last segment and the query values are secrets on their own too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    yield from _url_secrets(url)
    path = parts.path.strip("/")
    if len(path) >= 8:
        yield path
    last = path.rsplit("/", 1)[-1]
    if len(last) >= 8:
        yield last
    for pair in parts.query.split("&"):
        value = pair.partition("=")[2]
        if len(value) >= 8:
            yield value


def _url_secrets(url: str) -> Iterable[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if parts.password:
        yield parts.password
        yield f"{parts.username}:{parts.password}"
    elif parts.username:
        yield parts.username  # https://TOKEN@host


class RedactingFilter(logging.Filter):
    """Rewrites a record so that no handler after it can print a credential.

    The message is rendered and masked (args dropped), string extras are masked, and the
    traceback is rendered, masked and kept as ``exc_text`` (``exc_info`` dropped: a formatter
    would render the unmasked exception again).
    """

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string must not lose the record
            message = f"{record.msg!r} (unformattable log arguments: {exc!r})"
        record.msg, record.args = self._redact(message), None
        for key in DROPPED_FIELDS & record.__dict__.keys():
            del record.__dict__[key]
        for key, value in list(record.__dict__.items()):
            if key not in _RESERVED and not key.startswith("_"):
                try:
                    record.__dict__[key] = self._scrub(value)
                except Exception as exc:  # an extra that cannot be printed must not lose the line
                    record.__dict__[key] = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text, record.exc_info = self._redact(text), None
        elif record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, int | float | bool) or value is None:
            return value
        if isinstance(value, Mapping):
            return {self._redact(str(k)): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._scrub(v) for v in value]
        return self._redact(str(value))  # exceptions, paths, models: as the formatter would print them


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the finished line is masked once more."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self._redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_") and key not in DROPPED_FIELDS:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return self._redact(orjson.dumps(doc, default=str).decode())


def configure_logging(level: str = "INFO", *, library_level: str = "WARNING", stream: TextIO | None = None) -> None:
    """Route the root logger to ``stream`` (stderr) as masked JSON lines (idempotent).

    ``library_level`` applies to :data:`LIBRARY_LOGGERS`: their INFO/DEBUG lines carry request
    URLs and headers, so they stay at WARNING unless debugging a client asks for more. Repeats of
    one Kafka client message are summarised and successful HTTP client requests are DEBUG lines
    (:mod:`service.log_filters`).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_pipesentry", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RepeatFilter(handler.handle))  # sees the message template, before it is rendered
    handler.addFilter(RedactingFilter())
    handler._pipesentry = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level.upper())
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, DemoteSuccessfulRequests) for f in httpx_log.filters):
        httpx_log.addFilter(DemoteSuccessfulRequests())
