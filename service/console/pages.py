"""The console's routes: sign-in/out, the pages, the packaged static files and the offline ``/docs``.

Pages render server-side (Jinja2, autoescaped) from the same objects the API
serves; their actions (triage, notes, silences, rule tests, reloads) are sent by
``static/console.js`` to the API with the session cookie and the session's CSRF
header, so the API's role checks, validation and audit trail apply to them
unchanged. Every page needs a session (:func:`signed_in`): without one it
redirects to ``/sign-in?next=<the page>``. Each route declares the ``public``
role for the API's authentication step, which leaves sessions to this module,
and stays out of the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.staticfiles import StaticFiles

from detectors.alert import alert_id, iso_time
from detectors.model import LEVELS, RuleInfo
from service.alerting import indexing
from service.alerting.api import alert_filters
from service.alerting.queries import AlertQuery
from service.alerting.router import AlertRouter
from service.alerting.triage_store import TriageStore
from service.api.audit import client_of
from service.api.auth import Authenticator
from service.api.context import ApiContext
from service.api.crossorigin import SameOrigin
from service.api.principal import ANONYMOUS, Principal
from service.api.roles import Role, allows, requires
from service.api.rule_yaml import rule_yaml
from service.audit.store import AuditQuery
from service.audit.trail import AuditTrail
from service.console import views
from service.console.sessions import COOKIE, CSRF_FIELD, Session, SessionStore, SignInLimiter
from service.errors import ServiceError

HERE = Path(__file__).parent
STATIC = HERE / "static"
MAX_FORM_BYTES = 16_384
PUBLIC = [requires(Role.PUBLIC)]
CONSOLE_ROLES = (Role.READ, Role.ANALYST, Role.ADMIN)
GROUP_SCAN = 500
"""Newest alerts of a rule searched for the same group key on an alert page."""
"""Token roles that may sign in (``ingest`` reads nothing)."""


class SignInRequired(ServiceError):
    """A page was asked for without a session: the handler redirects to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def swagger_dir() -> Path | None:
    """The packaged Swagger UI 5 files (from the ``fastapi-offline`` distribution), if installed.

    Only its static files are used (found without importing the package): ``swagger-ui-bundle.js``
    and ``swagger-ui.css``; Swagger UI 5 reads the OpenAPI 3.1 documents FastAPI writes.
    """
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    found = Path(spec.origin).parent / "static"
    return found if (found / "swagger-ui-bundle.js").is_file() else None


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = lambda ts: iso_time(float(ts)) if isinstance(ts, int | float) else (ts or "")
    env.filters["safe_url"] = views.safe_url
    env.filters["origin"] = indexing.origin_of
    env.filters["logsource"] = indexing.logsource_of
    env.filters["json"] = views.pretty_json
    env.filters["techniques"] = lambda tags: ", ".join(link.text for link in views.attack_links(tags)
                                                       if link.text.startswith("T"))
    return env


def signed_in(request: Request) -> Session:
    """The page's session (dependency); without one the page redirects to the sign-in page."""
    session = request.scope.get("state", {}).get("session")
    if not isinstance(session, Session):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target)
    return session


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=20).items()}


def _same_origin(request: Request) -> bool:
    """A form post comes from our own pages: no ``Origin``, or ours (a sign-in forced by another site is refused)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "") and parts.scheme == request.url.scheme


def console_router(ctx: ApiContext, auth: Authenticator, sessions: SessionStore, trail: AuditTrail,
                   alerts: AlertRouter | None, *, clock: Callable[[], float] = time.time) -> APIRouter:
    same_origin = SameOrigin(ctx.settings.api.host, ctx.settings.api.allowed_hosts)

    def host_guard(request: Request) -> None:
        """Without tokens, the API's DNS-rebinding guard holds for the console too (its routes are public to
        the authentication step): a ``Host`` the server does not answer to is refused."""
        if auth.enabled:
            return
        try:
            own = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
        except ValueError:
            own = ""
        if not own or not same_origin.host_allowed(own.rstrip(".").lower()):
            raise HTTPException(status_code=403, detail="Host header names no host this server answers to "
                                                        "without tokens (add it to api.allowed_hosts)")

    router = APIRouter(include_in_schema=False, dependencies=[Depends(host_guard)])
    env = _environment()
    settings = ctx.settings.api.console
    limiter = SignInLimiter(settings.sign_in_failures, settings.sign_in_window_s, clock)
    secure = ctx.settings.api.tls is not None
    static = StaticFiles(directory=STATIC)
    swagger = swagger_dir()
    swagger_files = StaticFiles(directory=swagger) if swagger is not None else None
    triage = TriageStore(alerts.store) if alerts is not None else None
    filters = alert_filters(alerts.clock if alerts is not None else clock)

    def render(request: Request, name: str, session: Session | None, status: int = 200,
               **values: Any) -> HTMLResponse:
        who = session.principal if session is not None else None
        page = env.get_template(name).render(
            request_path=request.url.path, session=session, who=who,
            can_triage=who is not None and allows(who.role, Role.ANALYST),
            is_admin=who is not None and allows(who.role, Role.ADMIN),
            csrf=session.csrf if session is not None else "", levels=LEVELS, **values)
        return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})

    def all_rules() -> list[RuleInfo]:
        current = ctx.detector.current
        rules = list(current.ruleset.rules)
        rules.extend(info for info, _ in getattr(current.ruleset, "correlations", ()) or ())
        return rules

    def shown(doc: dict[str, Any]) -> dict[str, Any]:
        return alerts.redaction.document(doc) if alerts is not None and alerts.redaction.enabled else doc

    # -- sign-in ---------------------------------------------------------------------------
    @router.get("/sign-in", dependencies=PUBLIC)
    async def sign_in_page(request: Request, next: str = Query("/", max_length=2048)) -> HTMLResponse:
        return render(request, "sign_in.html", None, next=views.local_path(next), auth_on=auth.enabled, failed=False)

    @router.post("/sign-in", dependencies=PUBLIC)
    async def sign_in(request: Request) -> Response:
        body = await request.body()
        form = _form(body[:MAX_FORM_BYTES])
        target = views.local_path(form.get("next"))
        client = client_of(request) or "unknown"
        if not _same_origin(request):
            trail.record("console.sign_in", actor="unauthenticated", role="", via="none", client=client,
                         outcome="denied", status=403, detail={"reason": "cross_site"})
            return render(request, "sign_in.html", None, 403, next=target, auth_on=auth.enabled,
                          failed="This sign-in came from another site and was refused.")
        if limiter.blocked(client):
            trail.record("console.sign_in", actor="unauthenticated", role="", via="none", client=client,
                         outcome="denied", status=429, detail={"reason": "rate_limited"})
            response = render(request, "sign_in.html", None, 429, next=target, auth_on=auth.enabled,
                              failed="Too many failed sign-ins from this address; wait a minute.")
            response.headers["Retry-After"] = str(int(settings.sign_in_window_s))
            return response
        principal: Principal | None
        if auth.enabled:
            principal, expired = auth.identify(form.get("token", "").strip())
            reason = "expired" if expired else "unauthenticated"
            if principal is not None and principal.role not in CONSOLE_ROLES:
                principal, reason = None, "role"
        else:
            principal, reason = ANONYMOUS, ""
        if principal is None:
            limiter.failed(client)
            trail.record("console.sign_in", actor="unauthenticated", role="", via="none", client=client,
                         outcome="denied", status=401, detail={"reason": reason})
            return render(request, "sign_in.html", None, 401, next=target, auth_on=auth.enabled,
                          failed="Sign-in failed: unknown or expired token, or a role that cannot use the console.")
        previous = request.scope.get("state", {}).get("session")
        if isinstance(previous, Session):  # a new sign-in replaces the session it was made from
            sessions.end(previous.id)
        session = sessions.create(Principal(principal.name, principal.role, via="session"),
                                  auth.expiry_of(principal.name) if auth.enabled else None)
        trail.record("console.sign_in", actor=principal.name, role=principal.role, via="session", client=client,
                     outcome="ok", status=303)
        done = RedirectResponse(target, status_code=303)
        done.set_cookie(COOKIE, session.id, max_age=int(settings.session_ttl_s), path="/", httponly=True,
                        samesite="strict", secure=secure)
        return done

    @router.post("/sign-out", dependencies=PUBLIC)
    async def sign_out(request: Request) -> Response:
        session = request.scope.get("state", {}).get("session")
        form = _form((await request.body())[:MAX_FORM_BYTES])
        if isinstance(session, Session):
            if not session.csrf_ok(form.get(CSRF_FIELD)):
                raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
            sessions.end(session.id)
            who = session.principal
            trail.record("console.sign_out", actor=who.name, role=who.role, via="session",
                         client=client_of(request), outcome="ok", status=303)
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=secure)
        return response

    # -- the alert queue ---------------------------------------------------------------------
    def queue_query(params: list[tuple[str, str]], range_: str) -> AlertQuery:
        """The queue's filters (the API's own parser, so both accept the same), empty fields left out."""
        one = {k: v for k, v in params if k not in ("level", "status")}
        if any(len(v) > 1000 for _, v in params):
            raise HTTPException(status_code=422, detail="a filter value is too long")
        since = one.get("since") if range_ == "custom" else views.RANGES.get(range_, "24h")
        try:
            limit = min(max(int(one.get("limit", "50")), 1), 200)
        except ValueError:
            limit = 50
        assigned = {"true": True, "false": False}.get(one.get("assigned", ""))
        return filters(rule=one.get("rule"), level=[v for k, v in params if k == "level"] or None,
                       min_level=one.get("min_level"), status=[v for k, v in params if k == "status"] or None,
                       assignee=one.get("assignee"), assigned=assigned, tag=one.get("tag"),
                       product=one.get("product"), service=one.get("service"), category=one.get("category"),
                       host=one.get("host"), user=one.get("user"), since=since,
                       until=one.get("until") if range_ == "custom" else None,
                       time_field=one.get("time_field", "detected"), q=one.get("q"), limit=limit, offset=0,
                       cursor=one.get("cursor"))

    @router.get("/", dependencies=PUBLIC)
    async def queue(request: Request, session: Session = Depends(signed_in)) -> HTMLResponse:
        params = [(k, v.strip()) for k, v in request.query_params.multi_items() if v.strip()][:64]
        range_ = dict(params).get("range", "24h")
        query = queue_query(params, range_)
        items: list[dict[str, Any]] = []
        total, next_cursor = 0, None
        if alerts is not None:
            page = await asyncio.to_thread(alerts.store.query, query)
            items = [{**shown(d), "triage": t} for d, t in zip(page.items, page.triage, strict=True)]
            total, next_cursor = page.total, page.next_cursor
        kept = [(k, v) for k, v in params if k != "cursor"]
        api = [(k, v) for k, v in kept if k not in ("range", "limit", "since", "until")]
        if range_ == "custom":
            api += [(k, v) for k, v in kept if k in ("since", "until")]
        else:
            api.append(("since", views.RANGES.get(range_, "24h")))
        # the counts by level and rule come from GET /api/v1/alerts/summary after the page is shown
        # (console.js): over a large store they take longer than the page itself
        return render(request, "queue.html", session, items=items, total=total,
                      summary_url="/api/v1/alerts/summary?" + urlencode(api),
                      next_url=("/?" + urlencode([*kept, ("cursor", next_cursor)])) if next_cursor else None,
                      first_url="/?" + urlencode(kept) if any(k == "cursor" for k, _ in params) else None,
                      form=dict(kept), range=range_, chosen_levels=set(query.levels),
                      chosen_statuses=set(query.statuses), ranges=[*views.RANGES, "custom"],
                      poll_url="/api/v1/alerts?" + urlencode([*api, ("limit", "1")]),
                      newest=items[0]["event"]["id"] if items else "")

    # -- one alert -------------------------------------------------------------------------
    @router.get("/alerts/{alert_id}", dependencies=PUBLIC)
    async def alert_page(request: Request, alert_id: str, session: Session = Depends(signed_in)) -> HTMLResponse:
        if alerts is None or triage is None:
            raise HTTPException(status_code=404, detail="no alert store")
        doc = await asyncio.to_thread(alerts.store.get, alert_id)
        state = await asyncio.to_thread(triage.state, alert_id) if doc is not None else None
        if doc is None or state is None:
            return render(request, "missing.html", session, 404, what="alert", ident=alert_id)
        doc = shown(doc)
        history = await asyncio.to_thread(triage.history, alert_id) or []
        rule_id = doc.get("rule", {}).get("id", "")
        rule = next((r for r in all_rules() if r.id == rule_id), None)
        yaml = await asyncio.to_thread(rule_yaml, rule, ctx.settings.rules.resolved_paths()) if rule else None
        ps = doc.get("pipesentry", {})
        rows, raw = views.event_rows(doc.get("event", {}).get("original", ""), ps.get("matched", []))
        related = await asyncio.to_thread(alerts.store.query, AlertQuery(rule=rule_id, limit=20))
        group = views.group_key(ps.get("details"))
        same_group: list[dict[str, Any]] = []
        if group:  # a correlation's group-by values or an anomaly check's key: the same rule, the same group
            recent = await asyncio.to_thread(alerts.store.query, AlertQuery(rule=rule_id, limit=GROUP_SCAN))
            same_group = [d for d in recent.items if d.get("event", {}).get("id") != alert_id
                          and views.group_key(d.get("pipesentry", {}).get("details")) == group][:20]
        by_entity: list[tuple[str, str, list[dict[str, Any]]]] = []
        for kind, value in indexing.entities(doc, indexing.original_event(doc))[:4]:
            query = AlertQuery(host=value, limit=10) if kind == "host" else AlertQuery(user=value, limit=10)
            page = await asyncio.to_thread(alerts.store.query, query)
            others = [d for d in page.items if d.get("event", {}).get("id") != alert_id]
            by_entity.append((kind, value, others))
        details = ps.get("details") or {}
        contributing = await asyncio.to_thread(contributors, views.contributing_events(details))
        return render(request, "alert.html", session, doc=doc, triage=state, history=history, rule=rule, yaml=yaml,
                      rows=rows, raw=raw, attack=views.attack_links(doc.get("tags", [])),
                      related=[d for d in related.items if d.get("event", {}).get("id") != alert_id],
                      by_entity=by_entity, group=group, same_group=same_group,
                      contributing=contributing, details=details,
                      references=[(r, views.safe_url(r)) for r in doc.get("rule", {}).get("reference", [])],
                      silence_rule=rule_id, silence_level=ps.get("level", ""))

    def contributors(events: list[Any]) -> list[dict[str, Any]]:
        """A correlation's contributing events with their rule's title, and the alert each raised if stored
        (a base rule with ``generate: true`` alerts on its own; its alert id comes from the same parts)."""
        titles = {r.id: r.title for r in all_rules()}
        rows = []
        for event in events:
            if not isinstance(event, dict):
                rows.append({"raw": event})
                continue
            rule_id, ref = str(event.get("rule", "")), str(event.get("ref", ""))
            own = alert_id(rule_id, ref) if rule_id and ref else None
            stored = own is not None and alerts is not None and alerts.store.get(own) is not None
            rows.append({"rule_id": rule_id, "title": titles.get(rule_id, rule_id), "ts": event.get("ts"),
                         "ref": ref, "alert_id": own if stored else None, "raw": event})
        return rows

    # -- rules ---------------------------------------------------------------------------------
    @router.get("/rules", dependencies=PUBLIC)
    async def rules_page(request: Request, session: Session = Depends(signed_in),
                         q: str = Query("", max_length=200)) -> HTMLResponse:
        rules = all_rules()
        if q:
            needle = q.lower()
            rules = [r for r in rules if needle in r.title.lower() or needle in r.id.lower()]
        stats = await asyncio.to_thread(ctx.alert_stats) if ctx.alert_stats is not None else {}
        current = ctx.detector.current
        return render(request, "rules.html", session, rules=rules[:2000], total=len(rules), q=q,
                      stats={k: v.as_dict() for k, v in stats.items()}, generation=current.generation,
                      errors=[{"source": getattr(e, "source", ""), "reason": getattr(e, "reason", str(e))}
                              for e in list(current.errors)[:200]])

    @router.get("/rules/{rule_id}", dependencies=PUBLIC)
    async def rule_page(request: Request, rule_id: str, session: Session = Depends(signed_in)) -> HTMLResponse:
        rule = next((r for r in all_rules() if r.id == rule_id or r.name == rule_id), None)
        if rule is None:
            return render(request, "missing.html", session, 404, what="rule", ident=rule_id)
        yaml = await asyncio.to_thread(rule_yaml, rule, ctx.settings.rules.resolved_paths())
        stats = await asyncio.to_thread(ctx.alert_stats) if ctx.alert_stats is not None else {}
        found = stats.get(rule.id)
        return render(request, "rule.html", session, rule=rule, yaml=yaml, stats=found.as_dict() if found else None,
                      attack=views.attack_links(rule.tags),
                      references=[(r, views.safe_url(r)) for r in rule.references])

    # -- coverage -------------------------------------------------------------------------------
    @router.get("/coverage", dependencies=PUBLIC)
    async def coverage_page(request: Request, session: Session = Depends(signed_in)) -> HTMLResponse:
        rules = all_rules()
        return render(request, "coverage.html", session, cov=views.coverage(rules), rules=len(rules),
                      stages=views.stages(rules))

    @router.get("/coverage/navigator-layer.json", dependencies=PUBLIC)
    async def navigator(session: Session = Depends(signed_in)) -> JSONResponse:
        layer = views.navigator_layer(views.coverage(all_rules()))
        return JSONResponse(layer, headers={"Content-Disposition": 'attachment; filename="pipesentry-layer.json"'})

    # -- silences -------------------------------------------------------------------------------
    @router.get("/silences", dependencies=PUBLIC)
    async def silences_page(request: Request, session: Session = Depends(signed_in),
                            rule: str = Query("", max_length=1000), level: str = Query("", max_length=16),
                            expired: bool = False) -> HTMLResponse:
        items = []
        if alerts is not None:
            now = alerts.clock()
            items = [s.to_dict(now) for s in alerts.silences.list(now, include_expired=expired)]
        return render(request, "silences.html", session, items=items, rule=rule,
                      level=level if level in LEVELS else "", expired=expired)

    # -- audit ----------------------------------------------------------------------------------
    @router.get("/audit", dependencies=PUBLIC)
    async def audit_page(request: Request, session: Session = Depends(signed_in),
                         actor: str = Query("", max_length=128),
                         action: str = Query("", max_length=64)) -> HTMLResponse:
        if not allows(session.principal.role, Role.ADMIN):
            return render(request, "missing.html", session, 403, what="page for admins", ident="/audit")
        entries: list[dict[str, Any]] = []
        if trail.queryable:
            await trail.flush()
            entries = await asyncio.to_thread(trail.query, AuditQuery(actor=actor or None, action=action or None,
                                                                      limit=500))
        return render(request, "audit.html", session, entries=entries, actor=actor, action=action,
                      queryable=trail.queryable)

    # -- packaged files and /docs ----------------------------------------------------------------
    @router.get("/console/static/{path:path}", dependencies=PUBLIC)
    async def static_file(request: Request, path: str) -> Response:
        response = await static.get_response(path, request.scope)
        response.headers["Cache-Control"] = "no-cache"
        return response

    @router.get("/console/swagger/{path:path}", dependencies=PUBLIC)
    async def swagger_file(request: Request, path: str) -> Response:
        if swagger_files is None or path not in ("swagger-ui-bundle.js", "swagger-ui.css"):
            raise HTTPException(status_code=404, detail="not found")
        return await swagger_files.get_response(path, request.scope)

    if ctx.settings.api.docs:
        @router.get("/docs", dependencies=PUBLIC)
        async def docs(request: Request) -> HTMLResponse:
            return render(request, "docs.html", None, swagger=swagger is not None)

    return router


def redirect_to_sign_in(request: Request, exc: Exception) -> Response:
    """The handler of :class:`SignInRequired`: to the sign-in page, back to the page afterwards."""
    target = exc.next_path if isinstance(exc, SignInRequired) else "/"
    return RedirectResponse("/sign-in?" + urlencode({"next": views.local_path(target)}), status_code=303)


__all__ = ["SignInRequired", "console_router", "redirect_to_sign_in"]
