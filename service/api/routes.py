"""Operational endpoints (health, readiness, metrics) and the rules API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from detectors.model import LogSource, RuleInfo
from service.api.context import ApiContext
from service.metrics import REGISTRY

MAX_TEST_EVENTS = 1000


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


def health_router(ctx: ApiContext, read: Callable[..., None]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Rules loaded and, with Kafka, partitions assigned")
    async def readyz() -> JSONResponse:
        checks = ctx.readiness()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    metrics_deps = [] if ctx.settings.api.metrics_public else [Depends(read)]

    @router.get("/metrics", summary="Prometheus metrics", dependencies=metrics_deps,
                response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router


def rules_router(ctx: ApiContext, read: Callable[..., None], admin: Callable[..., None]) -> APIRouter:
    router = APIRouter(prefix="/api/v1/rules", tags=["rules"])

    def all_rules() -> list[RuleInfo]:
        current = ctx.detector.current
        rules = list(current.ruleset.rules)
        rules.extend(info for info, _ in getattr(current.ruleset, "correlations", ()) or ())
        return rules

    @router.get("", dependencies=[Depends(read)], summary="Active rules")
    async def list_rules(kind: str | None = None, level: str | None = None,
                         q: str | None = Query(default=None, description="text in id or title"),
                         limit: int = Query(default=100, ge=1, le=5000),
                         offset: int = Query(default=0, ge=0)) -> dict[str, Any]:
        rules = all_rules()
        if kind:
            rules = [r for r in rules if r.kind == kind]
        if level:
            rules = [r for r in rules if r.level == level.lower()]
        if q:
            needle = q.lower()
            rules = [r for r in rules if needle in r.title.lower() or needle in r.id.lower()]
        current = ctx.detector.current
        return {"generation": current.generation, "loaded_at": current.loaded_at, "total": len(rules),
                "errors": len(current.errors),
                "items": [rule_summary(r) for r in rules[offset:offset + limit]]}

    @router.get("/{rule_id}", dependencies=[Depends(read)], summary="One rule by id or name")
    async def get_rule(rule_id: str) -> dict[str, Any]:
        current = ctx.detector.current
        rule = current.ruleset.get(rule_id)
        if rule is None:
            rule = next((r for r in all_rules() if r.id == rule_id or r.name == rule_id), None)
        if rule is None:
            raise HTTPException(status_code=404, detail=f"no active rule {rule_id!r}")
        return rule_detail(rule)

    @router.post("/test", dependencies=[Depends(admin)], summary="Run a rule on events; nothing is stored")
    async def test_rule(body: RuleTestRequest) -> JSONResponse:
        from detectors.sigma import RuleText, compile_ruleset

        result = await asyncio.to_thread(
            compile_ruleset, [RuleText(source="request", text=body.rule, ruleset="test")], skip_invalid=True)
        errors = [{"rule_id": e.rule_id, "title": e.title, "reason": e.reason} for e in result.errors]
        if errors or not result.ruleset.rules:
            return JSONResponse({"errors": errors or [{"reason": "no detection rule in the request"}],
                                 "matches": []}, status_code=422)
        logsource = LogSource(**body.logsource.model_dump()) if body.logsource else None
        matches = []
        for index, event in enumerate(body.events):
            for match in result.ruleset.evaluate(event, logsource):
                matches.append({"event": index, "rule_id": match.rule.id, "title": match.rule.title,
                                "level": match.rule.level,
                                "fields": [{"field": f, "value": v} for f, v in match.fields]})
        return JSONResponse({"errors": [], "rules": [rule_summary(r) for r in result.ruleset.rules],
                             "matches": matches})

    @router.post("/reload", dependencies=[Depends(admin)], summary="Reload rules from disk")
    async def reload_rules() -> JSONResponse:
        result = await ctx.reloader.reload("api")
        status = {"ok": 200, "rejected": 422}.get(result.result, 500)
        return JSONResponse(result.as_dict(), status_code=status)

    return router
