"""How a route declares its audited action: one dependency next to the route, and :func:`note`.

::

    @router.post("/reload", dependencies=[Depends(admin), Depends(audited("rules.reload"))])

The dependency only marks the request (``request.state.audit``); the API's audit
middleware (:mod:`service.api.audit`) writes the entry once the response status is
known. This module imports nothing of the API so any router can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request


@dataclass(slots=True)
class AuditMark:
    action: str
    obj: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def audited(action: str, *, obj_param: str | None = None) -> Callable[[Request], None]:
    """A dependency marking the request as the state-changing ``action`` on the path parameter ``obj_param``."""

    def mark(request: Request) -> None:
        obj = request.path_params.get(obj_param) if obj_param else None
        request.state.audit = AuditMark(action, None if obj is None else str(obj))

    return mark


def note(request: Request, *, obj: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
    """Add the object acted on, or a summary (counts, results: never a body), to the request's entry."""
    mark = getattr(request.state, "audit", None)
    if isinstance(mark, AuditMark):
        if obj is not None:
            mark.obj = obj
        mark.detail.update(detail or {})
