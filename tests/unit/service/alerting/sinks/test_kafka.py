"""The Kafka alert sink over an in-memory producer: settings, the idempotent producer's options,
records keyed by alert id, which failures dead-letter and which keep the batch spooled, and the
router's redaction and spool around it. The real broker: tests/integration/test_sinks_kafka.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAuthorizationFailedError,
)
from pydantic import ValidationError

from detectors.redaction import MARKER_START
from service import metrics
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from service.alerting.sinks import SINKS, SinkError
from service.alerting.sinks.kafka import KafkaSink, KafkaSinkSettings, split
from service.alerting.sinks.registry import Registration
from service.redaction import Redaction, RedactionSettings
from tests.support.alerts import alert
from tests.support.kafka import ProducerFactory
from tests.support.waits import until

AWS_ID = "AKIAQX3T7FJ2LMNOPQRS"


def sink(factory: ProducerFactory, **settings: Any) -> KafkaSink:
    return KafkaSink(KafkaSinkSettings.model_validate({"topic": "alerts", **settings}), producer_factory=factory)


def doc(n: int) -> dict[str, Any]:
    return {"event": {"id": f"id-{n}"}, "n": n}


def test_settings_defaults_and_checks() -> None:
    s = AlertingSettings.model_validate({"sinks": [{"type": "kafka"}]}).sinks[0]
    assert isinstance(s, KafkaSinkSettings)
    assert (s.name, s.topic, s.bootstrap_servers, s.durable, s.compression) == (
        "kafka", "pipesentry-alerts", ["localhost:9092"], True, "none")
    with pytest.raises(ValidationError, match="topic"):
        KafkaSinkSettings(topic="bad topic")
    with pytest.raises(ValidationError, match="sasl_username and sasl_password"):
        KafkaSinkSettings.model_validate({"security": {"protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}})
    from aiokafka import codec

    if not codec.has_zstd():
        with pytest.raises(ValidationError, match="zstandard package"):
            KafkaSinkSettings(compression="zstd")


def test_the_producer_is_idempotent_acks_all_and_carries_the_inputs_security_settings() -> None:
    s = sink(ProducerFactory(), bootstrap_servers=["k1:9093", "k2:9093"], compression="gzip",
             max_message_bytes=2_000_000, request_timeout_s=5,
             security={"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                       "sasl_username": "alerts", "sasl_password": "s3cret-pw"})
    kwargs = s.producer_kwargs()
    assert kwargs["acks"] == "all" and kwargs["enable_idempotence"] is True
    assert kwargs["bootstrap_servers"] == ["k1:9093", "k2:9093"] and kwargs["compression_type"] == "gzip"
    assert (kwargs["max_request_size"], kwargs["request_timeout_ms"]) == (2_000_000, 5000)
    assert (kwargs["security_protocol"], kwargs["sasl_mechanism"], kwargs["sasl_plain_username"],
            kwargs["sasl_plain_password"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512", "alerts", "s3cret-pw")
    assert "s3cret-pw" not in repr(s.settings) and "s3cret-pw" not in str(s.settings.model_dump())


def test_a_tls_file_that_is_no_certificate_fails_the_start_naming_the_sink(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    s = sink(ProducerFactory(), name="fanout", security={"protocol": "SSL", "ssl_cafile": str(bad)})
    with pytest.raises(ValueError, match="fanout: the TLS files"):
        s.producer_kwargs()


async def test_records_are_keyed_by_alert_id_and_carry_the_document() -> None:
    factory = ProducerFactory()
    s = sink(factory)
    await s.start()
    payloads = [s.encode(doc(n)) for n in range(3)]
    assert split(payloads[1]) == (b"id-1", orjson.dumps(doc(1)))
    outcome = await s.deliver_raw(payloads)
    assert (outcome.done, outcome.rejected, outcome.error) == (3, [], None)
    assert factory.current.sent == [("alerts", orjson.dumps(doc(n)), f"id-{n}".encode()) for n in range(3)]
    await s.stop()
    assert factory.current.stopped == 1


async def test_a_broker_down_at_start_is_no_start_failure_and_delivery_waits_for_it(caplog) -> None:
    factory = ProducerFactory()
    factory.down = True
    s = sink(factory)
    with caplog.at_level(logging.WARNING):
        await s.start()  # the worker starts; alerts spool
    assert "cannot reach the brokers" in caplog.text
    outcome = await s.deliver([doc(1)])
    assert outcome.done == 0 and isinstance(outcome.error, SinkError) and outcome.error.retriable
    assert all(p.stopped == 1 for p in factory.built)  # a producer that did not start is closed
    factory.down = False
    outcome = await s.deliver([doc(1)])
    assert outcome.done == 1 and outcome.error is None


async def test_a_retriable_failure_stops_the_batch_there_and_a_too_large_alert_is_dead_lettered() -> None:
    factory = ProducerFactory()
    s = sink(factory)
    await s.start()
    factory.current.failures = [None, MessageSizeTooLargeError("too big"), None, NotEnoughReplicasError(), None]
    outcome = await s.deliver([doc(n) for n in range(5)])
    assert outcome.done == 3 and isinstance(outcome.error, SinkError) and "NotEnoughReplicas" in str(outcome.error)
    assert [(r["n"], "MessageSizeTooLarge" in reason) for r, reason in outcome.rejected] == [(1, True)]
    # an alert larger than max_message_bytes is refused before it is sent
    big = {"event": {"id": "big"}, "blob": "x" * 3000}
    small = sink(ProducerFactory(), max_message_bytes=1024)
    await small.start()
    outcome = await small.deliver([big, doc(1)])
    assert outcome.done == 2 and outcome.error is None and outcome.rejected[0][0] == big
    assert "max_message_bytes" in outcome.rejected[0][1]


@pytest.mark.parametrize("error", [TopicAuthorizationFailedError(), KafkaTimeoutError()])
async def test_a_refused_acl_or_a_timeout_keeps_every_record_for_a_retry(error: Exception) -> None:
    factory = ProducerFactory()
    s = sink(factory)
    await s.start()
    factory.current.failures = [error]
    outcome = await s.deliver([doc(0), doc(1)])
    assert outcome.done == 0 and outcome.rejected == [] and outcome.error is not None and outcome.error.retriable


async def test_unanswered_acknowledgements_fail_the_batch_after_the_request_timeout() -> None:
    factory = ProducerFactory()
    s = sink(factory, request_timeout_s=0.01)
    s.ack_margin_s = 0.02  # the sink waits request_timeout_s plus this margin
    await s.start()
    factory.current.hold = True
    outcome = await s.deliver([doc(0), doc(1)])
    assert outcome.done == 0 and "not acknowledged within 0.03 s" in str(outcome.error)


async def test_a_retry_waits_for_records_still_on_their_way_instead_of_sending_them_again() -> None:
    """The idempotent producer retries a batch until the brokers answer: a delivery retried meanwhile
    (the worker's backoff) must not queue a second copy of every record per attempt."""
    factory = ProducerFactory()
    s = sink(factory, request_timeout_s=0.01)
    s.ack_margin_s = 0.01
    await s.start()
    producer = factory.current
    producer.hold = True
    batch = [s.encode(doc(n)) for n in range(3)]
    for _ in range(3):  # three attempts during the outage
        outcome = await s.deliver_raw(batch)
        assert outcome.done == 0 and "not acknowledged" in str(outcome.error)
    assert len(producer.held) == 3  # each record queued once
    producer.release()
    outcome = await s.deliver_raw([*batch, s.encode(doc(3))])
    assert (outcome.done, outcome.error) == (4, None)
    assert [key for _, _, key in producer.sent] == [b"id-0", b"id-1", b"id-2", b"id-3"]  # no copy
    # a record whose earlier attempt failed is sent again
    producer.failures = [NotEnoughReplicasError()]
    assert (await s.deliver_raw([s.encode(doc(4))])).done == 0
    assert (await s.deliver_raw([s.encode(doc(4))])).done == 1
    assert producer.sent[-1][2] == b"id-4"


@pytest.mark.parametrize("error", [OutOfOrderSequenceNumber(), ProducerFenced()])
async def test_a_producer_that_can_never_send_again_is_replaced_for_the_next_delivery(error: Exception) -> None:
    factory = ProducerFactory()
    s = sink(factory)
    await s.start()
    first = factory.current
    first.failures = [None, error]
    replaced = metrics.KAFKA_PRODUCER_REPLACEMENTS.labels(f"sink:{s.name}")
    before = replaced._value.get()
    outcome = await s.deliver([doc(0), doc(1), doc(2)])
    assert outcome.done == 1 and outcome.error is not None and outcome.error.retriable
    assert first.stopped == 1  # dropped at once: its producer id (or its sender) is gone
    assert replaced._value.get() - before == 1
    outcome = await s.deliver([doc(1), doc(2)])
    assert (outcome.done, outcome.error) == (2, None)
    assert len(factory.built) == 2 and [key for _, _, key in factory.current.sent] == [b"id-1", b"id-2"]


async def test_a_producer_whose_sender_stopped_is_replaced_before_records_wait_on_it() -> None:
    """aiokafka's sender task ends on a fatal error; records queued after it would never be sent."""
    factory = ProducerFactory()
    s = sink(factory)
    await s.start()
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ended.set_result(None)
    factory.current._sender = SimpleNamespace(sender_task=ended)  # type: ignore[attr-defined]
    outcome = await s.deliver([doc(0)])
    assert (outcome.done, outcome.error, len(factory.built)) == (1, None, 2)
    assert factory.built[0].stopped == 1 and factory.current.sent[0][2] == b"id-0"


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProducerFactory]:
    """The ``kafka`` sink type built over an in-memory producer, for routers built in the test."""
    factory = ProducerFactory()
    entry = SINKS.get("kafka")
    monkeypatch.setitem(SINKS._entries, "kafka", Registration(
        "kafka", entry.settings, lambda settings, context: KafkaSink(settings, producer_factory=factory)))
    yield factory


async def test_the_router_sends_redacted_documents_and_spools_while_the_broker_is_down(
        tmp_path: Path, fake_kafka: ProducerFactory) -> None:
    settings = AlertingSettings.model_validate({"sinks": [
        {"type": "kafka", "name": "fanout", "topic": "alerts", "retry": {"initial_backoff_s": 0.01,
                                                                       "max_backoff_s": 0.05}}]})
    router = AlertRouter(settings, tmp_path, redaction=Redaction(RedactionSettings(key="k" * 20), tmp_path))
    fake_kafka.down = True
    await router.start()
    try:
        first = [alert(n, event={"cmd": f"echo {AWS_ID}", "n": n}) for n in range(3)]
        await router.submit(first)  # accepted (spooled) although the broker is down
        worker = router.workers["fanout"]
        await until(lambda: worker.last_error is not None, 10, "a failed delivery attempt")
        assert worker.spool is not None and worker.spool.pending == 3
        failures = metrics.REGISTRY.get_sample_value("pipesentry_sink_failures_total", {"sink": "fanout"})
        assert failures and failures >= 1
        fake_kafka.down = False
        await router.wait_idle(10)
    finally:
        await router.stop()
    sent = [p for producer in fake_kafka.built for p in producer.sent]
    assert [key for _, _, key in sent] == [a.id.encode() for a in first]
    for (topic, value, key), a in zip(sent, first, strict=True):
        document = orjson.loads(value)
        assert topic == "alerts" and document["event"]["id"] == a.id == key.decode()
        assert AWS_ID not in value.decode() and MARKER_START in value.decode()


async def test_the_sasl_password_appears_in_no_log_line_or_error(caplog) -> None:
    """Connection failures, failed deliveries and the settings' own text never carry the password."""
    password = "pw-9f3c2e1d-never-shown"
    factory = ProducerFactory()
    factory.down = True
    s = sink(factory, security={"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                "sasl_username": "alerts", "sasl_password": password})
    with caplog.at_level(logging.DEBUG):
        await s.start()
        outcome = await s.deliver([doc(1)])
        factory.down = False
        await s.deliver([doc(2)])
        factory.current.failures = [TopicAuthorizationFailedError()]
        refused = await s.deliver([doc(3)])
        await s.stop()
    assert factory.built[0].kwargs["sasl_plain_password"] == password  # it reaches the client, only there
    texts = [caplog.text, str(outcome.error), str(refused.error), repr(s.settings), str(s.settings.model_dump())]
    assert all(password not in text for text in texts)
    with pytest.raises(ValidationError) as info:
        KafkaSinkSettings.model_validate({"security": {"protocol": "SASL_SSL", "sasl_password": password}})
    assert password not in str(info.value)
