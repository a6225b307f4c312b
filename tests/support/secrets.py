"""A recognisable secret in every secret-bearing setting, and the forms in which one could leak.

Shared by the redaction unit tests and the integration test that runs ``pipesentry run`` with them.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote, quote_plus

SLACK_SECRET = "XoxbSlackPathSecret0001"
SECRETS = {
    "slack": SLACK_SECRET,
    "pagerduty": "pdRoutingKey0002aaaaaaaaaaaaaaa",
    "opsgenie": "opsgenie-key-0003-bbbb",
    "webhook_hmac": "hmac&secret/0004 with spaces+",
    "webhook_bearer": "bearerToken0005cccc",
    "es_api_key": "ZXNBcGlLZXkwMDA2ZGRkZA==",
    "es_password": "esPassw0rd-0007:colon",
    "am_password": "amPassw0rd0008",
    "sasl": "kafkaSaslPassw0rd0009",
    "api_admin": "adminApiToken0010eeeeeeee",
    "api_read": "readApiToken0011ffffffff",
    "es_url_password": "esUrlPassw0rd0012",
}


USERS = {"es_password": "elastic", "am_password": "alertmgr", "sasl": "svc", "es_url_password": "writer"}
"""The user names configured with a password: ``user:password`` travels base64-encoded (HTTP Basic)."""


def secret_forms(secret: str) -> set[str]:
    """The ways a library may print a secret: raw, URL-encoded, base64 (also of ``user:secret``)."""
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote_plus(secret), base64.b64encode(raw).decode(),
             base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    for name, user in USERS.items():
        if SECRETS[name] == secret:
            forms.add(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return forms


def settings_with_secrets(urls: dict[str, str] | None = None) -> dict[str, Any]:
    """A settings document with a recognisable secret in every secret-bearing field."""
    u = {"slack": "https://hooks.slack.com", "pagerduty": "http://127.0.0.1:9/v2/enqueue",
         "opsgenie": "http://127.0.0.1:9", "webhook": "http://127.0.0.1:9/hook", "es": "http://127.0.0.1:9",
         "alertmanager": "http://127.0.0.1:9", **(urls or {})}
    s = SECRETS
    am = u["alertmanager"].replace("://", f"://alertmgr:{s['am_password']}@", 1)
    return {
        "api": {"tokens": [{"name": "ops", "role": "admin", "token": s["api_admin"]},
                           {"name": "dash", "role": "read", "token": s["api_read"]}]},
        "kafka": {"bootstrap_servers": ["127.0.0.1:9"], "topics": {"t": {}},
                  "security": {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                               "sasl_username": "svc", "sasl_password": s["sasl"]}},
        "alerting": {
            "sinks": [{"type": "elasticsearch", "name": "es-key", "hosts": [u["es"]], "api_key": s["es_api_key"],
                       "install_template": False},
                      {"type": "elasticsearch", "name": "es-basic", "hosts": [u["es"]], "username": "elastic",
                       "password": s["es_password"], "install_template": False},
                      {"type": "elasticsearch", "name": "es-url", "install_template": False,
                       "hosts": [u["es"].replace("://", f"://writer:{s['es_url_password']}@", 1)]}],
            "receivers": [
                {"type": "slack", "name": "slack", "webhook_url": f"{u['slack']}/services/T000/B000/{SLACK_SECRET}"},
                {"type": "pagerduty", "name": "pd", "url": u["pagerduty"], "routing_key": s["pagerduty"]},
                {"type": "opsgenie", "name": "og", "url": u["opsgenie"], "api_key": s["opsgenie"]},
                {"type": "webhook", "name": "hook", "url": u["webhook"], "secret": s["webhook_hmac"],
                 "headers": {"Authorization": f"Bearer {s['webhook_bearer']}"}},
                {"type": "alertmanager", "name": "am", "url": am},
            ],
            "routes": [{"receivers": ["slack", "pd", "og", "hook", "am"]}],
        },
    }


def leaks(text: str) -> list[str]:
    return sorted(f"{name}: {form!r}" for name, secret in SECRETS.items() for form in secret_forms(secret)
                  if form in text)
