"""Silences are bounded: a creator, a comment, a maximum duration, and no silent wildcard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from service.alerting.silences import SilenceMatch
from service.api import create_app
from tests.support.api import ADMIN, ANALYST, READER, auth, build_ctx

DAY = 86_400


@pytest.fixture
async def api(tmp_path: Path) -> Any:
    ctx, alerts = build_ctx(tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://t") as c:
        yield c, alerts
    alerts.store.close()


def silence(**fields: Any) -> dict[str, Any]:
    return {"match": {"rule_ids": ["r-exec"]}, "duration_s": 3600, "comment": "planned maintenance", **fields}


async def test_the_creator_is_the_callers_token_name(api: Any) -> None:
    client, alerts = api
    created = await client.post("/api/v1/silences", json=silence(), headers=auth(ANALYST))
    assert created.status_code == 201 and created.json()["created_by"] == "triage"
    spoofed = await client.post("/api/v1/silences", json=silence(created_by="someone-else"), headers=auth(ADMIN))
    assert spoofed.status_code == 422  # the server says who asked
    saved = alerts.store.load_silences()
    assert [s["created_by"] for s in saved] == ["triage"]


@pytest.mark.parametrize("body", [
    silence(duration_s=None, ends_at=1e308),
    silence(duration_s=1e308),
    silence(duration_s=31 * DAY),
    silence(duration_s=None, ends_at=4e9),  # year 2096
])
async def test_a_silence_longer_than_the_maximum_is_refused(api: Any, body: dict[str, Any]) -> None:
    client, _ = api
    response = await client.post("/api/v1/silences", json=body, headers=auth(ADMIN))
    assert response.status_code == 422, response.text
    assert "at most 30 days (alerting.silence_max_duration_s: 2592000)" in response.json()["detail"]


async def test_the_maximum_comes_from_the_alerting_settings(tmp_path: Path) -> None:
    from service.alerting.config import AlertingSettings

    ctx, alerts = build_ctx(tmp_path)
    alerts.settings = AlertingSettings.model_validate({"sinks": [{"type": "store"}], "silence_max_duration_s": 600})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://t") as c:
        assert (await c.post("/api/v1/silences", json=silence(duration_s=601), headers=auth(ADMIN))).status_code == 422
        assert (await c.post("/api/v1/silences", json=silence(duration_s=600), headers=auth(ADMIN))).status_code == 201
    alerts.store.close()


@pytest.mark.parametrize("comment", [None, "", "   "])
async def test_a_comment_is_required(api: Any, comment: str | None) -> None:
    client, _ = api
    body = silence()
    if comment is None:
        del body["comment"]
    else:
        body["comment"] = comment
    assert (await client.post("/api/v1/silences", json=body, headers=auth(ADMIN))).status_code == 422


@pytest.mark.parametrize("match", [
    {}, {"rule_ids": ["*"]}, {"rule_ids": ["**"], "tags": ["*"]},
    {"levels": ["informational", "low", "medium", "high", "critical"]}, {"max_level": "critical"},
    {"fields": {"user": "*"}},
])
async def test_a_silence_of_every_alert_needs_an_admin_who_confirms(api: Any, match: dict[str, Any]) -> None:
    client, _ = api
    body = silence(match=match)
    analyst = await client.post("/api/v1/silences", json={**body, "confirm_wildcard": True}, headers=auth(ANALYST))
    assert analyst.status_code == 403 and "only an admin" in analyst.json()["detail"]
    unconfirmed = await client.post("/api/v1/silences", json=body, headers=auth(ADMIN))
    assert unconfirmed.status_code == 422 and "confirm_wildcard" in unconfirmed.json()["detail"]
    confirmed = await client.post("/api/v1/silences", json={**body, "confirm_wildcard": True}, headers=auth(ADMIN))
    assert confirmed.status_code == 201 and confirmed.json()["created_by"] == "ops"


async def test_reading_silences_is_not_creating_them(api: Any) -> None:
    client, _ = api
    assert (await client.post("/api/v1/silences", json=silence(), headers=auth(READER))).status_code == 403
    assert (await client.get("/api/v1/silences", headers=auth(READER))).status_code == 200


@pytest.mark.parametrize(("match", "everything"), [
    ({}, True), ({"rule_ids": ["*"]}, True), ({"rule_ids": ["r-*"]}, False), ({"rule_ids": ["*", "x"]}, True),
    ({"rule_ids": ["*"], "levels": ["high"]}, False), ({"max_level": "high"}, False),
    ({"fields": {"user": ["*", "bob"]}}, True), ({"fields": {"user": "alice"}}, False),
    ({"tags": ["attack.*"]}, False),
])
def test_what_matches_everything(match: dict[str, Any], everything: bool) -> None:
    assert SilenceMatch(**match).matches_everything() is everything


async def test_without_tokens_the_creator_is_anonymous(tmp_path: Path) -> None:
    from tests.support.api import build_api as build

    client, _, _ = build(tmp_path, tokens=False)
    from service.alerting.config import AlertingSettings
    from service.alerting.router import AlertRouter
    from service.app import _alert_routers

    router = AlertRouter(AlertingSettings.model_validate({"sinks": [{"type": "store"}]}), tmp_path / "a")
    router.store.open()
    router.silences.load()
    ctx = client._transport.app.state.context
    ctx.routers = _alert_routers(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://localhost") as c:
        created = await c.post("/api/v1/silences", json=silence())
    assert created.status_code == 201 and created.json()["created_by"] == "anonymous"
    router.store.close()
