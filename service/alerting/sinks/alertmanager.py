"""Alertmanager API v2 receiver: ``POST /api/v2/alerts``.

A page becomes one alert whose label set identifies the group (Alertmanager
fingerprints alerts by labels), so updates refresh the same alert and a resolve
(``endsAt`` = now) ends it. Firing alerts carry an ``endsAt`` past the next
expected update, so Alertmanager does not time them out while the group lives.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from .http import HttpReceiver, Request
from .registry import SinkContext, register_receiver
from .settings import ReceiverSettings

_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


class AlertmanagerReceiverSettings(ReceiverSettings):
    type: Literal["alertmanager"] = "alertmanager"
    url: str = "http://localhost:9093"


def label_name(field: str) -> str:
    name = _LABEL_NAME.sub("_", field)
    return name if name and not name[0].isdigit() else f"_{name}"


class AlertmanagerReceiver(HttpReceiver):
    def __init__(self, name: str, url: str, timeout_s: float) -> None:
        super().__init__(name, timeout_s)
        self.url = url.rstrip("/") + "/api/v2/alerts"

    def render(self, page: dict[str, Any]) -> Request:
        labels = {
            "alertname": page["rule"]["name"] or page["rule"]["id"],
            "rule_id": page["rule"]["id"],
            "severity": page["level"],
            "pipesentry_group": page["dedup_key"],
        }
        for field, value in page.get("group", {}).items():
            labels.setdefault(label_name(field), str(value))
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {
                "summary": page["summary"],
                "description": page["rule"]["description"],
                "author": page["rule"]["author"],
                "count": str(page["count"]),
                "first": page["first"],
                "last": page["last"],
                "alert_url": page["url"],
            },
            "startsAt": page["first"],
            "generatorURL": page["url"],
        }
        alert["endsAt"] = page["at"] if page["action"] == "resolve" else page["ends_hint"]
        return Request("POST", self.url, [alert], {})


def build(settings: AlertmanagerReceiverSettings, context: SinkContext) -> AlertmanagerReceiver:
    return AlertmanagerReceiver(settings.name, settings.url, settings.timeout_s)


register_receiver("alertmanager", AlertmanagerReceiverSettings, build)
