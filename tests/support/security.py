"""An API app around a real detector, alert router store, silences and audit trail (for the audit,
access-log and TLS tests), plus log capture of the dedicated loggers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from service.alerting.api import api_router
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from service.api import ApiContext, create_app
from service.audit.trail import AuditTrail
from service.config import Settings
from service.detection import Detector, compile_detection
from service.pipeline import Pipeline
from service.reload import Reloader
from tests.support.api import TOKENS
from tests.support.routers import FakeRouter
from tests.support.rules import CURL_RULE


@contextmanager
def security_app(tmp_path: Path, *, api: dict[str, Any] | None = None, audit: dict[str, Any] | None = None,
                 clock: Any = None) -> Iterator[tuple[FastAPI, AuditTrail, FakeRouter]]:
    """The app (a token of every role: ``tests.support.api.TOKENS``) and its audit trail."""
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "curl.yml").write_text(CURL_RULE)
    s = Settings(rules={"paths": [str(rules)]}, data_dir=tmp_path / "data",  # type: ignore[arg-type]
                 api={"tokens": TOKENS, **(api or {})}, audit=audit or {})  # type: ignore[arg-type]
    outcome = compile_detection([rules], [], skip_invalid=False, generation=1)
    assert outcome.detection is not None
    detector = Detector(outcome.detection)
    alerts = AlertRouter(AlertingSettings.model_validate({"sinks": [{"type": "store"}]}), tmp_path / "alerting")
    alerts.store.open()
    alerts.silences.load()
    trail = AuditTrail(s.audit, alerts.store, **({"clock": clock} if clock else {}))
    ingest = FakeRouter()
    ctx = ApiContext(settings=s, detector=detector, reloader=Reloader(detector, s.rules, s.correlation, s.anomaly),
                     pipeline=Pipeline(detector, ingest),  # type: ignore[arg-type]
                     readiness=lambda: {"rules_loaded": True}, routers=[api_router(alerts)],
                     audit=trail)
    try:
        yield create_app(ctx), trail, ingest
    finally:
        alerts.store.close()


class Captured(logging.Handler):
    """Records of one logger, as emitted (extras are attributes)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured(name: str) -> Iterator[Captured]:
    logger = logging.getLogger(name)
    handler = Captured()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
