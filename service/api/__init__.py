"""The HTTP API: FastAPI app factory wiring health, metrics, rules, ingest and the alert routes.

``create_app`` takes everything through :class:`ApiContext`, so tests build an
app around fakes and the service builds it around the real parts. OpenAPI
is served at ``/docs`` (and ``/openapi.json``) unless ``api.docs`` is false.

Every route declares its role beside it (``service.api.roles``); the app is not
built if one does not. The outermost ASGI step is authentication
(:class:`~service.api.auth.Authenticate`), then the body limit, then FastAPI:
an unauthenticated caller gets its 401 before its body is read or parsed.

The browser console (:mod:`service.console`: ``/``, ``/sign-in``, ``/alerts/{id}``...)
is served by the same app unless ``api.console.enabled`` is false; its sign-in
sessions are accepted by the API routes too (writes need the session's CSRF
header). Every response carries the console's security headers (CSP and friends).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service import metrics
from service.alerting.store import StoreError
from service.api.access_log import AccessLog
from service.api.audit import AuditMiddleware, audit_router, denied_recorder
from service.api.auth import Authenticator, guard
from service.api.context import ApiContext
from service.api.events import events_router
from service.api.limits import BodyLimit
from service.api.openapi import build_openapi
from service.api.ratelimit import IngestLimiter
from service.api.routes import health_router, rules_router
from service.audit.trail import AuditTrail
from service.console.headers import SecurityHeaders
from service.console.sessions import SessionStore

__all__ = ["ApiContext", "create_app"]


def _add_console(app: FastAPI, ctx: ApiContext, auth: Authenticator, trail: AuditTrail) -> None:
    """The browser console (``service.console``) and the offline ``/docs``; sessions go on ``auth``."""
    # late: the console's pages import the alerting API, which imports parts of this package
    from service.console.pages import SignInRequired, console_router, redirect_to_sign_in

    console = ctx.settings.api.console
    sessions = SessionStore(console.session_ttl_s, console.idle_timeout_s, console.max_sessions)
    alerts = ctx.extra.get("alerts")
    if console.enabled:
        auth.sessions = sessions
    router = console_router(ctx, auth, sessions, trail, alerts if hasattr(alerts, "store") else None)
    if not console.enabled:  # only the packaged files and /docs
        router.routes[:] = [r for r in router.routes
                            if getattr(r, "path", "").startswith(("/console/", "/docs"))]
    app.include_router(router)
    app.add_exception_handler(SignInRequired, redirect_to_sign_in)


def create_app(ctx: ApiContext) -> FastAPI:
    """The API app; raises :class:`~service.api.roles.UndeclaredRole` for a route without a role."""
    api = ctx.settings.api
    docs = api.docs
    app = FastAPI(title="pipesentry", version="0.1.0",
                  description="Sigma rules, correlations and anomaly checks over CI/CD and production logs.",
                  docs_url=None, redoc_url=None,  # /docs: the console serves Swagger UI from packaged files
                  openapi_url="/openapi.json" if docs else None)
    tls = api.tls
    auth = Authenticator(api.tokens, identities=tls.client_identities if tls else (),
                         cert_required_roles=tls.require_client_cert_for if tls else ())
    auth.warn_expired()
    trail = ctx.audit if ctx.audit is not None else AuditTrail(ctx.settings.audit)
    auth.on_denied = denied_recorder(trail)
    app.include_router(health_router(ctx))
    app.include_router(rules_router(ctx))
    app.include_router(events_router(ctx, IngestLimiter(api.ingest_rate)))
    for router in ctx.routers:
        app.include_router(router)
    app.include_router(audit_router(trail))
    _add_console(app, ctx, auth, trail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        route = request.scope.get("route")  # the matched route's template: a bounded label
        metrics.API_INVALID_REQUESTS.labels(getattr(route, "path", "unmatched")).inc()
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StoreError)
    async def store_unavailable(request: Request, exc: StoreError) -> JSONResponse:
        """The local store failed (disk full, corrupt, I/O): the service is up, the store is not."""
        return JSONResponse({"detail": f"alert store unavailable ({exc.reason}); retry later"}, status_code=503,
                            headers={"Retry-After": "5"})

    limits = {"/api/v1/events": ctx.settings.http_ingest.max_body_bytes,
              "/api/v1/rules/test": min(api.rules_test_max_body_bytes, api.max_body_bytes)}
    # added innermost first; runs: access log -> authentication -> audit -> body limit -> routes
    app.add_middleware(BodyLimit, limit_for=lambda path: limits.get(path, api.max_body_bytes))
    app.add_middleware(AuditMiddleware, trail=trail)
    roles = guard(app, api, auth)  # authentication runs before the audit, the body limit and the routes
    # the access log wraps authentication, so refused requests (401/403) are logged too
    app.add_middleware(AccessLog, mode=api.access_log, sample_every=api.access_log_sample_every)
    app.add_middleware(SecurityHeaders)
    app.openapi = lambda: build_openapi(app, roles)  # type: ignore[method-assign]
    app.state.context = ctx
    app.state.audit = trail
    app.state.auth = auth
    return app
