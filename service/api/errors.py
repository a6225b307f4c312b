"""The one body every API error answers with (:class:`ErrorBody`), and how to send it from ASGI.

``detail`` says what went wrong: a sentence, or for request validation the list
of offending fields. Some endpoints add their own fields next to it
(``rules/test``: the rule's ``errors``; ``rules/reload``: the reload result), so
the model allows extra keys; ``detail`` is always there.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from pydantic import BaseModel, ConfigDict
from starlette.types import Send


class FieldError(BaseModel):
    """One invalid part of a request: where (``loc``: body/query/path and the key path) and why."""

    loc: list[str | int]
    msg: str


class ErrorBody(BaseModel):
    """An error answer: ``detail`` (a sentence, or the invalid fields of a 422)."""

    model_config = ConfigDict(extra="allow")
    detail: str | list[FieldError]


BEARER_CHALLENGE = (b"www-authenticate", b'Bearer realm="pipesentry"')


async def send_error(send: Send, status: int, detail: str,
                     headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer an ASGI request with ``status`` and an :class:`ErrorBody`, closing the connection
    (the unread body, if any, is not drained)."""
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
