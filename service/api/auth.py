"""Bearer-token authentication with two roles: ``read`` (rules, alerts, metrics) and ``admin`` (all).

A verified client certificate mapped to a principal (``api.tls.client_identities``,
:mod:`service.api.tls`) stands in for a token when the request carries none; roles
listed in ``api.tls.require_client_cert_for`` must also present a verified client
certificate. Every refusal (401, 403) goes through ``Authenticator.on_denied``
(the audit trail's hook) before the error is raised.

Tokens come from the settings (inline or from secret files). Every presented
token is compared with every configured one using ``hmac.compare_digest`` and
without an early exit, so the time taken does not reveal which prefix or which
token matched. With no tokens configured authentication is off: the default
binds to loopback only, and the service warns when it listens elsewhere.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection, Sequence

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from service import metrics
from service.api.principal import Principal, principal_of
from service.api.tls import peer_certificate
from service.config import TokenSettings

DeniedHook = Callable[[HTTPConnection, int, str, Principal | None], None]
"""Called with (request, status, reason, the principal if known) for every 401/403."""

ROLES = ("read", "admin")


class Authenticator:
    def __init__(self, tokens: Sequence[TokenSettings], *, client_identities: bool = False,
                 cert_required_roles: Collection[str] = ()) -> None:
        self._tokens = [(t.token.get_secret_value().encode(), t.role, t.name) for t in tokens if t.token]
        self._client_identities = client_identities
        self.cert_required_roles = frozenset(cert_required_roles)
        self.on_denied: DeniedHook | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._tokens) or self._client_identities

    def deny(self, request: HTTPConnection, status: int, reason: str, principal: Principal | None,
             detail: str) -> HTTPException:
        """Count, report (``on_denied``) and build the refusal; the caller raises it."""
        metrics.HTTP_REJECTED.labels("unauthenticated" if status == 401 else "forbidden").inc()
        if self.on_denied is not None:
            self.on_denied(request, status, reason, principal)
        headers = {"WWW-Authenticate": 'Bearer realm="pipesentry"'} if status == 401 else None
        return HTTPException(status_code=status, detail=detail, headers=headers)

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
        if principal is None and token is None:
            by_cert = principal_of(request)  # set from a mapped client certificate, if any
            principal = by_cert if by_cert.via == "client-certificate" else None
        if principal is None:
            raise auth.deny(request, 401, "unauthenticated", None, "missing or invalid bearer token")
        request.state.principal = principal
        if principal.role in auth.cert_required_roles and peer_certificate(request) is None:
            raise auth.deny(request, 403, "client_certificate_required", principal,
                            f"the {principal.role} role needs a verified client certificate")
        if role == "admin" and principal.role != "admin":
            raise auth.deny(request, 403, "forbidden", principal, "this endpoint needs an admin token")

    return check


def require_by_method(auth: Authenticator) -> Callable[[Request], None]:
    """Read role for GET/HEAD, admin for anything that changes state (used for mounted routers)."""
    read, admin = require(auth, "read"), require(auth, "admin")

    def check(request: Request) -> None:
        (read if request.method in ("GET", "HEAD", "OPTIONS") else admin)(request)

    return check
