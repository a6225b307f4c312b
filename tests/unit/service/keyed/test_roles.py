"""``state.keyed_role``: which stages of ``state.scope: keyed`` an instance runs; stage 2's own
consumer gauges and readiness."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from pydantic import ValidationError

from service import metrics
from service.app import KEYED_TASK, Service
from service.config import EventSettings, KafkaSettings, Settings
from service.detection import Detector, compile_detection
from service.sources.kafka import KafkaSource
from tests.conftest import PROJECT_RULES
from tests.support.kafka import FakeConsumer, FakeDeadLetters
from tests.support.routers import FakeRouter
from tests.support.waits import until

RULES = [PROJECT_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
         PROJECT_RULES / "correlations" / "ssh_brute_force.yml"]


def settings(tmp_path: Path, **state: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", rules={"paths": [str(p) for p in RULES], "watch": False},
                    api={"enabled": False}, stdin={"enabled": False}, alerting={"sinks": [{"type": "store"}]},
                    kafka={"bootstrap_servers": ["127.0.0.1:9"], "group_id": "g", "topics": {"auth": {}}},
                    state={"scope": "keyed", "keyed_topic": "internal", **state})


def test_the_role_defaults_to_both_and_makes_sense_only_in_keyed_scope() -> None:
    assert Settings(state={"scope": "keyed"}).state.keyed_role == "both"
    assert Settings(state={"scope": "keyed", "keyed_role": "stage2"}).state.keyed_role == "stage2"
    for scope in ("partition", "instance"):
        with pytest.raises(ValidationError, match=f"keyed_role 'stage1' splits .* with scope '{scope}'"):
            Settings(state={"scope": scope, "keyed_role": "stage1"})
    assert Settings(state={"scope": "partition", "keyed_role": "both"}).state.scope == "partition"
    with pytest.raises(ValidationError, match="keyed_role"):
        Settings(state={"scope": "keyed", "keyed_role": "stage3"})


async def test_a_stage2_instance_needs_no_input_topics(tmp_path: Path) -> None:
    kafka = {"bootstrap_servers": ["127.0.0.1:9"], "group_id": "g"}
    with pytest.raises(ValidationError, match="set at least one of topics"):
        Settings(kafka=kafka, state={"scope": "keyed", "keyed_role": "stage1"})
    assert Settings(kafka=kafka, state={"scope": "keyed", "keyed_role": "stage2"}).state.keyed_topic == "g-keyed-state"
    base = settings(tmp_path, keyed_role="stage2")
    assert base.kafka is not None
    svc = Service(base.model_copy(update={"kafka": base.kafka.model_copy(update={"topics": {}})}))
    await svc.build()
    assert svc.kafka is None and svc.keyed is not None and list(svc.keyed.source.settings.topics) == ["internal"]


@pytest.mark.parametrize(("role", "input_consumer", "stage2"), [
    ("both", True, True), ("stage1", True, False), ("stage2", False, True)])
async def test_a_role_builds_only_its_consumers(tmp_path: Path, role: str, input_consumer: bool, stage2: bool) -> None:
    svc = Service(settings(tmp_path, keyed_role=role))
    await svc.build()
    keyed = svc.keyed
    assert keyed is not None and keyed.role == role and (keyed.stage1, keyed.stage2) == (input_consumer, stage2)
    assert (svc.kafka is not None) == input_consumer
    if svc.kafka is not None:
        assert svc.kafka.state_records is keyed.producer  # stage 1 feeds the internal topic
    assert list(keyed.source.settings.topics) == ["internal"] and keyed.source.consumer_label == "keyed"
    checks = svc.readiness()
    assert ("kafka_partitions_assigned" in checks) == input_consumer
    assert ("keyed_stage2_connected" in checks) == stage2
    assert ("keyed_partitions_assigned" in checks) == (role == "stage2")  # a stage-2-only instance must own some


async def test_readiness_follows_stage_two_s_task_and_consumer(tmp_path: Path) -> None:
    """Not ready until stage 2 runs and is connected; not ready again while its task is down."""
    svc = Service(settings(tmp_path, keyed_role="stage2"))
    await svc.build()
    keyed = svc.keyed
    assert keyed is not None
    assert svc.readiness()["keyed_stage2_connected"] is False  # not started
    release, crash = asyncio.Event(), {"on": False}

    async def stage2() -> None:
        await release.wait()
        if crash["on"]:
            raise RuntimeError("stage 2 consumer failed")

    svc.supervisor.initial_backoff_s = svc.supervisor.max_backoff_s = 60.0  # it stays down once crashed
    task = svc.supervisor.spawn(KEYED_TASK, stage2)
    try:
        await until(lambda: (s := svc.supervisor.state(KEYED_TASK)) is not None and s.running, 5, "the task runs")
        assert svc.readiness()["keyed_stage2_connected"] is False  # running, not connected yet
        keyed.source.connected = True
        keyed.source.assigned = {TopicPartition("internal", 0)}
        checks = svc.readiness()
        assert checks["keyed_stage2_connected"] and checks["keyed_partitions_assigned"]
        keyed.source.assigned = set()
        assert svc.readiness()["keyed_partitions_assigned"] is False
        keyed.source.assigned = {TopicPartition("internal", 0)}
        crash["on"] = True
        release.set()
        await until(lambda: KEYED_TASK in svc.supervisor.down(), 5, "stage 2 down")
        checks = svc.readiness()
        assert checks["keyed_stage2_connected"] is False and checks["background_tasks_running"] is False
    finally:
        svc.supervisor.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _gauge(name: str, consumer: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, {"consumer": consumer})


async def test_the_two_consumers_have_their_own_partition_gauges(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text((RULES[0]).read_text())
    outcome = compile_detection([tmp_path / "r.yml"], [], skip_invalid=False)
    assert outcome.detection is not None
    kafka = KafkaSettings(bootstrap_servers=["unused:1"], topics={"auth": {}}, max_in_flight_batches=1)

    def source(consumer: str) -> KafkaSource:
        return KafkaSource(kafka, EventSettings(), Detector(outcome.detection), FakeRouter(),
                           dead_letters=FakeDeadLetters(), consumer_factory=lambda **_: FakeConsumer({}),
                           consumer=consumer)

    stage1, stage2 = source("input"), source("keyed")
    assert (stage1.name, stage2.name) == ("kafka", "kafka-keyed")  # pipesentry_events_total{source}: records apart
    source("never-run")
    assert _gauge("pipesentry_kafka_partitions_assigned", "never-run") is None  # a source that never runs exports none
    stage1._set_assigned({TopicPartition("auth", p) for p in range(4)})
    stage2._set_assigned({TopicPartition("internal", 0)})
    assert _gauge("pipesentry_kafka_partitions_assigned", "input") == 4
    assert _gauge("pipesentry_kafka_partitions_assigned", "keyed") == 1
    consumer = FakeConsumer({TopicPartition("internal", 0): []})
    consumer.assigned = {TopicPartition("internal", 0)}
    input_paused = _gauge("pipesentry_kafka_paused_partitions", "input")  # other tests' sources may have set it
    stage2._in_flight = {object(), object(), object()}  # type: ignore[arg-type]  # more than the router may hold
    stage2._backpressure(consumer)  # type: ignore[arg-type]
    assert _gauge("pipesentry_kafka_paused_partitions", "keyed") == 1
    assert _gauge("pipesentry_kafka_paused_partitions", "input") == input_paused  # stage 1 untouched
    stage2._in_flight = set()
    stage2._backpressure(consumer)  # type: ignore[arg-type]
    assert _gauge("pipesentry_kafka_paused_partitions", "keyed") == 0
