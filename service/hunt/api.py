"""``POST /api/v1/hunts`` (admin): run a hunt in the background; ``GET /api/v1/hunts[/{id}]``: its state.

The hunt uses the service's own rules (``rules.paths`` and ``rules.pipelines``, optionally narrowed
to ``rule_ids``) and the ``hunt:`` settings (cluster, credentials, indices): a request names no URL,
file or credential. One hunt runs at a time (a second request while one runs gets 409); conversion
runs in a worker thread, and alerts go to the local alert store (redacted, upserted by their stable
ids, so re-running a hunt adds nothing twice) where ``GET /api/v1/alerts`` serves them. The last
:data:`MAX_KEPT` hunts are kept in memory; starting one is an audit-trail entry (``hunt.start``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from detectors.alert import Alert
from service import metrics
from service.api.roles import Role, requires
from service.audit.marks import audited, note
from service.config import Settings
from service.hunt.client import SearchClient, open_client
from service.hunt.convert import PipelineError
from service.hunt.hunt import Conversion, HuntPlan, convert_plan, run_plan
from service.hunt.timerange import TimeRange, parse_when

log = logging.getLogger(__name__)

MAX_KEPT = 50
MAX_RULE_IDS = 1000

State = Literal["running", "done", "failed"]


class HuntRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: str = Field(default="7d", max_length=64, description="duration back from now (7d, 12h), RFC 3339 or unix s")
    until: str | None = Field(default=None, max_length=64)
    rule_ids: list[str] = Field(default_factory=list, max_length=MAX_RULE_IDS,
                                description="ids or names of configured rules; empty: every rule")
    index: str | None = Field(default=None, min_length=1, max_length=1024,
                              description="every rule over this index pattern instead of hunt.indices")
    building_blocks: bool = False


class NotConverted(BaseModel):
    rule_id: str
    title: str
    reason: str


class RuleErrorItem(BaseModel):
    rule_id: str
    index: str
    reason: str | None


class HuntStatus(BaseModel):
    id: str
    state: State
    started: float
    finished: float | None = None
    since: float
    until: float | None
    target: str
    rules_converted: int = 0
    not_converted: list[NotConverted] = Field(default_factory=list)
    hits: int = 0
    alerts_stored: int = 0
    refused: list[RuleErrorItem] = Field(default_factory=list)
    """Rules whose query the node refused (the others ran)."""
    truncated: list[str] = Field(default_factory=list)
    error: str | None = None


class HuntList(BaseModel):
    items: list[HuntStatus]


AlertWriter = Callable[[list[Alert]], int]


class HuntJobs:
    """Runs hunts one at a time and remembers the last :data:`MAX_KEPT`."""

    def __init__(self, settings: Settings, write: AlertWriter, *,
                 client_factory: Callable[[], SearchClient] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.write = write
        self.clock = clock
        hunt = settings.hunt
        self.client_factory = client_factory or (lambda: open_client(hunt, hunt.target, hunt.url))
        self.jobs: OrderedDict[str, HuntStatus] = OrderedDict()
        self.task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self, req: HuntRequest) -> HuntStatus:
        """Start a hunt; ``ValueError`` for a bad time range, ``RuntimeError`` while one runs."""
        if self.busy:
            raise RuntimeError("a hunt is already running; one runs at a time")
        now = self.clock()
        since = parse_when(req.since, now)
        until = parse_when(req.until, now) if req.until else None
        time_range = TimeRange(since, until)
        rules = self.settings.rules
        plan = HuntPlan(rules=tuple(rules.resolved_paths()), pipelines=tuple(rules.pipelines),
                        target=self.settings.hunt.target, index=req.index, time_range=time_range,
                        building_blocks=req.building_blocks)
        status = HuntStatus(id=secrets.token_hex(8), state="running", started=now, since=since, until=until,
                            target=plan.target)
        self.jobs[status.id] = status
        while len(self.jobs) > MAX_KEPT:
            self.jobs.popitem(last=False)
        self.task = asyncio.create_task(self._run(status, plan, req.rule_ids))
        return status

    async def _run(self, status: HuntStatus, plan: HuntPlan, rule_ids: list[str]) -> None:
        try:
            conversion = _only(await asyncio.to_thread(convert_plan, plan), rule_ids)
            status.rules_converted = len(conversion.queries)
            status.not_converted = [NotConverted(rule_id=f.rule.id, title=f.rule.title, reason=f.reason)
                                    for f in conversion.failures]
            client = self.client_factory()
            try:
                report = await run_plan(client, conversion, plan, self.settings.hunt, self._sink(status),
                                        clock=self.clock)
            finally:
                await client.close()
            status.hits = report.hits
            status.refused = [RuleErrorItem(rule_id=r.rule_id, index=r.index, reason=r.error)
                              for r in report.runs if r.error]
            status.truncated = [r.rule_id for r in report.runs if r.truncated]
            status.state = "done"
        except (PipelineError, ValueError) as exc:
            status.state, status.error = "failed", str(exc)
        except Exception as exc:  # the cluster or the store failed: the hunt's state says so
            status.state, status.error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("hunt failed", extra={"hunt": status.id, "reason": status.error})
        finally:
            status.finished = self.clock()
            metrics.HUNTS.labels(status.state).inc()

    def _sink(self, status: HuntStatus) -> Callable[[list[Alert]], Any]:
        async def put(alerts: list[Alert]) -> None:
            status.alerts_stored += await asyncio.to_thread(self.write, alerts)
            status.hits += len(alerts)  # live progress; replaced by the report's count at the end
            metrics.HUNT_HITS.inc(len(alerts))

        return put

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass


def _only(conversion: Conversion, rule_ids: list[str]) -> Conversion:
    if not rule_ids:
        return conversion
    wanted = set(rule_ids)

    def picked(rule: Any) -> bool:
        return rule.id in wanted or (rule.name is not None and rule.name in wanted)

    return Conversion([q for q in conversion.queries if picked(q.rule)],
                      [f for f in conversion.failures if picked(f.rule)], conversion.errors, conversion.seconds)


def store_writer(router: Any) -> AlertWriter:
    """Alerts into the alert router's store as its store sink writes them: redacted, upserted by id."""
    def write(alerts: list[Alert]) -> int:
        docs = [a.to_document() for a in alerts]
        if router.redaction.enabled:
            docs = [router.redaction.document(d) for d in docs]
        return int(router.store.upsert(docs))

    return write


def hunt_router(jobs: HuntJobs) -> APIRouter:
    api = APIRouter(prefix="/api/v1/hunts", tags=["hunts"])

    @api.post("", status_code=202, response_model=HuntStatus,
              dependencies=[requires(Role.ADMIN), Depends(audited("hunt.start"))],
              summary="Run the configured rules over indexed history; alerts go to the alert store",
              responses={409: {"description": "a hunt is already running"},
                         422: {"description": "invalid request or time range"}})
    async def start_hunt(body: HuntRequest, request: Request) -> HuntStatus:
        try:
            status = jobs.start(body)
        except RuntimeError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        note(request, obj=status.id, detail={"since": status.since, "until": status.until,
                                             "rules": len(body.rule_ids) or "all", "index": body.index})
        return status

    @api.get("", response_model=HuntList, dependencies=[requires(Role.ADMIN)], summary="Recent hunts")
    async def list_hunts() -> HuntList:
        return HuntList(items=list(reversed(jobs.jobs.values())))

    @api.get("/{hunt_id}", response_model=HuntStatus, dependencies=[requires(Role.ADMIN)],
             summary="One hunt's state and counts", responses={404: {"description": "no such hunt"}})
    async def get_hunt(hunt_id: str) -> HuntStatus:
        status = jobs.jobs.get(hunt_id)
        if status is None:
            raise HTTPException(status_code=404, detail="no such hunt")
        return status

    return api
