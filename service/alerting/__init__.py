"""Everything after a detection fires: routing, suppression, grouping, spooling, sinks.

Entry points: :class:`~service.alerting.router.AlertRouter` and
:class:`~service.alerting.config.AlertingSettings`; the HTTP API in
:func:`service.alerting.api.api_router`.
"""

from .config import AlertingSettings
from .router import AlertRouter, RouterError

__all__ = ["AlertRouter", "AlertingSettings", "RouterError"]
