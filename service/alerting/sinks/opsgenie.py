"""Opsgenie Alert API receiver: create (``POST /v2/alerts``) and close by alias.

Updates re-send the create with the same alias, which Opsgenie de-duplicates into
the open alert (raising its count). Limits from the Alert API documentation:
message <= 130 chars, alias <= 512, description <= 15000, at most 20 tags of
<= 50 chars, source <= 100, details as string values.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr

from .http import HttpReceiver, Request, truncate
from .registry import SinkContext, register_receiver
from .settings import ReceiverSettings


class OpsgenieReceiverSettings(ReceiverSettings):
    type: Literal["opsgenie"] = "opsgenie"
    url: str = "https://api.opsgenie.com"
    api_key: SecretStr
    responders: list[dict[str, str]] = Field(default_factory=list)


PRIORITY = {"critical": "P1", "high": "P2", "medium": "P3", "low": "P4", "informational": "P5"}


class OpsgenieReceiver(HttpReceiver):
    def __init__(self, name: str, url: str, api_key: str, responders: list[dict[str, str]],
                 timeout_s: float) -> None:
        super().__init__(name, timeout_s)
        self.base = url.rstrip("/")
        self.headers = {"Authorization": f"GenieKey {api_key}"}
        self.responders = responders

    def render(self, page: dict[str, Any]) -> Request:
        alias = page["dedup_key"][:512]
        if page["action"] == "resolve":
            return Request("POST", f"{self.base}/v2/alerts/{quote(alias, safe='')}/close?identifierType=alias",
                           {"source": "pipesentry", "note": f"quiet since {page['last']} ({page['count']} alerts)"},
                           self.headers)
        rule = page["rule"]
        details = {"rule_id": rule["id"], "author": rule["author"], "level": page["level"],
                   "count": str(page["count"]), "first": page["first"], "last": page["last"],
                   "url": page["url"], "source": page["source"].get("token", "")}
        details.update({f"group.{k}": str(v) for k, v in page["group"].items()})
        body: dict[str, Any] = {
            "message": truncate(f"[{page['level']}] {rule['name']}", 130),
            "alias": alias,
            "description": truncate(
                f"{rule['description']}\n\nRule author: {rule['author']}\nMatched: "
                + ", ".join(f"{m['field']}={m['value']}" for m in page["matched"])
                + f"\n\n{page['url']}", 15000),
            "tags": [truncate(t, 50) for t in page["tags"]][:20],
            "details": details,
            "entity": truncate(page["source"].get("token", ""), 512),
            "source": "pipesentry",
            "priority": PRIORITY.get(page["level"], "P3"),
        }
        if self.responders:
            body["responders"] = self.responders
        return Request("POST", f"{self.base}/v2/alerts", body, self.headers)


def build(settings: OpsgenieReceiverSettings, context: SinkContext) -> OpsgenieReceiver:
    return OpsgenieReceiver(settings.name, settings.url, settings.api_key.get_secret_value(),
                            settings.responders, settings.timeout_s)


register_receiver("opsgenie", OpsgenieReceiverSettings, build)
