"""The API's access log: one JSON line per request on the ``pipesentry.access`` logger.

It replaces uvicorn's access log (which the server turns off): method, path, the
*names* of the query parameters (never their values, which may carry a token or
a secret-bearing search), status, duration, response bytes, the caller's
configured name and how it was identified (never a credential), and the client
address. ``api.access_log``: ``sampled`` (default) logs every request except
event ingest, of which one in ``api.access_log_sample_every`` is logged (the
line says ``sample_every``, so counts can be scaled); ``all`` logs every request;
``off`` none. The ingest path pays one counter increment when not sampled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.principal import principal_of

ACCESS_LOG = logging.getLogger("pipesentry.access")
INGEST_PATH = "/api/v1/events"


def query_names(raw: bytes) -> list[str]:
    """The parameter names of a query string, in order, without their values."""
    try:
        text = raw.decode("latin-1")
    except Exception:  # latin-1 decodes any byte; kept for safety
        return []
    return [name for name, _ in parse_qsl(text, keep_blank_values=True)][:32]


class AccessLog:
    def __init__(self, app: ASGIApp, mode: str, sample_every: int,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.app = app
        self.mode = mode
        self.sample_every = sample_every
        self._clock = clock
        self._ingest_seen = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.mode == "off":
            await self.app(scope, receive, send)
            return
        sample_every = 1
        if self.mode == "sampled" and scope["path"] == INGEST_PATH:
            self._ingest_seen += 1
            if self._ingest_seen % self.sample_every:
                await self.app(scope, receive, send)
                return
            sample_every = self.sample_every
        scope.setdefault("state", {})
        started = self._clock()
        status, sent = 500, 0

        async def capture(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            conn = HTTPConnection(scope)
            who = principal_of(conn)
            extra = {"method": scope["method"], "path": scope["path"],
                     "query": query_names(scope.get("query_string", b"")), "status": status,
                     "duration_ms": round((self._clock() - started) * 1000, 3), "bytes": sent,
                     "principal": who.name, "via": who.via,
                     "client": conn.client.host if conn.client is not None else None}
            if sample_every > 1:
                extra["sample_every"] = sample_every
            ACCESS_LOG.info("request", extra=extra)
