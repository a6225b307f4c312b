"""The HTTP API around a real detector and reloader, with the fake alert router, and a token of every role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from service.alerting.api import api_router
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from service.alerting.triage_store import TriageStore
from service.api import ApiContext, create_app
from service.audit.trail import AuditTrail
from service.config import Settings
from service.detection import Detector, compile_detection
from service.hunt.api import HuntJobs, hunt_router, store_writer
from service.pipeline import Pipeline
from service.reload import Reloader
from tests.support.routers import FakeRouter
from tests.support.rules import CURL_RULE

ADMIN, READER = "admin-token-abcdefghijkl", "read-token-abcdefghijklm"
INGESTER, ANALYST = "ingest-token-abcdefghijk", "analyst-token-abcdefghij"
TOKENS = [{"name": "ops", "role": "admin", "token": ADMIN}, {"name": "viewer", "role": "read", "token": READER},
          {"name": "shipper", "role": "ingest", "token": INGESTER},
          {"name": "triage", "role": "analyst", "token": ANALYST}]
"""A token of every role (admin: ops, read: viewer, ingest: shipper, analyst: triage), as :func:`build_api`
configures them."""
EXPIRED = "expired-token-abcdefghij"
"""An admin token that expired in 2020 (:func:`build_ctx` configures it as ``old``)."""
MATCHING = b'{"message": "curl https://x | sh", "@timestamp": "2026-01-02T03:04:05Z"}'
"""An event the curl rule matches."""


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def build_api(tmp_path: Path, *, tokens: bool = True, ready: bool = True,
              **overrides: Any) -> tuple[httpx.AsyncClient, FakeRouter, Path]:
    """An ASGI client of the API over ``rules/curl.yml`` (the curl rule), the router it submits to and
    the rules folder. ``overrides`` are settings keys (``api`` and ``rules`` are merged, not replaced)."""
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "curl.yml").write_text(CURL_RULE)
    data: dict[str, Any] = {"rules": {"paths": [str(rules)], **overrides.pop("rules", {})},
                            "data_dir": str(tmp_path / "d")}
    if tokens:
        data["api"] = {"tokens": TOKENS, **overrides.pop("api", {})}
    elif "api" in overrides:
        data["api"] = overrides.pop("api")
    data.update(overrides)
    settings = Settings(**data)
    outcome = compile_detection([rules], [], skip_invalid=settings.rules.skip_invalid, generation=1)
    detector = Detector(outcome.detection)
    reloader = Reloader(detector, settings.rules, settings.correlation, settings.anomaly)
    router = FakeRouter()
    ctx = ApiContext(settings=settings, detector=detector, reloader=reloader,
                     pipeline=Pipeline(detector, router),  # type: ignore[arg-type]
                     readiness=lambda: {"rules_loaded": ready})
    # loopback base URL: without tokens the API answers only to its own host names
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://127.0.0.1:8080")
    return client, router, rules


def build_ctx(tmp: Path, **api: Any) -> tuple[ApiContext, AlertRouter]:
    """The API context with a token of every role plus the expired one, and a store-only alert router
    (not started) whose alerts and silences routes are mounted."""
    rules = tmp / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "curl.yml").write_text(CURL_RULE)
    tokens = [*TOKENS, {"name": "old", "role": "admin", "token": EXPIRED, "expires": "2020-01-01T00:00:00Z"}]
    s = Settings(rules={"paths": [str(rules)]}, data_dir=tmp / "data",  # type: ignore[arg-type]
                 api={"tokens": tokens, **api})  # type: ignore[arg-type]
    outcome = compile_detection([rules], [], skip_invalid=False, generation=1)
    assert outcome.detection is not None
    detector = Detector(outcome.detection)
    alerts = AlertRouter(AlertingSettings.model_validate({"sinks": [{"type": "store"}]}), tmp / "alerting")
    alerts.store.open()
    alerts.silences.load()
    ctx = ApiContext(settings=s, detector=detector, reloader=Reloader(detector, s.rules, s.correlation, s.anomaly),
                     pipeline=Pipeline(detector, FakeRouter()),  # type: ignore[arg-type]
                     readiness=lambda: {"rules_loaded": True}, routers=[api_router(alerts), hunt_router(HuntJobs(s, store_writer(alerts)))],
                     audit=AuditTrail(s.audit, alerts.store), alert_stats=TriageStore(alerts.store).rule_stats)
    return ctx, alerts
