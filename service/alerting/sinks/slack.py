"""Slack incoming-webhook receiver: one readable Block Kit message per new group.

Slack messages cannot be resolved or updated through an incoming webhook, so
updates and resolves are not sent. Block Kit limits honoured: header text <=
150 chars, section text <= 3000, section fields <= 10 of <= 2000 chars, button
text <= 75, button url <= 3000.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SecretStr

from .http import HttpReceiver, Request, truncate
from .registry import SinkContext, register_receiver
from .settings import ReceiverSettings


class SlackReceiverSettings(ReceiverSettings):
    type: Literal["slack"] = "slack"
    webhook_url: SecretStr


EMOJI = {"critical": ":red_circle:", "high": ":large_orange_circle:", "medium": ":large_yellow_circle:",
         "low": ":large_blue_circle:", "informational": ":white_circle:"}


def _mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackReceiver(HttpReceiver):
    supports_resolve = False

    def __init__(self, name: str, webhook_url: str, timeout_s: float) -> None:
        super().__init__(name, timeout_s)
        self.url = webhook_url

    def render(self, page: dict[str, Any]) -> Request | None:
        if page["action"] != "trigger":
            return None
        rule = page["rule"]
        fields = [
            f"*Level*\n{page['level']}",
            f"*Rule author*\n{_mrkdwn_escape(rule['author'])}",
            f"*Source*\n{_mrkdwn_escape(page['source'].get('token', ''))}",
            f"*First seen*\n{page['first']}",
        ]
        if page["techniques"]:
            fields.append("*ATT&CK*\n" + ", ".join(page["techniques"]))
        for m in page["matched"][: 10 - len(fields)]:
            fields.append(f"*{_mrkdwn_escape(m['field'] or 'keyword')}*\n`{_mrkdwn_escape(m['value'])}`")
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                        "text": truncate(f"{page['level'].upper()}: {rule['name']}", 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(
                f"{EMOJI.get(page['level'], '')} {_mrkdwn_escape(rule['description'] or rule['name'])}", 3000)}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": truncate(f, 2000)} for f in fields[:10]]},
            {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open alert"},
                                              "url": page["url"][:3000]}]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(
                f"pipesentry · rule `{rule['id']}` · alert `{page['alert_id']}`", 3000)}]},
        ]
        body = {"text": truncate(f"[{page['level']}] {rule['name']} — {page['url']}", 3000), "blocks": blocks}
        return Request("POST", self.url, body, {})


def build(settings: SlackReceiverSettings, context: SinkContext) -> SlackReceiver:
    return SlackReceiver(settings.name, settings.webhook_url.get_secret_value(), settings.timeout_s)


register_receiver("slack", SlackReceiverSettings, build)
