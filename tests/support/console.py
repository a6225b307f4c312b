"""The API app with the console mounted over a real alert store, and a signed-in browser-like client."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from detectors.alert import Alert
from service.alerting.router import AlertRouter
from service.api import create_app
from tests.support.alerts import alert, rule
from tests.support.api import build_ctx

XSS_EVENT = {"cmd": "<script>window.pwned=1</script>", "user": '"><img src=x onerror="window.pwned=2">',
             "url": "javascript:window.pwned=3", "host": "h1"}
"""Event values an attacker controls: markup, an attribute break-out and a script URL."""


@contextmanager
def console_client(tmp_path: Path, **api: Any) -> Iterator[tuple[TestClient, AlertRouter]]:
    """A client of the app (a token of every role, ``tests.support.api.TOKENS``) and its alert router."""
    ctx, alerts = build_ctx(tmp_path, **api)
    ctx.extra["alerts"] = alerts
    try:
        with TestClient(create_app(ctx), base_url="http://127.0.0.1:8080", follow_redirects=False) as client:
            yield client, alerts
    finally:
        alerts.store.close()


def fresh_alert(offset: int, *, level: str = "high", event: dict[str, Any] | None = None,
                rule_id: str = "r1", refs: tuple[str, ...] = ()) -> Alert:
    """An alert detected now (the queue shows the last 24 hours by default)."""
    r = rule(rule_id, level, tags=("attack.execution", "attack.t1059"))
    if refs:
        from dataclasses import replace

        r = replace(r, references=refs)
    return alert(offset, r=r, event=event, ts=time.time())


def sign_in(client: TestClient, token: str, next_path: str = "/") -> str:
    """Sign ``client`` in with ``token``; returns the session's CSRF token."""
    response = client.post("/sign-in", data={"token": token, "next": next_path})
    assert response.status_code == 303, response.text
    page = client.get("/")
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)
