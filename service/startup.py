"""Start-up: the API port bound first, liveness served while the rules load, load progress logged.

:meth:`service.app.Service.run` binds the API socket before anything else
(:func:`bind_api_socket`), so a second instance on a taken port says so and exits
before it loads a single rule or logs "pipesentry running". The socket is served
at once through an :class:`ApiSwitch`: while the rules load it holds
:class:`StartingApi` (``/healthz`` 200, ``/readyz`` 503 with ``rules_loaded: false``,
``/metrics`` when public, anything else 503 with ``Retry-After``), then the full API.
A liveness probe therefore never kills a pod that is still compiling a large rule pack.

:class:`LoadProgress` counts files read, texts parsed and rules compiled (the compiling
thread updates it); :func:`log_progress` writes them every few seconds until the load ends.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError
from service.metrics import REGISTRY
from service.waits import stopped_within

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 5.0
"""Seconds between two "loading rules" lines."""


class BindError(ServiceError):
    """The API address cannot be listened on (port taken, address not local, no permission)."""


def bind_api_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port``; raises :class:`BindError` naming the address."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart reuses a port in TIME_WAIT
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        taken = exc.errno == errno.EADDRINUSE
        hint = " (another process, perhaps another pipesentry, holds it; set api.port or --port)" if taken else ""
        raise BindError(f"cannot listen on {host}:{port}: {why}{hint}") from None
    sock.set_inheritable(True)
    return sock


class LoadProgress:
    """How far a rules load got; ``__call__`` is the ``on_progress`` hook of ``compile_detection``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.files_read = 0
        self.files_parsed = 0
        self.rules_compiled = 0

    def __call__(self, step: str, count: int) -> None:
        match step:
            case "read":
                self.files_read = count
            case "parsed":
                self.files_parsed = count
            case "compiled":
                self.rules_compiled = count
            case _:
                pass  # a newer compiler's step: not counted

    def fields(self) -> dict[str, Any]:
        return {"files_read": self.files_read, "files_parsed": self.files_parsed,
                "rules_compiled": self.rules_compiled, "seconds": round(self._clock() - self.started, 1)}


async def log_progress(progress: LoadProgress, done: asyncio.Event,
                       interval_s: float = PROGRESS_INTERVAL_S) -> None:
    """Log "loading rules" with the counts every ``interval_s`` until ``done`` is set."""
    while not await stopped_within(done, interval_s):
        log.info("loading rules", extra=progress.fields())


class ApiSwitch:
    """The ASGI app uvicorn serves; ``app`` is swapped from :class:`StartingApi` to the full API."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class StartingApi:
    """What the API answers while the rules load."""

    def __init__(self, metrics_public: bool) -> None:
        self.metrics_public = metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, get = scope["path"], scope["method"] == "GET"
        if get and path == "/healthz":
            await _answer(send, 200, orjson.dumps({"status": "ok", "phase": "loading rules"}))
        elif get and path == "/readyz":
            await _answer(send, 503, orjson.dumps({"ready": False, "checks": {"rules_loaded": False}}))
        elif get and path == "/metrics" and self.metrics_public:
            await _answer(send, 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        else:
            await _answer(send, 503, orjson.dumps({"detail": "pipesentry is starting: the rules are loading; "
                                                             "retry shortly"}), retry_after=True)


async def _answer(send: Send, status: int, body: bytes, content_type: str = "application/json",
                  retry_after: bool = False) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
