"""PagerDuty Events API v2 receiver (``POST /v2/enqueue``).

Trigger and update send ``event_action: trigger`` with the group's dedup key
(PagerDuty folds them into one alert); a quiet group sends ``resolve``. Limits
from the Events API v2 documentation: summary <= 1024 chars, dedup_key <= 255.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SecretStr

from .http import HttpReceiver, Request, truncate
from .registry import SinkContext, register_receiver
from .settings import ReceiverSettings


class PagerDutyReceiverSettings(ReceiverSettings):
    type: Literal["pagerduty"] = "pagerduty"
    url: str = "https://events.pagerduty.com/v2/enqueue"
    routing_key: SecretStr


SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info", "informational": "info"}


class PagerDutyReceiver(HttpReceiver):
    def __init__(self, name: str, url: str, routing_key: str, timeout_s: float) -> None:
        super().__init__(name, timeout_s)
        self.url = url
        self.routing_key = routing_key

    def render(self, page: dict[str, Any]) -> Request:
        dedup_key = page["dedup_key"][:255]
        if page["action"] == "resolve":
            body: dict[str, Any] = {"routing_key": self.routing_key, "event_action": "resolve",
                                    "dedup_key": dedup_key}
            return Request("POST", self.url, body, {})
        rule = page["rule"]
        body = {
            "routing_key": self.routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": truncate(f"{page['summary']} x{page['count']}" if page["count"] > 1 else page["summary"],
                                    1024),
                "source": truncate(page["source"].get("token") or "pipesentry", 255),
                "severity": SEVERITY.get(page["level"], "info"),
                "timestamp": page["last"],
                "component": truncate(rule["id"], 255),
                "group": truncate(page["source"].get("product") or page["source"].get("input") or "pipesentry", 255),
                "class": rule["kind"],
                "custom_details": {
                    "rule": rule["name"], "rule_id": rule["id"], "author": rule["author"],
                    "level": page["level"], "count": page["count"], "first": page["first"], "last": page["last"],
                    "tags": page["tags"], "techniques": page["techniques"], "matched": page["matched"],
                    "group": page["group"],
                },
            },
            "links": [{"href": page["url"], "text": "Alert in pipesentry"}],
            "client": "pipesentry",
            "client_url": page["url"],
        }
        return Request("POST", self.url, body, {})


def build(settings: PagerDutyReceiverSettings, context: SinkContext) -> PagerDutyReceiver:
    return PagerDutyReceiver(settings.name, settings.url, settings.routing_key.get_secret_value(),
                             settings.timeout_s)


register_receiver("pagerduty", PagerDutyReceiverSettings, build)
