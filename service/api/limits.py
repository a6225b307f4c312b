"""Request body size limits, enforced before any handler reads the body.

A plain ASGI middleware: it rejects a declared ``Content-Length`` over the
limit, and otherwise reads the body itself, stopping (413) as soon as the limit
is passed, so a chunked upload of any size costs at most the limit in memory.
Event ingest has its own, larger limit. It runs after authentication
(:mod:`service.api.auth`): an unauthenticated caller gets 401 whatever it sends.

Before answering 413 it reads and discards what the client is still sending, up to
:data:`DRAIN_BYTES` past the limit within :data:`DRAIN_SECONDS`: a server that closes a
connection with unread bytes in it makes the kernel reset it, and the client, still
writing, sees "connection reset" instead of the 413. A client that asked
``Expect: 100-continue`` has sent nothing yet and is answered at once, as is one
that announced more than the drain allows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.errors import send_error

DRAIN_BYTES = 16 * 1024 * 1024
"""Bytes past the limit read and discarded so the client can read its 413 (bandwidth, not memory)."""
DRAIN_SECONDS = 10.0


class BodyLimit:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], *, drain_bytes: int = DRAIN_BYTES,
                 drain_seconds: float = DRAIN_SECONDS) -> None:
        self.app = app
        self.limit_for = limit_for
        self.drain_bytes = drain_bytes
        self.drain_seconds = drain_seconds

    async def _reject(self, send: Send, limit: int) -> None:
        metrics.HTTP_REJECTED.labels("too_large").inc()
        await send_error(send, 413, f"request body exceeds the limit of {limit} bytes")

    async def _drain(self, receive: Receive, budget: int) -> None:
        """Read and drop up to ``budget`` bytes of the rest of the body, within the time allowed."""
        async def discard() -> None:
            left = budget
            while left > 0:
                message = await receive()
                if message["type"] != "http.request":
                    return
                left -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(discard(), self.drain_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared: int | None = None
        expects_continue = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
            elif name == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
        if declared is not None and declared > limit:
            if not expects_continue and declared <= limit + self.drain_bytes:
                await self._drain(receive, declared)
            await self._reject(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                if message.get("more_body", False):
                    await self._drain(receive, self.drain_bytes if declared is None else declared - size)
                await self._reject(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
