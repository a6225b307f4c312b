"""The audit trail's HTTP side: the recording middleware, the auth layer's hook and ``GET /api/v1/audit``.

A state-changing route declares its action next to itself with
:func:`service.audit.marks.audited`; :class:`AuditMiddleware`
writes the entry once the response status is known, with the caller from
:func:`service.api.principal.principal_of`. A handler may add the object it
created or a summary of what it did with :func:`note`. Requests refused before
the mark is set (401/403) are recorded by the auth layer's ``on_denied`` hook
instead; ingest is never recorded, only counted
(``pipesentry_api_ingest_requests_total{principal,outcome}``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.params import query_time
from service.api.principal import Principal, principal_of
from service.api.roles import Role, requires
from service.audit.marks import AuditMark
from service.audit.store import AuditQuery
from service.audit.trail import OUTCOMES, AuditTrail, outcome_of

INGEST_PATH = "/api/v1/events"


def client_of(conn: HTTPConnection) -> str | None:
    return conn.client.host if conn.client is not None else None


class AuditMiddleware:
    """Records the marked request once its status is known (a raised error counts as 500)."""

    def __init__(self, app: ASGIApp, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self._after(scope, status)

    def _after(self, scope: Scope, status: int) -> None:
        conn = HTTPConnection(scope)
        if scope["path"] == INGEST_PATH and scope["method"] == "POST":
            metrics.API_INGEST_REQUESTS.labels(principal_of(conn).name, outcome_of(status)).inc()
            return
        mark = scope.get("state", {}).get("audit")
        if not isinstance(mark, AuditMark):
            return
        who = principal_of(conn)
        self.trail.record(mark.action, actor=who.name, role=who.role, via=who.via, client=client_of(conn),
                          obj=mark.obj, outcome=outcome_of(status), status=status, detail=mark.detail)


def denied_recorder(trail: AuditTrail) -> Callable[[HTTPConnection, int, str, Principal | None], None]:
    """The auth layer's ``on_denied`` hook: a refused sign-in (401) or a role the caller lacks (403)."""

    def on_denied(conn: HTTPConnection, status: int, reason: str, principal: Principal | None) -> None:
        who = principal or Principal(name="unauthenticated", role="", via="none")
        trail.record("auth.denied", actor=who.name, role=who.role, via=who.via, client=client_of(conn),
                     obj=f"{conn.scope.get('method', '')} {conn.url.path}", outcome="denied", status=status,
                     detail={"reason": reason})

    return on_denied


class AuditEntryModel(BaseModel):
    time: float
    """Unix seconds."""
    actor: str
    """The token's or client certificate's configured name; ``system`` for the service itself."""
    role: str
    via: str
    client: str | None
    action: str
    object: str | None
    outcome: str
    status: int | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntryModel]
    limit: int


def audit_router(trail: AuditTrail) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["audit"])

    @router.get("/audit", dependencies=[requires(Role.ADMIN)], response_model=AuditPage,
                summary="The audit trail, newest first (admin)",
                responses={503: {"description": "the audit store is unavailable"}})
    async def list_audit(since: str | None = Query(None, max_length=64, description="RFC 3339 or unix seconds"),
                         until: str | None = Query(None, max_length=64),
                         action: str | None = Query(None, max_length=64,
                                                    description="exact, or a prefix ending in '.'"),
                         actor: str | None = Query(None, max_length=128),
                         outcome: str | None = Query(None, max_length=16),
                         limit: int = Query(100, ge=1, le=1000)) -> AuditPage:
        if outcome is not None and outcome not in OUTCOMES:
            raise HTTPException(status_code=422, detail=f"outcome must be one of {list(OUTCOMES)}")
        query = AuditQuery(since=query_time(since, "since"), until=query_time(until, "until"), action=action,
                           actor=actor, outcome=outcome, limit=limit)
        await trail.flush()
        items = await asyncio.to_thread(trail.query, query)
        return AuditPage(items=[AuditEntryModel(**item) for item in items], limit=limit)

    return router
