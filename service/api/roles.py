"""Roles, and the role each endpoint declares next to its route.

A route declares who may call it with ``dependencies=[requires(Role.X)]``. The
dependency carries the role; :class:`RoleTable` finds it for every route the app
serves, so :mod:`service.api.auth` checks it before the body is read, the
OpenAPI document shows it (``x-pipesentry-role``), and ``create_app`` refuses an
app holding a route that declares none: a new endpoint cannot be served by
accident to every token.

``GRANTS`` says what each token role may call: ``ingest`` posts events only;
``read`` reads rules, alerts, silences and metrics; ``analyst`` is read plus
silences; ``admin`` is everything (ingest included). ``public`` endpoints
(health, readiness, public metrics) need no token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import routing as fastapi_routing
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, compile_path

from service.errors import ServiceError


class Role(StrEnum):
    PUBLIC = "public"
    INGEST = "ingest"
    READ = "read"
    ANALYST = "analyst"
    ADMIN = "admin"


TOKEN_ROLES: tuple[Role, ...] = (Role.INGEST, Role.READ, Role.ANALYST, Role.ADMIN)
"""The roles a token may carry (``public`` is an endpoint's, never a caller's)."""

GRANTS: dict[str, frozenset[Role]] = {
    Role.INGEST: frozenset({Role.PUBLIC, Role.INGEST}),
    Role.READ: frozenset({Role.PUBLIC, Role.READ}),
    Role.ANALYST: frozenset({Role.PUBLIC, Role.READ, Role.ANALYST}),
    Role.ADMIN: frozenset(Role),
}

ROLE_EXTENSION = "x-pipesentry-role"
"""The OpenAPI operation field holding the role an endpoint requires."""


class UndeclaredRole(ServiceError):
    """A route of the app declares no role (or several): the app is not built."""


def allows(caller_role: str, needed: Role) -> bool:
    """May a caller with ``caller_role`` call an endpoint that requires ``needed``?"""
    return needed in GRANTS.get(caller_role, frozenset({Role.PUBLIC}))


class RoleCheck:
    """The dependency a route declares its role with; it checks again after the ASGI step.

    The authentication middleware (:class:`service.api.auth.Authenticate`) admits or
    refuses the request before any body is read; this check only guards against an app
    served without it (then nobody stored a principal, and the request is refused).
    """

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(self, request: Request) -> None:  # async: no worker-thread hop per request
        if self.role is Role.PUBLIC:
            return
        from service.api.principal import Principal  # late: principal imports nothing from here

        principal = request.scope.get("state", {}).get("principal")
        if not isinstance(principal, Principal):
            raise HTTPException(status_code=401, detail="missing or invalid bearer token")
        if not allows(principal.role, self.role):
            raise HTTPException(status_code=403, detail=f"this endpoint needs the {self.role} role")


def requires(role: Role) -> Any:
    """``dependencies=[requires(Role.READ)]`` on a route: the role it needs, declared beside it."""
    return Depends(RoleCheck(role))


def route_role(route: BaseRoute) -> Role | None:
    """The role an API route declares (None: none, or several); ``PUBLIC`` for the framework's own
    pages (``/docs``, ``/openapi.json``)."""
    if not isinstance(route, APIRoute):
        return Role.PUBLIC
    roles = {d.call.role for d in route.dependant.dependencies if isinstance(d.call, RoleCheck)}
    return roles.pop() if len(roles) == 1 else None


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    """The path template, as in the OpenAPI document (``/api/v1/alerts/{alert_id}``)."""
    methods: frozenset[str]
    regex: re.Pattern[str]
    role: Role | None


def _served_routes(app: FastAPI) -> list[tuple[str, frozenset[str], BaseRoute]]:
    """(path, methods, route the app serves) of every route, those of included routers too."""
    contexts = getattr(fastapi_routing, "iter_route_contexts", None)  # FastAPI >= 0.130 nests routers
    found = []
    for item in contexts(app.routes) if contexts is not None else app.routes:
        original = getattr(item, "original_route", item)
        path, methods = getattr(item, "path", None), getattr(item, "methods", None)
        if path is not None and methods is not None:
            found.append((path, frozenset(methods), original))
    return found


class RoleTable:
    """The role of every route the app serves, found before routing (for the ASGI auth step)
    and for the OpenAPI document. Rebuilt when the app's routes change, so a router included
    after the app was built is covered too."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._key: tuple[int, ...] = ()
        self._entries: list[Entry] = []

    def entries(self) -> list[Entry]:
        key = tuple(id(r) for r in self._app.routes)
        if key != self._key:
            self._entries = [Entry(path, methods | ({"HEAD"} if "GET" in methods else set()),
                                   compile_path(path)[0], route_role(route))
                             for path, methods, route in _served_routes(self._app)]
            self._key = key
        return self._entries

    def lookup(self, method: str, path: str) -> Entry | None:
        """The entry serving ``method`` on ``path``, if any."""
        for entry in self.entries():
            if method in entry.methods and entry.regex.match(path):
                return entry
        return None

    def role_of(self, method: str, path_template: str) -> Role | None:
        for entry in self.entries():
            if entry.path == path_template and method.upper() in entry.methods:
                return entry.role
        return None

    def check(self) -> None:
        """Raise :class:`UndeclaredRole` naming the first route that declares no role (or several)."""
        for entry in self.entries():
            if entry.role is None:
                raise UndeclaredRole(f"route {','.join(sorted(entry.methods))} {entry.path} declares no role "
                                     "(or several): add dependencies=[requires(Role....)] to it")
