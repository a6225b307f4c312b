"""Shared plumbing of the HTTP paging receivers.

Each receiver renders one page record into one request. A response decides the
record's fate: 2xx delivered; 401, 403, 408, 425, 429, any 5xx and transport errors are retriable
(the batch stops there and is retried later, in order); any other 4xx can never
succeed and the record goes to the dead-letter file with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import Outcome, SinkError, retriable_status

if TYPE_CHECKING:
    import httpx  # imported when a receiver starts: loading the settings models does not need it


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    json: Any
    headers: dict[str, str]
    content: bytes | None = None


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HttpReceiver:
    """Base class: subclasses implement :meth:`render` (None = nothing to send)."""

    kind = "page"
    supports_resolve = True

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s),
                                             headers={"User-Agent": "pipesentry"})

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def render(self, page: dict[str, Any]) -> Request | None:
        raise NotImplementedError

    async def deliver(self, records: list[dict[str, Any]]) -> Outcome:
        assert self._client is not None, "receiver not started"
        import httpx
        rejected: list[tuple[dict[str, Any], str]] = []
        for i, page in enumerate(records):
            if page.get("action") == "resolve" and not self.supports_resolve:
                continue
            try:
                req = self.render(page)
            except (KeyError, TypeError, ValueError) as exc:
                rejected.append((page, f"cannot render page: {exc!r}"))
                continue
            if req is None:
                continue
            try:
                resp = await self._client.request(req.method, req.url, json=req.json if req.content is None else None,
                                                  content=req.content, headers=req.headers)
            except httpx.HTTPError as exc:
                return Outcome(done=i, rejected=rejected, error=SinkError(f"{self.name}: {exc!r}"))
            if resp.status_code < 300:
                continue
            reason = f"HTTP {resp.status_code}: {resp.text[:300]}"
            if retriable_status(resp.status_code):
                return Outcome(done=i, rejected=rejected, error=SinkError(f"{self.name}: {reason}"))
            rejected.append((page, reason))
        return Outcome(done=len(records), rejected=rejected)
