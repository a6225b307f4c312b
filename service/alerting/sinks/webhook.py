"""Generic webhook receiver: the page record as JSON, signed with HMAC-SHA256.

Headers: ``X-Pipesentry-Timestamp`` (unix seconds) and ``X-Pipesentry-Signature:
sha256=<hex>``, the HMAC of ``<timestamp>.<body>`` with the shared secret, so a
receiver can check both integrity and freshness (reject old timestamps).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr

from .http import HttpReceiver, Request
from .registry import SinkContext, register_receiver
from .settings import ReceiverSettings


class WebhookReceiverSettings(ReceiverSettings):
    type: Literal["webhook"] = "webhook"
    url: str
    secret: SecretStr | None = None
    """HMAC-SHA256 key for the ``X-Pipesentry-Signature`` header."""
    headers: dict[str, str] = Field(default_factory=dict)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookReceiver(HttpReceiver):
    def __init__(self, name: str, url: str, secret: str | None, headers: dict[str, str], timeout_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name, timeout_s)
        self.url = url
        self.secret = secret
        self.headers = headers
        self.clock = clock

    def render(self, page: dict[str, Any]) -> Request:
        body = orjson.dumps(page)
        ts = str(int(self.clock()))
        headers = {**self.headers, "Content-Type": "application/json", "X-Pipesentry-Event": page["action"],
                   "X-Pipesentry-Timestamp": ts}
        if self.secret:
            headers["X-Pipesentry-Signature"] = signature(self.secret, ts, body)
        return Request("POST", self.url, None, headers, content=body)


def build(settings: WebhookReceiverSettings, context: SinkContext) -> WebhookReceiver:
    secret = settings.secret.get_secret_value() if settings.secret else None
    return WebhookReceiver(settings.name, settings.url, secret, settings.headers, settings.timeout_s)


register_receiver("webhook", WebhookReceiverSettings, build)
