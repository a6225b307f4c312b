"""HTTP API over the local alert store and the silences.

``GET /api/v1/alerts``: the alert queue, newest first by detection time, with
its triage state. Filters (all optional, combined with AND): ``level``
(repeatable: any of these levels), ``min_level`` (at or above), ``status``
(repeatable), ``assignee`` / ``assigned``, ``rule`` (id or exact name),
``tag`` (``attack.t1059``, ``T1059``, ``TA0002``, ``execution``; a technique
finds its sub-techniques), ``product`` / ``service`` / ``category`` (log
source), ``host`` / ``user`` (entity values, :mod:`.indexing`), ``since`` /
``until`` (RFC 3339, unix seconds or relative: ``15m``, ``24h``, ``now-7d``;
over ``time_field`` = ``detected`` by default, or ``event``), ``q`` (a
substring of one value; key names are not searched). Paging: ``limit`` with
``cursor`` (the previous page's ``next_cursor``) or ``offset``.
``GET /api/v1/alerts/summary`` counts the same filter's alerts by level, status
and rule. ``GET /api/v1/alerts/{id}`` is the document with its triage state and
notes; the triage writes are in :mod:`.triage_api`. ``GET/POST
/api/v1/silences`` and ``DELETE /api/v1/silences/{id}`` (expire).

Each route declares its role (``read`` to look, ``analyst`` to silence and
triage); the application's authentication enforces it. A silence records who
created it (the caller's token name), needs a comment, and is held to
``alerting.silence_max_duration_s``.

Documents are served redacted: the store receives them redacted, and they are redacted again on
the way out (idempotent), so alerts stored by a version without redaction do not leak either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict

from detectors.model import LEVELS
from service.api.params import query_time
from service.api.principal import principal_of
from service.api.roles import Role, requires
from service.audit.marks import audited, note

from .queries import TIME_FIELDS, AlertQuery, Cursor
from .router import AlertRouter
from .silences import SilenceError, SilenceForbidden, SilenceRequest
from .triage import STATUSES
from .triage_api import triage_router
from .triage_store import TriageStore

MAX_OFFSET = 1_000_000
"""Deeper pages are refused: SQLite walks every skipped row, and its integers stop at 2**63."""
MAX_TEXT = 1000
"""Length bound of the free-text parameters (rule, q)."""
MAX_NAME = 256
"""Length bound of the name parameters (assignee, tag, log source, host, user)."""


class AlertPage(BaseModel):
    total: int
    limit: int
    offset: int
    next_cursor: str | None
    """Pass as ``cursor`` for the next page (``None``: this is the last one)."""
    items: list[dict[str, Any]]
    """Alert documents (``service/alerting/schemas/alert.schema.json``), each with its ``triage`` state."""


class TriageView(BaseModel):
    status: str
    """``new``, ``acknowledged`` or ``resolved``."""
    disposition: str | None
    assignee: str | None
    detected: float | None
    """When pipesentry raised the alert (unix seconds; the queue's order)."""
    last_seen: float | None
    """When the store last received this alert id."""
    deliveries: int
    """Times the store received it (suppression count updates, re-delivery after a restart)."""
    updated: float | None
    """Last triage change."""
    notes: list[dict[str, Any]]
    """``{id, time, author, text}``, oldest first."""


class AlertDetail(BaseModel):
    """The alert document (``service/alerting/schemas/alert.schema.json``) with its triage state."""

    model_config = ConfigDict(extra="allow")
    triage: TriageView


class RuleCount(BaseModel):
    rule_id: str
    rule_name: str
    count: int


class AlertSummary(BaseModel):
    total: int
    by_level: dict[str, int]
    by_status: dict[str, int]
    by_rule: list[RuleCount]
    """The 100 rules with the most alerts, most first."""
    rules_truncated: bool


def _choices(values: list[str] | None, allowed: tuple[str, ...], name: str) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(v.lower() for v in values or ()))
    bad = [v for v in out if v not in allowed]
    if bad or len(out) > len(allowed):
        raise HTTPException(status_code=422, detail=f"{name} must be among {list(allowed)}")
    return out


def alert_filters(clock: Callable[[], float]) -> Callable[..., AlertQuery]:
    """The queue's filter parameters as one dependency (the list and the summary share it)."""

    def filters(rule: str | None = Query(None, max_length=MAX_TEXT, description="rule id or exact name"),
                level: list[str] | None = Query(None, description="any of these levels (repeatable)"),
                min_level: str | None = Query(None, max_length=16, description="this level or above"),
                status: list[str] | None = Query(None, description="any of these statuses (repeatable)"),
                assignee: str | None = Query(None, max_length=MAX_NAME),
                assigned: bool | None = Query(None, description="true: has an assignee; false: has none"),
                tag: str | None = Query(None, max_length=MAX_NAME, description="attack.t1059, T1059, TA0002"),
                product: str | None = Query(None, max_length=MAX_NAME),
                service: str | None = Query(None, max_length=MAX_NAME),
                category: str | None = Query(None, max_length=MAX_NAME),
                host: str | None = Query(None, max_length=MAX_NAME),
                user: str | None = Query(None, max_length=MAX_NAME),
                since: str | None = Query(None, max_length=64, description="RFC 3339, unix seconds, 15m, now-7d"),
                until: str | None = Query(None, max_length=64),
                time_field: str = Query("detected", max_length=16, description="detected or event"),
                q: str | None = Query(None, max_length=MAX_TEXT, description="text in a value (not key names)"),
                limit: int = Query(50, ge=1, le=1000),
                offset: int = Query(0, ge=0, le=MAX_OFFSET),
                cursor: str | None = Query(None, max_length=64,
                                           description="next_cursor of the previous page")) -> AlertQuery:
        levels = _choices(level, LEVELS, "level")
        statuses = _choices(status, STATUSES, "status")
        if min_level is not None and min_level.lower() not in LEVELS:
            raise HTTPException(status_code=422, detail=f"min_level must be one of {list(LEVELS)}")
        if time_field not in TIME_FIELDS:
            raise HTTPException(status_code=422, detail=f"time_field must be one of {list(TIME_FIELDS)}")
        try:
            after = Cursor.decode(cursor) if cursor else None
        except ValueError:
            raise HTTPException(status_code=422, detail="cursor: pass a next_cursor as given") from None
        return AlertQuery(rule=rule, levels=levels, min_level=min_level.lower() if min_level else None,
                          statuses=statuses, assignee=assignee, assigned=assigned, tag=tag, product=product,
                          service=service, category=category, host=host, user=user,
                          since=query_time(since, "since", clock=clock), until=query_time(until, "until", clock=clock),
                          time_field=time_field, text=q, limit=limit, offset=offset, cursor=after)

    return filters


def api_router(router: AlertRouter, *, rule_label: Callable[[str], str] | None = None) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["alerts"])
    triage = TriageStore(router.store)
    filters = alert_filters(router.clock)

    def _shown(doc: dict[str, Any]) -> dict[str, Any]:
        return router.redaction.document(doc) if router.redaction.enabled else doc

    @api.get("/alerts", dependencies=[requires(Role.READ)], response_model=AlertPage,
             summary="The alert queue, newest detection first")
    async def list_alerts(query: AlertQuery = Depends(filters)) -> AlertPage:
        page = await asyncio.to_thread(router.store.query, query)
        items = [{**_shown(d), "triage": t} for d, t in zip(page.items, page.triage, strict=True)]
        return AlertPage(total=page.total, limit=query.limit, offset=query.offset, next_cursor=page.next_cursor,
                         items=items)

    @api.get("/alerts/summary", dependencies=[requires(Role.READ)], response_model=AlertSummary,
             summary="Counts of the queue's alerts by level, status and rule (same filters)")
    async def summary(query: AlertQuery = Depends(filters)) -> AlertSummary:
        counts = await asyncio.to_thread(triage.summary, query)
        return AlertSummary(**counts)

    @api.get("/alerts/{alert_id}", dependencies=[requires(Role.READ)], summary="One alert with its triage state",
             response_model=AlertDetail)
    async def get_alert(alert_id: str) -> dict[str, Any]:
        doc = await asyncio.to_thread(router.store.get, alert_id)
        state = await asyncio.to_thread(triage.state, alert_id) if doc is not None else None
        if doc is None or state is None:
            raise HTTPException(status_code=404, detail="no such alert")
        return {**_shown(doc), "triage": state}

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

    api.include_router(triage_router(router, rule_label=rule_label))
    return api
