"""Bearer-token authentication with two roles: ``read`` (rules, alerts, metrics) and ``admin`` (all).

Tokens come from the settings (inline or from secret files). Every presented
token is compared with every configured one using ``hmac.compare_digest`` and
without an early exit, so the time taken does not reveal which prefix or which
token matched. With no tokens configured authentication is off: the default
binds to loopback only, and the service warns when it listens elsewhere.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from fastapi import HTTPException, Request

from service import metrics
from service.api.principal import Principal
from service.config import TokenSettings

ROLES = ("read", "admin")


class Authenticator:
    def __init__(self, tokens: Sequence[TokenSettings]) -> None:
        self._tokens = [(t.token.get_secret_value().encode(), t.role, t.name) for t in tokens if t.token]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def principal_for(self, presented: str) -> Principal | None:
        """Who ``presented`` is (the highest role if it is configured twice), or None."""
        given = presented.encode()
        found: Principal | None = None
        for secret, role, name in self._tokens:
            if hmac.compare_digest(secret, given) and (found is None or role == "admin"):
                found = Principal(name=name, role=role)
        return found


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require(auth: Authenticator, role: str) -> Callable[[Request], None]:
    """A FastAPI dependency admitting requests whose token carries ``role`` (admin implies read)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def check(request: Request) -> None:
        if not auth.enabled:
            return
        token = _bearer(request)
        principal = auth.principal_for(token) if token is not None else None
        if principal is None:
            metrics.HTTP_REJECTED.labels("unauthenticated").inc()
            raise HTTPException(status_code=401, detail="missing or invalid bearer token",
                                headers={"WWW-Authenticate": 'Bearer realm="pipesentry"'})
        request.state.principal = principal
        if role == "admin" and principal.role != "admin":
            metrics.HTTP_REJECTED.labels("forbidden").inc()
            raise HTTPException(status_code=403, detail="this endpoint needs an admin token")

    return check


def require_by_method(auth: Authenticator) -> Callable[[Request], None]:
    """Read role for GET/HEAD, admin for anything that changes state (used for mounted routers)."""
    read, admin = require(auth, "read"), require(auth, "admin")

    def check(request: Request) -> None:
        (read if request.method in ("GET", "HEAD", "OPTIONS") else admin)(request)

    return check
