"""Redaction in the service: after detection, per-sink opt-out, the key, private files, dead letters, logs."""

from __future__ import annotations

import io
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from detectors.alert import build_alert
from detectors.model import LogSource, Origin
from detectors.redaction import Redactor
from service import logs, metrics
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from service.alerting.sinks.stdout import StdoutSink
from service.api.auth import guard
from service.config import ApiSettings, Settings
from service.redaction import KEY_FILE, Redaction, RedactionError, RedactionSettings, load_key
from service.rules import load_rules
from service.sources.base import RawMessage, Rejected
from service.sources.deadletter import FileDeadLetters
from tests.conftest import PROJECT_RULES
from tests.support.alerts import alert, rule

AWS_ID = "AKIAQX3T7FJ2LMNOPQRS"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq3kLm9tZe"
KEY = "0123456789abcdef-test-key"


def redaction_count(kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("pipesentry_redactions_total", {"kind": kind}) or 0.0


@pytest.fixture
def umask_open() -> Iterator[None]:
    """A permissive umask (0): files would be created world-readable unless the code sets modes."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _capture(router: AlertRouter, name: str) -> io.BytesIO:
    sink = router.workers[name].sink
    assert isinstance(sink, StdoutSink)
    out = io.BytesIO()
    sink._stream = out
    return out


async def test_a_secret_rule_fires_on_the_raw_value_and_its_alert_leaves_redacted(tmp_path: Path) -> None:
    rs = load_rules([PROJECT_RULES / "ci" / "ci_log_aws_secret_access_key.yml"], skip_invalid=False).ruleset
    event = {"message": f"+ export AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "db_password": "hunter2hunter2"}
    matches = rs.evaluate(event)
    assert matches, "detection sees the raw value"
    alerts = [build_alert(m, event, Origin(input="http", offset=1), event_time=1.0e9, now=1.0e9,
                          logsource=LogSource(category="ci_job_log")) for m in matches]
    settings = AlertingSettings.model_validate({"sinks": [{"type": "stdout", "full": True}, {"type": "store"}]})
    redaction = Redaction(RedactionSettings(key=KEY), tmp_path)
    router = AlertRouter(settings, tmp_path, redaction=redaction)
    before = redaction_count("aws-secret-key")
    await router.start()
    try:
        out = _capture(router, "stdout")
        await router.submit(alerts)
        await router.wait_idle(10)
        stored = router.store.get(alerts[0].id)
    finally:
        await router.stop()
    marker = Redactor(KEY.encode()).marker("aws-secret-key", AWS_SECRET)
    for text in (out.getvalue().decode(), orjson.dumps(stored).decode()):
        assert AWS_SECRET not in text and "hunter2hunter2" not in text
        assert marker in text
    assert redaction_count("aws-secret-key") > before


async def test_a_sink_may_opt_out_but_the_store_never(tmp_path: Path) -> None:
    settings = AlertingSettings.model_validate({"sinks": [
        {"type": "stdout", "name": "trusted", "full": True, "redact": False, "durable": True},
        {"type": "stdout", "name": "plain", "full": True}, {"type": "store"}]})
    router = AlertRouter(settings, tmp_path, redaction=Redaction(RedactionSettings(key=KEY), tmp_path))
    await router.start()
    try:
        trusted, plain = _capture(router, "trusted"), _capture(router, "plain")
        a = alert(1, event={"cmd": f"echo {AWS_ID}"})
        await router.submit([a])
        await router.wait_idle(10)
        stored = orjson.dumps(router.store.get(a.id)).decode()
    finally:
        await router.stop()
    assert AWS_ID in trusted.getvalue().decode()
    assert AWS_ID not in plain.getvalue().decode() and AWS_ID not in stored
    with pytest.raises(ValidationError, match="cannot opt out"):
        AlertingSettings.model_validate({"sinks": [{"type": "store", "redact": False}]})


async def test_pages_are_redacted_per_receiver(tmp_path: Path) -> None:
    settings = AlertingSettings.model_validate({
        "sinks": [{"type": "null"}],
        "receivers": [{"type": "webhook", "name": "safe", "url": "http://127.0.0.1:9/x", "secret": "s" * 16},
                      {"type": "webhook", "name": "trusted", "url": "http://127.0.0.1:9/y", "secret": "s" * 16,
                       "redact": False}],
        "routes": [{"receivers": ["safe", "trusted"]}], "grouping": {"group_by": ["db_password"]}})
    router = AlertRouter(settings, tmp_path, redaction=Redaction(RedactionSettings(key=KEY), tmp_path))
    event = {"cmd": f"aws s3 ls {AWS_ID}", "db_password": "p4ssw0rd-xyz"}
    decision = router.decide([alert(1, r=rule("r", "high"), event=event)])
    safe, trusted = (orjson.dumps(decision.pages[n]).decode() for n in ("safe", "trusted"))
    assert AWS_ID not in safe and "p4ssw0rd-xyz" not in safe
    assert AWS_ID in trusted  # the matched value, raw for the trusted receiver
    assert "p4ssw0rd-xyz" not in orjson.dumps(router.grouper.snapshot()).decode()  # groups are keyed redacted


async def test_a_batch_is_redacted_as_its_documents_one_by_one(tmp_path: Path) -> None:
    """``decide`` redacts a batch at once (one count per kind): each document is, byte for byte, what
    redacting that alert's document alone gives, in the batch's order, and the metric counts every secret."""
    settings = AlertingSettings.model_validate({"sinks": [{"type": "null"}, {"type": "stdout", "name": "raw",
                                                                              "redact": False}]})
    redaction = Redaction(RedactionSettings(key=KEY), tmp_path)
    redaction.start()
    router = AlertRouter(settings, tmp_path, redaction=redaction)
    router.workers = router._build_workers()
    router._index_workers()
    events = [{"cmd": f"echo {AWS_ID}"}, {"cmd": "ls /etc/passwd"}, {"cmd": f"x {AWS_ID} y", "db_password": "p4ss-1"},
              {"cmd": "plain"}]
    alerts = [alert(i, event=e) for i, e in enumerate(events)]
    before = redaction_count("aws-secret-key"), redaction_count("aws-access-key-id")
    decision = router.decide(alerts)
    after = redaction_count("aws-secret-key"), redaction_count("aws-access-key-id")
    alone = Redactor(KEY.encode())
    assert [orjson.dumps(d) for d in decision.documents] == [orjson.dumps(alone.document(a.to_document()))
                                                             for a in alerts]
    assert decision.raw_documents is not None
    assert [orjson.dumps(d) for d in decision.raw_documents] == [orjson.dumps(a.to_document()) for a in alerts]
    counts: dict[str, int] = {}
    for a in alerts:
        alone.document(a.to_document(), counts)
    assert after[1] - before[1] == counts["aws-access-key-id"] and after[0] == before[0]


async def test_redaction_disabled_sends_raw_values(tmp_path: Path) -> None:
    settings = AlertingSettings.model_validate({"sinks": [{"type": "null"}]})
    router = AlertRouter(settings, tmp_path, redaction=Redaction(RedactionSettings(enabled=False, key=KEY), tmp_path))
    docs = router.decide([alert(1, event={"cmd": f"x {AWS_ID}"})]).documents
    assert AWS_ID in orjson.dumps(docs).decode()


def test_the_key_is_generated_once_private_and_reused(tmp_path: Path, umask_open: None) -> None:
    data = tmp_path / "data"
    first = load_key(RedactionSettings(), data)
    assert load_key(RedactionSettings(), data) == first and len(first) >= 32
    assert stat.S_IMODE((data / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert load_key(RedactionSettings(key=KEY), data) == KEY.encode()
    key_file = tmp_path / "mounted"
    key_file.write_text(KEY + "\n")
    assert load_key(RedactionSettings(key_file=key_file), data) == KEY.encode()
    key_file.write_text("short")
    with pytest.raises(RedactionError, match="at least"):
        load_key(RedactionSettings(key_file=key_file), data)
    with pytest.raises(ValidationError):
        RedactionSettings(key="short")
    assert Settings(redaction={"key": KEY}).redaction.key is not None  # type: ignore[arg-type]


async def test_files_are_private_whatever_the_umask(tmp_path: Path, umask_open: None) -> None:
    settings = AlertingSettings.model_validate({
        "sinks": [{"type": "store"}],
        "receivers": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/x", "secret": "s" * 16,
                       "retry": {"initial_backoff_s": 30}}],
        "routes": [{"receivers": ["hook"]}]})
    router = AlertRouter(settings, tmp_path / "data", redaction=Redaction(RedactionSettings(), tmp_path / "data"))
    await router.start()
    try:
        await router.submit([alert(i) for i in range(3)])
    finally:
        await router.stop(drain_s=0)
    dead = FileDeadLetters(tmp_path / "data" / "dead" / "dead-letters.ndjson")
    await dead.send([Rejected(RawMessage(b"{bad", Origin(input="http"), 0.0), "json", "not json")])
    from service.state_store import StateStore

    StateStore(tmp_path / "data" / "state").save("local", "correlation", {"x": 1})
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"alerts.db", KEY_FILE, "dead-letters.ndjson", "groups.json"} <= names, names
    assert any(p.parent.name == "hook" and p.name != "cursor" for p in files), names  # a spool segment
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for directory in [p for p in (tmp_path / "data").rglob("*") if p.is_dir()] + [tmp_path / "data"]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


async def test_existing_loose_files_are_tightened(tmp_path: Path) -> None:
    root = tmp_path / "alerting"
    root.mkdir(mode=0o755)
    db = root / "alerts.db"
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    os.chmod(root, 0o755)
    router = AlertRouter(AlertingSettings.model_validate({"sinks": [{"type": "store"}]}), tmp_path,
                         redaction=Redaction(RedactionSettings(key=KEY), tmp_path))
    await router.start()
    await router.stop()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and stat.S_IMODE(root.stat().st_mode) == 0o700


async def test_dead_letters_of_rejected_events_are_redacted(tmp_path: Path) -> None:
    redaction = Redaction(RedactionSettings(key=KEY), tmp_path)
    dead = FileDeadLetters(tmp_path / "dl.ndjson", redaction=redaction)
    value = f'{{"message": "db_password=hunter2hunter2 {AWS_ID}'.encode() + b"\xff"
    await dead.send([Rejected(RawMessage(value, Origin(input="http"), 0.0), "json", f"bad json near {AWS_ID}")])
    record: dict[str, Any] = orjson.loads((tmp_path / "dl.ndjson").read_bytes())
    import base64

    kept = base64.b64decode(record["value_b64"])
    assert b"hunter2hunter2" not in kept and AWS_ID.encode() not in kept and kept.endswith(b"\xff")
    assert AWS_ID not in record["error"]


def test_log_lines_mark_unconfigured_secrets(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure_logging("INFO", stream=stream)
    try:
        redaction = Redaction(RedactionSettings(key=KEY), tmp_path)
        redaction.start()
        logging.getLogger("pipesentry.test").warning("event %s", f"token {AWS_ID} db_password=hunter2hunter2",
                                                     extra={"raw": {"k": AWS_ID}})
    finally:
        logs.use_format_redactor(Redactor(os.urandom(32)).text)
        logging.getLogger().handlers = [h for h in logging.getLogger().handlers
                                        if not getattr(h, "_pipesentry", False)]
    line = stream.getvalue()
    assert AWS_ID not in line and "hunter2hunter2" not in line
    assert Redactor(KEY.encode()).marker("aws-access-key-id", AWS_ID, "AKIA") in line


def test_the_api_serves_redacted_documents_even_from_a_store_written_without_redaction(tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from service.alerting.api import api_router

    router = AlertRouter(AlertingSettings.model_validate({"sinks": [{"type": "store"}]}), tmp_path,
                         redaction=Redaction(RedactionSettings(key=KEY), tmp_path))
    router.store.open()
    legacy = alert(1, event={"cmd": f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}"})
    router.store.upsert([legacy.to_document()])  # as an older version stored it
    app = FastAPI()
    app.include_router(api_router(router))
    guard(app, ApiSettings())  # no tokens: the anonymous admin
    client = TestClient(app, base_url="http://127.0.0.1")
    try:
        listed = client.get("/api/v1/alerts").text
        one = client.get(f"/api/v1/alerts/{legacy.id}").text
    finally:
        router.store.close()
    for text in (listed, one):
        assert AWS_SECRET not in text and "[REDACTED:aws-secret-key:" in text
