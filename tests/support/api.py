"""The HTTP API around a real detector and reloader, with the fake alert router, and its two tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from service.api import ApiContext, create_app
from service.config import Settings
from service.detection import Detector, compile_detection
from service.pipeline import Pipeline
from service.reload import Reloader
from tests.support.routers import FakeRouter
from tests.support.rules import CURL_RULE

ADMIN, READER = "admin-token-abcdefghijkl", "read-token-abcdefghijklm"
"""The tokens of the ``admin`` (ops) and ``read`` (viewer) roles :func:`build_api` configures."""


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
        data["api"] = {"tokens": [{"name": "ops", "role": "admin", "token": ADMIN},
                                  {"name": "viewer", "role": "read", "token": READER}],
                       **overrides.pop("api", {})}
    data.update(overrides)
    settings = Settings(**data)
    outcome = compile_detection([rules], [], skip_invalid=settings.rules.skip_invalid, generation=1)
    detector = Detector(outcome.detection)
    reloader = Reloader(detector, settings.rules, settings.correlation, settings.anomaly)
    router = FakeRouter()
    ctx = ApiContext(settings=settings, detector=detector, reloader=reloader,
                     pipeline=Pipeline(detector, router),  # type: ignore[arg-type]
                     readiness=lambda: {"rules_loaded": ready})
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://t")
    return client, router, rules
