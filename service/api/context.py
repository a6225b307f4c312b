"""What the API needs from the running service, passed in by the composition root (``service.app``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter

from service.audit.trail import AuditTrail
from service.config import Settings
from service.detection import Detector
from service.pipeline import Pipeline
from service.reload import Reloader


@dataclass
class ApiContext:
    settings: Settings
    detector: Detector
    reloader: Reloader
    pipeline: Pipeline | None
    """``None`` when HTTP ingest is disabled."""
    readiness: Callable[[], dict[str, bool]]
    routers: list[APIRouter] = field(default_factory=list)
    """Extra routers (the alert router's ``/api/v1/alerts`` and silences); each of their routes
    declares its role (``service.api.roles.requires``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    audit: AuditTrail | None = None
    """The audit trail; ``None`` builds one that only logs (no ``GET /api/v1/audit`` history)."""
    alert_stats: Callable[[], Mapping[str, Any]] | None = None
    """Per rule id, its stored alerts and false positives (``TriageStore.rule_stats``: objects with
    ``as_dict()``), shown by the rules API; ``None``: no local store."""
