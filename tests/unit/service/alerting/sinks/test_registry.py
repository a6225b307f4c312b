"""Sinks and receivers come from registries; each registered one is documented and tested.

Adding a sink is one module under ``service/alerting/sinks/`` (settings model,
implementation, builder, ``register_sink``), a row in docs/alerting.md and a test
that configures it: this file fails until all three exist.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from pydantic import SecretStr, ValidationError

from service.alerting.config import AlertingSettings, SpoolSettings
from service.alerting.sinks import RECEIVERS, SINKS, RawSink, SinkContext, register_sink
from service.alerting.sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkSettings
from service.alerting.sinks.registry import Registry
from service.alerting.sinks.settings import ReceiverSettings, RetrySettings, SinkSettings
from service.alerting.sinks.stdout import StdoutSink
from service.alerting.store import AlertStore
from service.alerting.worker import SinkWorker
from tests.conftest import ROOT
from tests.support.alerts import ListSink

ALERTING_DOC = (ROOT / "docs" / "alerting.md").read_text()
TEST_TEXT = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.name != Path(__file__).name)
ENTRIES = [("sink", n) for n in SINKS.names()] + [("receiver", n) for n in RECEIVERS.names()]


def _minimal(settings: type[SinkSettings]) -> SinkSettings:
    """The model with placeholder values for its required fields."""
    values: dict[str, Any] = {}
    for field, info in settings.model_fields.items():
        if info.is_required():
            values[field] = "s" if "SecretStr" in str(info.annotation) else "http://127.0.0.1:9/x"
    return settings.model_validate(values)


def test_builtins_are_registered() -> None:
    assert SINKS.names() == ["elasticsearch", "kafka", "null", "stdout", "store"]
    assert RECEIVERS.names() == ["alertmanager", "opsgenie", "pagerduty", "slack", "webhook"]


@pytest.mark.parametrize(("role", "name"), ENTRIES, ids=[f"{r}:{n}" for r, n in ENTRIES])
def test_every_registered_sink_has_settings_builder_docs_and_a_test(role: str, name: str, tmp_path: Path) -> None:
    registry = SINKS if role == "sink" else RECEIVERS
    entry = registry.get(name)
    assert entry.settings.__name__.endswith("Settings")
    assert issubclass(entry.settings, ReceiverSettings if role == "receiver" else SinkSettings)
    assert entry.settings.model_fields["type"].default == name
    settings = _minimal(entry.settings)
    sink = registry.build(settings, SinkContext(store=AlertStore(tmp_path / "alerts.db")))
    assert sink.name == settings.name == name
    assert type(sink).__name__.endswith("Receiver" if role == "receiver" else "Sink")
    assert sink.kind == ("page" if role == "receiver" else "record")
    assert all(callable(getattr(sink, m)) for m in ("start", "stop", "deliver"))
    assert not (tmp_path / "alerts.db").exists()  # building does no I/O
    assert f"| `{name}` |" in ALERTING_DOC, f"docs/alerting.md has no row for {role} {name!r}"
    configured = re.compile(rf"""["']type["']\s*:\s*["']{name}["']|type:\s*{name}\b""")
    assert configured.search(TEST_TEXT), f"no test configures {role} {name!r}"


def test_config_accepts_exactly_the_registered_types() -> None:
    s = AlertingSettings.model_validate({"sinks": [{"type": "elasticsearch", "hosts": ["http://es:9200"]}],
                                         "receivers": [{"type": "slack", "webhook_url": "https://h"}]})
    assert isinstance(s.sinks[0], ElasticsearchSinkSettings) and s.sinks[0].name == "elasticsearch"
    assert isinstance(s.receivers[0].webhook_url, SecretStr)  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match=r"'elasticsearch'.*'stdout'"):
        AlertingSettings.model_validate({"sinks": [{"type": "kinesis"}]})
    with pytest.raises(ValidationError, match=r"receivers\.0\.slack\.webhook_url"):
        AlertingSettings.model_validate({"receivers": [{"type": "slack"}]})
    assert [type(x).__name__ for x in AlertingSettings().sinks] == ["StdoutSinkSettings", "StoreSinkSettings"]
    dumped = AlertingSettings.model_validate(s.model_dump(mode="json"))  # a dump reads back as the same models
    assert type(dumped.sinks[0]) is ElasticsearchSinkSettings


def test_registration_is_checked() -> None:
    registry = Registry("sink", SinkSettings)

    class Mismatch(SinkSettings):
        type: str = "other"

    with pytest.raises(ValueError, match="defaults to 'other'"):
        registry.register("mine", Mismatch, lambda s, c: ListSink())
    with pytest.raises(TypeError, match="register_receiver"):
        register_sink("mine", ReceiverSettings, lambda s, c: ListSink())
    with pytest.raises(ValueError, match="already registered"):
        register_sink("stdout", SINKS.get("stdout").settings, SINKS.get("stdout").build)
    with pytest.raises(KeyError, match="known: elasticsearch, kafka, null, stdout, store"):
        SINKS.get("kinesis")


def test_a_sink_registered_too_late_is_refused_loudly() -> None:
    """The config model is built from the registry at import; a later name could never be configured."""

    class LateSinkSettings(SinkSettings):
        type: Literal["late"] = "late"

    with pytest.raises(RuntimeError, match="after the alerting config model was built"):
        register_sink("late", LateSinkSettings, lambda s, c: ListSink())
    assert "late" not in SINKS.names()


def test_raw_fast_path_is_a_declared_protocol() -> None:
    assert isinstance(ElasticsearchSink(ElasticsearchSinkSettings()), RawSink)
    assert not isinstance(StdoutSink(), RawSink)
    assert not isinstance(EncodesOnly(), RawSink)


class EncodesOnly(ListSink):
    """Has an ``encode`` helper but no ``deliver_raw``: not a raw sink."""

    def encode(self, doc: dict[str, Any]) -> bytes:
        return b"<" + orjson.dumps(doc) + b">"


async def test_a_sink_with_encode_but_no_raw_delivery_gets_json(tmp_path: Path) -> None:
    """Probing ``getattr(sink, "encode")`` spooled this sink's encoding and then failed to decode it as
    JSON, dropping every record as corrupt; only a declared :class:`RawSink` spools its own bytes."""
    sink = EncodesOnly()
    worker = SinkWorker(sink, durable=True, batch_size=10, retry=RetrySettings(), spool_dir=tmp_path / "spool",
                        spool=SpoolSettings(), dead_letter=tmp_path / "dead.jsonl")
    await worker.start()
    docs = [{"n": i} for i in range(3)]
    worker.append([orjson.dumps(d) for d in docs], docs)
    await asyncio.wait_for(worker.wait_idle(), 10)
    await worker.stop()
    assert sink.got == docs
