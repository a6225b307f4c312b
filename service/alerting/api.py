"""HTTP API over the local alert store and the silences.

``GET /api/v1/alerts`` (filters: rule, level = minimum level, since/until as
RFC 3339 or unix seconds, q = text, limit/offset paging), ``GET
/api/v1/alerts/{id}``, ``GET/POST /api/v1/silences`` and ``DELETE
/api/v1/silences/{id}`` (expire). Each route declares its role (``read`` to look,
``analyst`` to silence); the application's authentication enforces it. A silence
records who created it (the caller's token name), needs a comment, and is held
to ``alerting.silence_max_duration_s``.

Documents are served redacted: the store receives them redacted, and they are redacted again on
the way out (idempotent), so alerts stored by a version without redaction do not leak either.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from detectors.model import LEVELS
from service.api.params import query_time
from service.api.principal import principal_of
from service.api.roles import Role, requires
from service.audit.marks import audited, note

from .queries import AlertQuery
from .router import AlertRouter
from .silences import SilenceError, SilenceForbidden, SilenceRequest

MAX_OFFSET = 1_000_000
"""Deeper pages are refused: SQLite walks every skipped row, and its integers stop at 2**63."""
MAX_TEXT = 1000
"""Length bound of the free-text parameters (rule, q)."""


def api_router(router: AlertRouter) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["alerts"])

    def _shown(doc: dict[str, Any]) -> dict[str, Any]:
        return router.redaction.document(doc) if router.redaction.enabled else doc

    @api.get("/alerts", dependencies=[requires(Role.READ)])
    async def list_alerts(rule: str | None = Query(None, max_length=MAX_TEXT),
                          level: str | None = Query(None, max_length=16),
                          since: str | None = Query(None, max_length=64),
                          until: str | None = Query(None, max_length=64),
                          q: str | None = Query(None, max_length=MAX_TEXT),
                          limit: int = Query(50, ge=1, le=1000),
                          offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict[str, Any]:
        if level is not None and level.lower() not in LEVELS:
            raise HTTPException(status_code=422, detail=f"level must be one of {list(LEVELS)}")
        query = AlertQuery(rule=rule, min_level=level.lower() if level else None, since=query_time(since, "since"),
                           until=query_time(until, "until"), text=q, limit=limit, offset=offset)
        page = await asyncio.to_thread(router.store.query, query)
        return {"total": page.total, "limit": limit, "offset": offset, "items": [_shown(d) for d in page.items]}

    @api.get("/alerts/{alert_id}", dependencies=[requires(Role.READ)])
    async def get_alert(alert_id: str) -> dict[str, Any]:
        doc = await asyncio.to_thread(router.store.get, alert_id)
        if doc is None:
            raise HTTPException(status_code=404, detail="no such alert")
        return _shown(doc)

    @api.get("/silences", dependencies=[requires(Role.READ)])
    async def list_silences(expired: bool = False) -> dict[str, Any]:
        now = router.clock()
        return {"items": [s.to_dict(now) for s in router.silences.list(now, include_expired=expired)]}

    @api.post("/silences", status_code=201, dependencies=[requires(Role.ANALYST), Depends(audited("silence.create"))])
    async def create_silence(req: SilenceRequest, request: Request) -> dict[str, Any]:
        now = router.clock()
        caller = principal_of(request)
        try:
            silence = router.silences.create(req, now, created_by=caller.name, admin=caller.role == Role.ADMIN,
                                             max_duration_s=router.settings.silence_max_duration_s)
        except SilenceForbidden as exc:
            raise HTTPException(status_code=403, detail=str(exc)) from None
        except SilenceError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        note(request, obj=silence.id, detail={"ends_at": silence.ends_at})
        return silence.to_dict(now)

    @api.delete("/silences/{silence_id}",
                dependencies=[requires(Role.ANALYST), Depends(audited("silence.expire", obj_param="silence_id"))])
    async def expire_silence(silence_id: str) -> dict[str, Any]:
        now = router.clock()
        s = router.silences.expire(silence_id, now)
        if s is None:
            raise HTTPException(status_code=404, detail="no such silence")
        return s.to_dict(now)

    return api
