"""The Kafka alert sink against a real broker: alerts land on the topic keyed by their id, as the
(redacted) documents the other sinks get; the broker stopped mid-run and started again, every
alert accepted meanwhile arrives (docs/alerting.md, "Kafka")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.alert import Alert
from detectors.redaction import MARKER_START
from devservices.kafka import KafkaServer
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from service.redaction import Redaction, RedactionSettings
from tests.support.alerts import alert, rule
from tests.support.instances import unique_topic
from tests.support.waits import until

pytestmark = pytest.mark.integration
AWS_ID = "AKIAQX3T7FJ2LMNOPQRS"
T0 = 1_750_000_000.0


def router_for(tmp_path: Path, bootstrap: str, topic: str, **extra: Any) -> AlertRouter:
    sink = {"type": "kafka", "name": "fanout", "bootstrap_servers": [bootstrap], "topic": topic,
            "request_timeout_s": 3, "retry": {"initial_backoff_s": 0.1, "max_backoff_s": 1.0,
                                              "breaker_failures": 3, "breaker_reset_s": 1.0}, **extra}
    settings = AlertingSettings.model_validate({"sinks": [sink], "spool": {"fsync": "never"}})
    return AlertRouter(settings, tmp_path, redaction=Redaction(RedactionSettings(key="kafka-sink-test-key"), tmp_path))


def alerts(n: int, start: int = 0) -> list[Alert]:
    r = rule("kafka-sink-rule", "high")
    return [alert(start + i, r=r, ts=T0 + start + i, event={"cmd": f"echo {AWS_ID}", "n": start + i})
            for i in range(n)]


class TopicReader:
    """Reads ``topic`` from the beginning (no group) and keeps every ``(key, value, partition)``."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                         enable_auto_commit=False)
        self.records: list[tuple[bytes, bytes, int]] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def read(self) -> int:
        batches = await self.consumer.getmany(timeout_ms=500)
        for tp, records in batches.items():
            self.records += [(r.key, r.value, tp.partition) for r in records]
        return len(self.records)

    def keys(self) -> set[str]:
        return {key.decode() for key, _, _ in self.records}


async def test_alerts_land_on_the_topic_keyed_by_id_and_redacted(kafka_server, tmp_path):
    topic = unique_topic("alerts")
    kafka_server.create_topic(topic, 3)
    sent = alerts(40)
    router = router_for(tmp_path, kafka_server.bootstrap, topic, compression="gzip")
    await router.start()
    try:
        await router.submit(sent)
        await router.wait_idle(60)
    finally:
        await router.stop()
    async with TopicReader(kafka_server.bootstrap, topic) as reader:
        await until(lambda: _read_at_least(reader, len(sent)), 60, "every alert on the topic")
    assert len(reader.records) == len(sent)
    assert reader.keys() == {a.id for a in sent}
    partitions: dict[bytes, int] = {}
    for key, value, partition in reader.records:
        document = orjson.loads(value)
        assert document["event"]["id"] == key.decode()
        assert document["rule"]["id"] == "kafka-sink-rule"
        assert AWS_ID not in value.decode() and MARKER_START in value.decode()
        assert partitions.setdefault(key, partition) == partition
    assert len(set(partitions.values())) > 1  # keys spread over the topic's partitions


async def _read_at_least(reader: TopicReader, count: int) -> bool:
    return await reader.read() >= count


@pytest.mark.slow
async def test_no_alert_is_lost_while_the_broker_is_down(kafka_factory: Callable[[], KafkaServer], tmp_path):
    broker = kafka_factory()
    topic = unique_topic("alerts-outage")
    broker.create_topic(topic, 2)
    router = router_for(tmp_path, broker.bootstrap, topic)
    before, during = alerts(20), alerts(30, start=20)
    await router.start()
    try:
        await router.submit(before)
        await router.wait_idle(60)
        await asyncio.to_thread(broker.stop)
        await router.submit(during)  # accepted into the spool while no broker answers
        worker = router.workers["fanout"]
        await until(lambda: worker.last_error is not None, 60, "a delivery failing while the broker is down")
        assert worker.spool is not None and worker.spool.pending > 0
        await asyncio.to_thread(broker.restart)
        await router.wait_idle(180)
        assert worker.dead_lettered == 0
    finally:
        await router.stop()
    async with TopicReader(broker.bootstrap, topic) as reader:
        await until(lambda: _keys_at_least(reader, len(before) + len(during)), 60, "every alert on the topic")
    assert reader.keys() == {a.id for a in before + during}  # none lost; a duplicate shares its id
    print(f"records on the topic: {len(reader.records)} for {len(before) + len(during)} alerts")
    for key, value, _ in reader.records:
        assert orjson.loads(value)["event"]["id"] == key.decode()


async def _keys_at_least(reader: TopicReader, count: int) -> bool:
    await reader.read()
    return len(reader.keys()) >= count
