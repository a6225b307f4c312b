"""Every operation of the served OpenAPI document against every role, and authentication first.

The matrix is generated from ``/openapi.json``: a new endpoint is covered as soon as it is
served, and one that declares no role fails here (and ``create_app`` refuses it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from service import metrics
from service.api import create_app
from service.api.errors import ErrorBody
from service.api.roles import GRANTS, ROLE_EXTENSION, TOKEN_ROLES, Role, UndeclaredRole
from tests.support.api import ADMIN, ANALYST, EXPIRED, INGESTER, READER, build_ctx

CALLERS: dict[str, str | None] = {"admin": ADMIN, "read": READER, "ingest": INGESTER, "analyst": ANALYST,
                                  "none": None, "wrong": "w" * 24, "expired": EXPIRED}


@pytest.fixture
async def client(tmp_path: Path) -> Any:
    ctx, alerts = build_ctx(tmp_path, metrics_public=False)
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://pipesentry.internal") as c:
        yield c
    alerts.store.close()


def headers_for(caller: str) -> dict[str, str]:
    token = CALLERS[caller]
    return {"content-type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}


def check_error_body(response: httpx.Response) -> None:
    if response.status_code >= 400:
        ErrorBody.model_validate(response.json())


async def test_every_operation_against_every_role(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    assert doc["security"] == [{"bearer": []}]
    seen_roles = set()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            role = op.get(ROLE_EXTENSION)
            assert role in set(Role), f"{method.upper()} {path} declares no role"
            seen_roles.add(role)
            assert op["security"] == ([] if role == Role.PUBLIC else [{"bearer": []}])
            url = path.replace("{", "").replace("}", "")  # path parameters: their own names
            for caller in CALLERS:
                response = await client.request(method, url, headers=headers_for(caller),
                                                content=b"{}" if method in ("post", "put", "patch") else None)
                status, what = response.status_code, f"{caller} -> {method.upper()} {path}: {response.text[:200]}"
                check_error_body(response)
                if role == Role.PUBLIC:
                    assert status not in (401, 403), what
                elif caller in ("none", "wrong", "expired"):
                    assert status == 401, what
                    assert response.headers["www-authenticate"].startswith("Bearer"), what
                elif Role(role) in GRANTS[caller]:
                    assert 200 <= status < 300 or status in (404, 422), what
                else:
                    assert status == 403, what
                if status in (401, 403, 404, 413, 422, 429) and role != Role.PUBLIC:
                    assert str(status) in op["responses"], f"{what}: {status} not declared"
    assert seen_roles == set(Role), "every role is used by some endpoint"


async def test_an_expired_token_is_refused_counted_and_warned_about(tmp_path: Path, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING):
        ctx, alerts = build_ctx(tmp_path)
        app = create_app(ctx)
    warned = [r for r in caplog.records if r.getMessage() == "API token has expired and is refused"]
    assert [getattr(r, "token_name", None) for r in warned] == ["old"]
    assert EXPIRED not in caplog.text
    before = metrics.HTTP_REJECTED.labels("expired")._value.get()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/api/v1/rules", headers=headers_for("expired"))
    assert response.status_code == 401 and response.json() == {"detail": "bearer token has expired"}
    assert metrics.HTTP_REJECTED.labels("expired")._value.get() == before + 1
    alerts.store.close()


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/rules/test", "/api/v1/silences"])
async def test_authentication_comes_before_the_body_is_read(client: httpx.AsyncClient, path: str) -> None:
    malformed = b'{"rule": [unclosed'
    oversized = b"x" * (20 * 1024 * 1024)
    for body in (malformed, oversized):
        for caller in ("none", "wrong", "expired"):
            response = await client.post(path, content=body, headers=headers_for(caller))
            assert response.status_code == 401, (caller, response.text)
            check_error_body(response)
    # a valid token whose role does not reach the endpoint: 403, still before the body
    response = await client.post(path, content=oversized, headers=headers_for("read"))
    assert response.status_code == 403
    # the right role: now the body limit and the parser have their say
    too_large = await client.post(path, content=oversized, headers=headers_for("admin"))
    assert too_large.status_code == 413
    check_error_body(too_large)
    malformed_answer = await client.post(path, content=malformed, headers=headers_for("admin"))
    assert malformed_answer.status_code in (400, 422)
    check_error_body(malformed_answer)


async def test_a_route_without_a_declared_role_is_refused_at_build_and_when_added_later(tmp_path: Path) -> None:
    bare = APIRouter()

    @bare.get("/api/v1/forgotten")
    async def forgotten() -> dict[str, str]:
        return {"secret": "x"}

    ctx, alerts = build_ctx(tmp_path)
    ctx.routers.append(bare)
    with pytest.raises(UndeclaredRole, match=r"GET.* /api/v1/forgotten declares no role"):
        create_app(ctx)
    ctx.routers.pop()
    app = create_app(ctx)
    app.include_router(bare)  # behind create_app's back: served, but refused to everyone
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/api/v1/forgotten", headers=headers_for("admin"))
    assert response.status_code == 403 and "declares no role" in response.json()["detail"]
    alerts.store.close()


def test_token_roles_and_grants_agree_with_the_settings() -> None:
    from typing import get_args

    from service.config import TokenSettings

    assert set(get_args(TokenSettings.model_fields["role"].annotation)) == set(TOKEN_ROLES)
    assert GRANTS[Role.ADMIN] == frozenset(Role)
    assert Role.INGEST not in GRANTS[Role.ANALYST] and Role.ANALYST not in GRANTS[Role.READ]
