"""Operational endpoints (health, readiness, metrics) and the rules API.

With a local alert store, each rule of ``GET /api/v1/rules`` and ``GET
/api/v1/rules/{id}`` carries ``alerts``: its stored alerts, how many were
resolved, how many as false positive and ``false_positive_ratio`` (false
positives among the resolved; ``null`` before any is resolved). A single rule
also carries ``yaml``, its text with the detection logic (:mod:`.rule_yaml`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from detectors.model import LogSource, RuleInfo
from detectors.sigma import RuleText, compile_ruleset
from detectors.yamlsafe import YamlLimits
from service import metrics
from service.api.context import ApiContext
from service.api.roles import Role, requires
from service.api.rule_yaml import rule_yaml
from service.audit.marks import audited, note
from service.metrics import REGISTRY

_T = TypeVar("_T")

MAX_TEST_EVENTS = 1000
NO_ALERTS: dict[str, Any] = {"alerts": 0, "resolved": 0, "false_positives": 0, "false_positive_ratio": None}


def rule_summary(rule: RuleInfo) -> dict[str, Any]:
    return {"id": rule.id, "title": rule.title, "level": rule.level, "kind": rule.kind,
            "status": rule.status, "author": rule.author, "ruleset": rule.ruleset,
            "logsource": rule.logsource.as_dict(), "tags": list(rule.tags)}


def rule_detail(rule: RuleInfo) -> dict[str, Any]:
    doc = asdict(rule)
    doc["logsource"] = rule.logsource.as_dict()
    return doc


class LogSourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product: str | None = None
    category: str | None = None
    service: str | None = None


class RuleTestRequest(BaseModel):
    """A rule (Sigma YAML, may hold several documents) and events to run it on."""

    model_config = ConfigDict(extra="forbid")
    rule: str = Field(min_length=1)
    events: list[dict[str, Any]] = Field(max_length=MAX_TEST_EVENTS)
    logsource: LogSourceBody | None = None
    """The events' log source; omitted: the rule applies whatever its logsource."""


RULE_TEST_YAML_LIMITS = YamlLimits(max_bytes=524_288, max_depth=64, max_nodes=10_000)
"""A tested rule is one request's work: twice the largest SigmaHQ rule's nodes, a fifth of a rule file's."""


def run_rule_test(rule: str, events: list[dict[str, Any]],
                  logsource: LogSource | None, cased_fields: bool = False) -> tuple[int, dict[str, Any]]:
    """Compile ``rule`` and run it on ``events`` (in a worker thread): (HTTP status, body);
    ``cased_fields``: the service's ``rules.field_names`` is ``sensitive``."""
    result = compile_ruleset([RuleText(source="request", text=rule, ruleset="test")], skip_invalid=True,
                             limits=RULE_TEST_YAML_LIMITS, cased_fields=cased_fields)
    here = str(Path("request").resolve())  # pySigma names the source by absolute path: not the server's business
    errors = [{"rule_id": e.rule_id, "title": e.title, "reason": e.reason.replace(here, "request")}
              for e in result.errors]
    if errors or not result.ruleset.rules:
        return 422, {"detail": "the rule does not load", "matches": [],
                     "errors": errors or [{"reason": "no detection rule in the request"}]}
    matches = []
    for index, event in enumerate(events):
        for match in result.ruleset.evaluate(event, logsource):
            matches.append({"event": index, "rule_id": match.rule.id, "title": match.rule.title,
                            "level": match.rule.level,
                            "fields": [{"field": f, "value": v} for f, v in match.fields]})
    return 200, {"errors": [], "rules": [rule_summary(r) for r in result.ruleset.rules], "matches": matches}


class RuleTestGate:
    """Runs at most ``limit`` rule tests at once in worker threads; beyond that refuses at once.

    A slot is freed when the thread ends, not when the request gives up waiting, so a
    rule that compiles for minutes still holds its slot and cannot pile threads up.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0

    def run(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T] | None:
        if self.running >= self.limit:
            return None
        self.running += 1
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[Any]) -> None:
        self.running -= 1
        if not task.cancelled():
            task.exception()  # retrieved: a late failure is not an "exception never retrieved" log


def health_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", dependencies=[requires(Role.PUBLIC)], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", dependencies=[requires(Role.PUBLIC)],
                summary="Rules loaded and, with Kafka, partitions assigned",
                responses={503: {"description": "not ready (the failing checks are false)"}})
    async def readyz() -> JSONResponse:
        checks = ctx.readiness()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    metrics_role = Role.PUBLIC if ctx.settings.api.metrics_public else Role.READ

    @router.get("/metrics", summary="Prometheus metrics", dependencies=[requires(metrics_role)],
                response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router


def rules_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(prefix="/api/v1/rules", tags=["rules"])

    async def alert_stats() -> dict[str, dict[str, Any]] | None:
        """Per rule id: alerts stored, resolved, false positives and their ratio among the resolved."""
        if ctx.alert_stats is None:
            return None
        found = await asyncio.to_thread(ctx.alert_stats)
        return {rule_id: s.as_dict() for rule_id, s in found.items()}

    def all_rules() -> list[RuleInfo]:
        current = ctx.detector.current
        rules = list(current.ruleset.rules)
        rules.extend(info for info, _ in getattr(current.ruleset, "correlations", ()) or ())
        return rules

    @router.get("", dependencies=[requires(Role.READ)], summary="Active rules")
    async def list_rules(kind: str | None = Query(default=None, max_length=32),
                         level: str | None = Query(default=None, max_length=32),
                         q: str | None = Query(default=None, max_length=1000, description="text in id or title"),
                         limit: int = Query(default=100, ge=1, le=5000),
                         offset: int = Query(default=0, ge=0, le=10_000_000)) -> dict[str, Any]:
        rules = all_rules()
        if kind:
            rules = [r for r in rules if r.kind == kind]
        if level:
            rules = [r for r in rules if r.level == level.lower()]
        if q:
            needle = q.lower()
            rules = [r for r in rules if needle in r.title.lower() or needle in r.id.lower()]
        current = ctx.detector.current
        shown = rules[offset:offset + limit]
        items = [rule_summary(r) for r in shown]
        stats = await alert_stats()
        if stats is not None:
            for item in items:
                item["alerts"] = stats.get(item["id"], NO_ALERTS)
        return {"generation": current.generation, "loaded_at": current.loaded_at, "total": len(rules),
                "errors": len(current.errors), "items": items}

    @router.get("/{rule_id}", dependencies=[requires(Role.READ)], summary="One rule by id or name")
    async def get_rule(rule_id: str) -> dict[str, Any]:
        current = ctx.detector.current
        rule = current.ruleset.get(rule_id)
        if rule is None:
            rule = next((r for r in all_rules() if r.id == rule_id or r.name == rule_id), None)
        if rule is None:
            raise HTTPException(status_code=404, detail=f"no active rule {rule_id!r}")
        doc = rule_detail(rule)
        doc["yaml"] = await asyncio.to_thread(rule_yaml, rule, ctx.settings.rules.resolved_paths())
        stats = await alert_stats()
        if stats is not None:
            doc["alerts"] = stats.get(rule.id, NO_ALERTS)
        return doc

    gate = RuleTestGate(ctx.settings.api.rules_test_concurrency)
    timeout_s = ctx.settings.api.rules_test_timeout_s
    cased = ctx.settings.rules.field_names == "sensitive"  # a rule is tested as the service would run it

    @router.post("/test", dependencies=[requires(Role.ADMIN), Depends(audited("rules.test"))],
                 summary="Run a rule on events; nothing is stored",
                 responses={422: {"description": "the rule does not load (reasons in errors)"},
                            429: {"description": "too many rule tests at once"},
                            503: {"description": "the rule took too long to compile"}})
    async def test_rule(body: RuleTestRequest, request: Request) -> JSONResponse:
        # the audit entry summarises the payload: a fingerprint and sizes, never the rule or events
        note(request, detail={"rule_sha256": hashlib.sha256(body.rule.encode()).hexdigest()[:16],
                              "rule_bytes": len(body.rule), "events": len(body.events)})
        logsource = LogSource(**body.logsource.model_dump()) if body.logsource else None
        work = gate.run(run_rule_test, body.rule, body.events, logsource, cased)
        if work is None:
            metrics.RULES_TEST_REJECTED.labels("busy").inc()
            return JSONResponse({"detail": "too many rule tests at once; retry later"}, status_code=429,
                                headers={"Retry-After": "1"})
        try:
            status, doc = await asyncio.wait_for(asyncio.shield(work), timeout_s)
        except TimeoutError:
            metrics.RULES_TEST_REJECTED.labels("timeout").inc()
            return JSONResponse({"detail": f"the rule did not compile within {timeout_s:g} s"}, status_code=503)
        if status != 200:
            metrics.RULES_TEST_REJECTED.labels("invalid").inc()
        return JSONResponse(doc, status_code=status)

    @router.post("/reload", dependencies=[requires(Role.ADMIN), Depends(audited("rules.reload"))],
                 summary="Reload rules from disk",
                 responses={422: {"description": "the new rules were rejected; the active ones are unchanged"}})
    async def reload_rules(request: Request) -> JSONResponse:
        result = await ctx.reloader.reload("api")
        note(request, obj="rules", detail={"result": result.result, "generation": result.generation})
        status = {"ok": 200, "rejected": 422}.get(result.result, 500)
        doc = result.as_dict()
        if status != 200:
            doc["detail"] = result.message or f"reload {result.result}: the active rules are unchanged"
        return JSONResponse(doc, status_code=status)

    return router
