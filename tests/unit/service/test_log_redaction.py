"""No credential reaches a log line: HTTP client loggers stay quiet, and whatever is logged anyway
(a library at DEBUG, an exception quoting a URL, an extra field) is masked by ``service.logs``."""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from service import logs
from service.cli.run_cmd import _load
from service.config import Settings
from tests.support.secrets import SECRETS, SLACK_SECRET, leaks, secret_forms, settings_with_secrets


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The service's log configuration at DEBUG, writing to a buffer; undone afterwards."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    level = root.level
    libraries = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "aiokafka")}
    logs.configure_logging("DEBUG")
    try:
        yield stream
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_pipesentry", False)]:
            root.removeHandler(handler)
        root.setLevel(level)
        for name, lib_level in libraries.items():
            logging.getLogger(name).setLevel(lib_level)
        logs.REDACTOR.clear()


def slack_delivery() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="ok"))
    with httpx.Client(transport=transport) as client:
        client.post(f"https://hooks.slack.com/services/T000/B000/{SLACK_SECRET}", json={"text": "hi"})


def test_slack_webhook_url_is_not_logged_by_httpx(captured: io.StringIO) -> None:
    slack_delivery()
    assert SLACK_SECRET not in captured.getvalue()


def test_http_client_lines_are_masked_even_at_debug(captured: io.StringIO) -> None:
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    slack_delivery()
    out = captured.getvalue()
    assert "hooks.slack.com/services/***" in out, "the defence in depth, not silence, kept it out"
    assert SLACK_SECRET not in out


def test_configured_secrets_are_masked_in_messages_extras_and_tracebacks(captured: io.StringIO) -> None:
    logs.register_settings_secrets(Settings.model_validate(settings_with_secrets()))
    log = logging.getLogger("pipesentry.test")
    for secret in SECRETS.values():
        for form in secret_forms(secret):
            log.info("sending with %s", form, extra={"error": f"refused {form}", "details": {"k": [form]}})
            try:
                raise ConnectionError(f"cannot reach http://127.0.0.1:9/?q={form}")
            except ConnectionError:
                log.exception("delivery failed")
            log.warning("repr %r", {"key": form})
    out = captured.getvalue()
    assert out.count("\n") == 3 * sum(len(secret_forms(s)) for s in SECRETS.values())
    assert leaks(out) == []


def test_a_record_with_an_unprintable_extra_is_still_written(captured: io.StringIO) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError(SECRETS["sasl"])

    logging.getLogger("pipesentry.test").warning("still here", extra={"thing": Unprintable()})
    out = captured.getvalue()
    assert "still here" in out and "<unprintable Unprintable: RuntimeError>" in out
    assert leaks(out) == []


@pytest.mark.parametrize("line", [
    "POST http://elastic:pa55word-x@127.0.0.1:9200/_bulk failed",
    "headers: {'Authorization': 'Bearer pa55word-x'}",
    "Authorization: ApiKey pa55word-x",
    'got {"authorization": "GenieKey pa55word-x"}',
    "GET https://example.test/hook?token=pa55word-x&x=1",
    "sasl_password=pa55word-x",
    "https://discord.com/api/webhooks/1/pa55word-x",
])
def test_unregistered_credentials_are_masked_by_shape(line: str) -> None:
    assert "pa55word-x" not in logs.redact(line)


def test_ordinary_text_is_left_alone() -> None:
    line = "rule 7a5c0f3e matched user=alice at https://ci.example.com/job/42 (tokens: 3, basic checks ok)"
    assert logs.redact(line) == line


def test_short_secrets_are_not_registered() -> None:
    logs.register_secrets("abc")
    try:
        assert logs.redact("abc def") == "abc def"
    finally:
        logs.REDACTOR.clear()


def test_loading_settings_registers_their_secrets_for_every_reload(tmp_path: Path) -> None:
    """``pipesentry run`` loads the config file at start and again on each reload: each load's
    secrets are masked from then on (a receiver added by a reload brings its own)."""
    args = argparse.Namespace(host=None, port=None, no_stdin=True, rules=None, data_dir=None)
    path = tmp_path / "pipesentry.yml"
    path.write_text(yaml.safe_dump({"alerting": {"receivers": [
        {"type": "pagerduty", "name": "pd", "routing_key": SECRETS["pagerduty"]}]}}))
    try:
        _load(path, args)
        assert SECRETS["pagerduty"] not in logs.redact(f"key {SECRETS['pagerduty']}")
        assert SECRETS["opsgenie"] in logs.redact(f"key {SECRETS['opsgenie']}")
        path.write_text(yaml.safe_dump({"alerting": {"receivers": [
            {"type": "opsgenie", "name": "og", "api_key": SECRETS["opsgenie"]}]}}))
        _load(path, args)
        assert SECRETS["opsgenie"] not in logs.redact(f"key {SECRETS['opsgenie']}")
    finally:
        logs.REDACTOR.clear()


_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x2FF)


@given(secret=st.text(_PRINTABLE, min_size=logs.MIN_SECRET_LENGTH, max_size=40),
       before=st.text(_PRINTABLE, max_size=30), after=st.text(_PRINTABLE, max_size=30),
       form=st.sampled_from(["raw", "quote", "quote_plus", "b64", "json", "json_ascii"]))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_a_registered_secret_never_survives_in_any_form(secret: str, before: str, after: str, form: str) -> None:
    shown = {"raw": secret, "quote": quote(secret, safe=""), "quote_plus": quote_plus(secret),
             "b64": base64.b64encode(secret.encode()).decode(),
             "json": json.dumps(secret, ensure_ascii=False)[1:-1], "json_ascii": json.dumps(secret)[1:-1]}[form]
    redactor = logs.Redactor()
    redactor.add(secret)
    out = redactor(before + shown + after)
    assert shown not in out and secret not in out
