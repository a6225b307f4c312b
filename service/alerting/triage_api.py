"""HTTP API of alert triage: change status/disposition/assignee, add notes, read the history, bulk changes.

``PATCH /api/v1/alerts/{id}``, ``POST /api/v1/alerts/{id}/notes`` and ``POST
/api/v1/alerts/bulk`` need the ``analyst`` role; ``GET
/api/v1/alerts/{id}/history`` needs ``read``. The actor of every change is the
caller's token name; each write is an audit trail entry (``alert.triage``,
``alert.note``, ``alert.triage_bulk``) with the fields changed (from, to), the
caller and its address; never a note's text. A change that does not fit the
alert's state is a 409 (:mod:`.triage` lists the moves). Resolving counts the
disposition in ``pipesentry_alert_dispositions_total{rule_id,disposition}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from service import metrics
from service.api.principal import principal_of
from service.api.roles import Role, requires
from service.audit.marks import audited, note

from .router import AlertRouter
from .triage import MAX_ASSIGNEE, MAX_NOTE, FieldChange, TriageError, TriageInvalid, TriagePatch
from .triage_store import MAX_HISTORY, TriageResult, TriageStore

MAX_BULK = 500
"""Alerts one bulk request may change."""
MAX_ALERT_ID = 128
"""Characters of an alert id in a bulk request (ids are 32 hex digits)."""
MAX_RULE_LABELS = 1000
"""Distinct ``rule_id`` label values of the dispositions metric; further rules count as ``other``."""
ASSIGNEE_PATTERN = r"^[^\x00-\x1f\x7f]+$"

Status = Literal["new", "acknowledged", "resolved"]
Disposition = Literal["true_positive", "false_positive", "benign"]


class TriageBody(BaseModel):
    """The fields to change; a field left out stays as it is (``assignee: null`` unassigns)."""

    model_config = ConfigDict(extra="forbid")
    status: Status | None = None
    disposition: Disposition | None = None
    """Required when resolving; on a resolved alert alone, reclassifies it."""
    assignee: str | None = Field(default=None, min_length=1, max_length=MAX_ASSIGNEE, pattern=ASSIGNEE_PATTERN)

    def patch(self) -> TriagePatch:
        return TriagePatch(status=self.status, disposition=self.disposition, assignee=self.assignee,
                           set_assignee="assignee" in self.model_fields_set)


AlertId = Annotated[str, Field(min_length=1, max_length=MAX_ALERT_ID)]


class BulkBody(TriageBody):
    ids: list[AlertId] = Field(min_length=1, max_length=MAX_BULK)
    """Alert ids (duplicates count once)."""


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_NOTE)


class ChangeModel(BaseModel):
    field: str
    old: str | None
    new: str | None


class TriageResponse(BaseModel):
    id: str
    rule_id: str
    status: Status
    disposition: Disposition | None
    assignee: str | None
    changes: list[ChangeModel]
    """What this request changed (empty: the alert was already so)."""


class NoteModel(BaseModel):
    id: int
    time: float
    """Unix seconds."""
    author: str
    text: str


class HistoryEntry(BaseModel):
    id: int
    time: float
    actor: str
    field: str
    """``status``, ``disposition``, ``assignee`` or ``note`` (``new`` is the note's id)."""
    old: str | None
    new: str | None


class HistoryPage(BaseModel):
    id: str
    items: list[HistoryEntry]
    """Oldest first (the last 1000)."""


class BulkItem(BaseModel):
    id: str
    outcome: Literal["changed", "unchanged", "not_found", "conflict"]
    detail: str | None = None
    changes: list[ChangeModel] = []


class BulkResponse(BaseModel):
    items: list[BulkItem]
    changed: int
    unchanged: int
    not_found: int
    conflicts: int


CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "the change does not fit the alert's current state (or its notes are full)"}}


class RuleLabels:
    """The dispositions metric's ``rule_id`` label: the rule id while fewer than ``cap`` distinct ids were
    seen (rule ids come from the loaded rules), ``other`` beyond, so the label stays bounded."""

    def __init__(self, cap: int = MAX_RULE_LABELS) -> None:
        self.cap = cap
        self._seen: set[str] = set()

    def __call__(self, rule_id: str) -> str:
        if rule_id in self._seen:
            return rule_id
        if len(self._seen) < self.cap:
            self._seen.add(rule_id)
            return rule_id
        return "other"


def _changes(changes: list[FieldChange]) -> list[ChangeModel]:
    return [ChangeModel(field=c.field, old=c.old, new=c.new) for c in changes]


def _detail(changes: list[FieldChange]) -> dict[str, Any]:
    return {c.field: {"from": c.old, "to": c.new} for c in changes}


def triage_router(router: AlertRouter, *, rule_label: Callable[[str], str] | None = None) -> APIRouter:
    """The triage routes, relative to ``/api/v1`` (:func:`.api.api_router` mounts them there)."""
    api = APIRouter(tags=["alerts"])
    triage = TriageStore(router.store)
    label = rule_label or RuleLabels()

    def count(result: TriageResult) -> None:
        for change in result.changes:
            if change.field == "disposition" and change.new is not None:
                metrics.ALERT_DISPOSITIONS.labels(label(result.rule_id), change.new).inc()

    @api.post("/alerts/bulk", response_model=BulkResponse, summary="Change the triage state of several alerts",
              dependencies=[requires(Role.ANALYST), Depends(audited("alert.triage_bulk"))])
    async def bulk(body: BulkBody, request: Request) -> BulkResponse:
        patch = body.patch()
        if patch.empty():
            raise HTTPException(status_code=422, detail="nothing to change: give status, disposition or assignee")
        actor = principal_of(request).name
        try:
            results = await asyncio.to_thread(triage.change_many, body.ids, patch, actor)
        except TriageInvalid as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        items: list[BulkItem] = []
        for alert_id, result, conflict in results:
            if conflict is not None:
                items.append(BulkItem(id=alert_id, outcome="conflict", detail=conflict))
            elif result is None:
                items.append(BulkItem(id=alert_id, outcome="not_found"))
            else:
                count(result)
                items.append(BulkItem(id=alert_id, outcome="changed" if result.changes else "unchanged",
                                      changes=_changes(result.changes)))
        tally = {k: sum(1 for i in items if i.outcome == k) for k in ("changed", "unchanged", "not_found", "conflict")}
        note(request, obj=f"{len(items)} alerts", detail={
            "set": {f: getattr(body, f) for f in sorted(body.model_fields_set) if f != "ids"},
            "changed_ids": [i.id for i in items if i.outcome == "changed"], **tally})
        return BulkResponse(items=items, changed=tally["changed"], unchanged=tally["unchanged"],
                            not_found=tally["not_found"], conflicts=tally["conflict"])

    @api.patch("/alerts/{alert_id}", response_model=TriageResponse, responses=CONFLICT,
               summary="Change an alert's status, disposition or assignee",
               dependencies=[requires(Role.ANALYST), Depends(audited("alert.triage", obj_param="alert_id"))])
    async def change(alert_id: str, body: TriageBody, request: Request) -> TriageResponse:
        patch = body.patch()
        if patch.empty():
            raise HTTPException(status_code=422, detail="nothing to change: give status, disposition or assignee")
        try:
            result = await asyncio.to_thread(triage.change, alert_id, patch, principal_of(request).name)
        except TriageInvalid as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except TriageError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        if result is None:
            raise HTTPException(status_code=404, detail="no such alert")
        count(result)
        note(request, detail=_detail(result.changes))
        s = result.state
        return TriageResponse(id=alert_id, rule_id=result.rule_id, status=s.status,  # type: ignore[arg-type]
                              disposition=s.disposition, assignee=s.assignee,  # type: ignore[arg-type]
                              changes=_changes(result.changes))

    @api.post("/alerts/{alert_id}/notes", status_code=201, response_model=NoteModel, responses=CONFLICT,
              summary="Add a note to an alert (notes are append-only)",
              dependencies=[requires(Role.ANALYST), Depends(audited("alert.note", obj_param="alert_id"))])
    async def add_note(alert_id: str, body: NoteBody, request: Request) -> NoteModel:
        text = router.redaction.text(body.text) if router.redaction.enabled else body.text
        try:
            added = await asyncio.to_thread(triage.add_note, alert_id, principal_of(request).name, text)
        except TriageError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        if added is None:
            raise HTTPException(status_code=404, detail="no such alert")
        note(request, detail={"note_id": added["id"], "chars": len(text)})
        return NoteModel(**added)

    @api.get("/alerts/{alert_id}/history", response_model=HistoryPage, dependencies=[requires(Role.READ)],
             summary="Who changed what on an alert, oldest first")
    async def history(alert_id: str) -> HistoryPage:
        rows = await asyncio.to_thread(triage.history, alert_id, MAX_HISTORY)
        if rows is None:
            raise HTTPException(status_code=404, detail="no such alert")
        return HistoryPage(id=alert_id, items=[HistoryEntry(**r) for r in rows])

    return api
