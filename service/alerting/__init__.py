"""Everything after a detection fires: routing, suppression, grouping, spooling, sinks.

Entry points: :class:`~service.alerting.router.AlertRouter` and
:class:`~service.alerting.config.AlertingSettings`; the HTTP API in
:func:`service.alerting.api.api_router`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import AlertingSettings
    from .router import AlertRouter, RouterError

__all__ = ["AlertRouter", "AlertingSettings", "RouterError"]


def __getattr__(name: str) -> Any:
    """The entry points, imported on first use: reading the settings (``service.config`` imports
    ``service.alerting.config``) must not import the router, its store and its sinks' clients."""
    if name == "AlertingSettings":
        from .config import AlertingSettings

        return AlertingSettings
    if name in ("AlertRouter", "RouterError"):
        from . import router

        return getattr(router, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
