"""Bearer-token authentication, the first step of every API request (before any body is read).

Tokens are named and carry a role (``service.api.roles``); they come from the
settings (inline or from secret files) and may expire. Every presented token is
compared with every configured one using ``hmac.compare_digest`` and without an
early exit, so the time taken does not reveal which prefix or which token matched.

:class:`Authenticate` is the outermost ASGI middleware: it finds the route a
request is for, reads the role the route declares, and answers 401 (no, wrong
or expired token) or 403 (role too low) before the body limit or any parser
sees the body, so an unauthenticated caller learns nothing about the body it
sent. An admitted caller's :class:`Principal` is stored on the request. With no
tokens configured authentication is off and :class:`SameOrigin` guards the API
against other web sites instead.

A verified client certificate mapped to a principal (``api.tls.client_identities``,
:mod:`service.api.tls`) stands in for a token when the request carries none; roles
listed in ``api.tls.require_client_cert_for`` must also present a verified client
certificate. Every refusal (401, 403) goes through ``Authenticator.on_denied``
(the audit trail's hook).

A console session (:mod:`service.console.sessions`: its cookie, when the request
carries neither token nor certificate) stands for the token it was signed in
with; a state-changing API request authenticated so must carry the session's
``X-CSRF-Token`` header (403 otherwise), and the console's pages find the
session on ``scope["state"]["session"]``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Collection, Sequence

from fastapi import FastAPI
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics
from service.api.crossorigin import STATE_CHANGING, SameOrigin
from service.api.errors import BEARER_CHALLENGE, send_error
from service.api.principal import ANONYMOUS, Principal
from service.api.roles import Role, RoleTable, allows
from service.api.tls import PEER_KEY, PeerCertificate, identity_for
from service.config import ApiSettings, ClientIdentitySettings, TokenSettings
from service.console.sessions import CSRF_HEADER, Session, SessionStore, cookie_value

log = logging.getLogger(__name__)


DeniedHook = Callable[[HTTPConnection, int, str, Principal | None], None]
"""Called with (request, status, reason, the principal if known) for every 401/403."""


class Authenticator:
    """The configured tokens and client-certificate identities; ``clock`` (unix seconds) decides expiry."""

    def __init__(self, tokens: Sequence[TokenSettings], clock: Callable[[], float] = time.time, *,
                 identities: Sequence[ClientIdentitySettings] = (),
                 cert_required_roles: Collection[str] = ()) -> None:
        self._tokens = [(t.token.get_secret_value().encode(), Principal(name=t.name, role=t.role),
                         t.expires.timestamp() if t.expires is not None else None, t.expires)
                        for t in tokens if t.token]
        self._clock = clock
        self.identities = list(identities)
        self.cert_required_roles = frozenset(cert_required_roles)
        self.on_denied: DeniedHook | None = None
        self.sessions: SessionStore | None = None
        """The console's sign-in sessions (``None``: the console is off and cookies mean nothing)."""

    def by_certificate(self, scope: Scope) -> Principal | None:
        """The principal a verified, mapped client certificate of this connection stands for."""
        peer = scope.get("state", {}).get(PEER_KEY)
        return identity_for(peer, self.identities) if isinstance(peer, PeerCertificate) and self.identities else None

    def denied(self, scope: Scope, status: int, reason: str, principal: Principal | None) -> None:
        """Count a refusal and report it to ``on_denied`` (the audit trail)."""
        metrics.HTTP_REJECTED.labels(reason if reason in ("expired", "forbidden") else
                                     "unauthenticated" if status == 401 else "forbidden").inc()
        if self.on_denied is not None:
            self.on_denied(HTTPConnection(scope), status, reason, principal)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens) or bool(self.identities)

    def identify(self, presented: str) -> tuple[Principal | None, bool]:
        """(who ``presented`` is, or None; whether it matched a token that has expired)."""
        given = presented.encode()
        found: Principal | None = None
        expired = False
        now = self._clock()
        for secret, principal, ends, _ in self._tokens:
            if hmac.compare_digest(secret, given):
                if ends is not None and now >= ends:
                    expired = True
                else:
                    found = principal
        return found, expired

    def expiry_of(self, name: str) -> float | None:
        """When the token named ``name`` expires (unix seconds), if it does (a console session ends then too)."""
        return next((ends for _, principal, ends, _ in self._tokens if principal.name == name), None)

    def warn_expired(self) -> list[str]:
        """Log a warning for every configured token already expired; returns their names."""
        now = self._clock()
        names = []
        for _, principal, ends, when in self._tokens:
            if ends is not None and now >= ends and when is not None:
                names.append(principal.name)
                log.warning("API token has expired and is refused", extra={
                    "token_name": principal.name, "role": principal.role, "expired_at": when.isoformat()})
        return names


def header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def bearer(scope: Scope) -> str | None:
    """The bearer token of the request's ``Authorization`` header, if it has one."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class Authenticate:
    """ASGI middleware: identify the caller and check the route's role before anything else runs."""

    def __init__(self, app: ASGIApp, auth: Authenticator, roles: RoleTable, same_origin: SameOrigin) -> None:
        self.app = app
        self.auth = auth
        self.roles = roles
        self.same_origin = same_origin

    def _route(self, scope: Scope) -> tuple[bool, Role | None]:
        """(whether a route serves this method and path, the role it declares)."""
        entry = self.roles.lookup(scope["method"], scope["path"])
        return (False, None) if entry is None else (True, entry.role)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        matched, needed = self._route(scope)
        state = scope.setdefault("state", {})
        session: Session | None = None
        if self.auth.sessions is not None:
            session = self.auth.sessions.get(cookie_value(scope.get("headers", ())))
            if session is not None:
                state["session"] = session
        if matched and needed is None:  # fail closed: declare_roles keeps this from being served
            metrics.HTTP_REJECTED.labels("forbidden").inc()
            await send_error(send, 403, "this endpoint declares no role")
            return
        if not self.auth.enabled:
            state["principal"] = ANONYMOUS
            refused = None if needed is Role.PUBLIC else self.same_origin.refusal(scope)
            if refused is not None:
                metrics.HTTP_CROSS_SITE_REFUSED.labels(refused[0]).inc()
                await send_error(send, 403, refused[1])
                return
            await self.app(scope, receive, send)
            return
        token = bearer(scope)
        principal, expired = self.auth.identify(token) if token is not None else (None, False)
        if principal is None and token is None:
            principal = self.auth.by_certificate(scope)
        if principal is None and token is None and session is not None:
            if (scope["method"] in STATE_CHANGING and needed is not Role.PUBLIC
                    and not session.csrf_ok(header(scope, CSRF_HEADER.encode()))):
                self.auth.denied(scope, 403, "csrf", session.principal)
                await send_error(send, 403, "a request signed in by the console's cookie needs its "
                                            "X-CSRF-Token header")
                return
            principal = session.principal
        if principal is not None:
            state["principal"] = principal
        elif needed is not Role.PUBLIC:
            self.auth.denied(scope, 401, "expired" if expired else "unauthenticated", None)
            detail = "bearer token has expired" if expired else "missing or invalid bearer token"
            await send_error(send, 401, detail, [BEARER_CHALLENGE])
            return
        if needed is not None and principal is not None and needed is not Role.PUBLIC:
            if not allows(principal.role, needed):
                self.auth.denied(scope, 403, "forbidden", principal)
                await send_error(send, 403, f"this endpoint needs the {needed} role (token "
                                            f"{principal.name!r} has {principal.role})")
                return
            if principal.role in self.auth.cert_required_roles and not isinstance(state.get(PEER_KEY),
                                                                                  PeerCertificate):
                self.auth.denied(scope, 403, "client_certificate_required", principal)
                await send_error(send, 403, f"the {principal.role} role needs a verified client certificate")
                return
        await self.app(scope, receive, send)


def guard(app: FastAPI, api: ApiSettings, auth: Authenticator | None = None) -> RoleTable:
    """Check that every route of ``app`` declares its role (raises
    :class:`~service.api.roles.UndeclaredRole`) and put authentication in front of it: call it
    after every middleware that must only see authenticated requests is added (the access log,
    which records refusals as well, goes outside it)."""
    roles = RoleTable(app)
    roles.check()
    app.add_middleware(Authenticate, auth=auth or Authenticator(api.tokens), roles=roles,
                       same_origin=SameOrigin(api.host, api.allowed_hosts))
    return roles
