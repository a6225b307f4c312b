"""``state.scope: keyed`` against a real broker: a brute force spread over the input partitions,
which ``partition`` scope never sees whole, fires once in keyed scope, with the id
``pipesentry eval`` gives over the merged stream (docs/scaling.md, issue 18)."""

from __future__ import annotations

import asyncio
import math
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.cli import main
from tests.support.instances import InProcess, kafka_settings, unique_topic
from tests.support.waits import until

pytestmark = pytest.mark.integration

SIGMA_RULES = Path(__file__).resolve().parents[2] / "sigma-rules"
RULES = [SIGMA_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
         SIGMA_RULES / "correlations" / "ssh_brute_force.yml"]
AUTH = {"product": "linux", "service": "auth"}
INPUTS = 4


def brute_force() -> list[dict[str, Any]]:
    """The rule pack's brute force case: twelve failed logins on one host within two minutes."""
    case = orjson.loads((SIGMA_RULES / "correlations" / "ssh_brute_force.events.json").read_bytes())["match"][0]
    return [step["event"] for step in case]


async def produce_spread(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    """Round robin over the input partitions: none holds the ten events the threshold needs."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, orjson.dumps(event), partition=i % INPUTS)
                   for i, event in enumerate(events)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def settings_for(tmp_path: Path, name: str, bootstrap: str, topic: str, group: str, **state: Any) -> Any:
    base = kafka_settings(tmp_path, bootstrap, {topic: {"logsource": AUTH}}, group_id=group)
    return base.model_copy(update={
        "data_dir": tmp_path / name,
        "rules": base.rules.model_copy(update={"paths": RULES}),
        "state": base.state.model_copy(update=state)})


def correlation_ids(*running: InProcess) -> list[str]:
    return [a.id for r in running for a in r.router.alerts if a.rule.kind == "correlation"]


async def reference_ids(tmp_path: Path, events: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> set[str]:
    """``pipesentry eval`` over the merged stream (in time order, as it was produced)."""
    path = tmp_path / "merged.ndjson"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    capsys.readouterr()
    argv = ["eval", *(a for rule in RULES for a in ("--rules", str(rule))), "--logsource",
            "product=linux,service=auth", str(path)]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    return {r["alert_id"] for r in map(orjson.loads, out.splitlines()) if r["rule_kind"] == "correlation"}


def read_all(running: InProcess, count: int) -> bool:
    kafka = running.service.kafka
    return kafka is not None and sum(kafka._processed.values()) >= count


def split(*running: InProcess) -> bool:
    """Each instance owns half the input partitions and one internal partition."""
    for r in running:
        kafka, keyed = r.service.kafka, r.service.keyed
        if kafka is None or keyed is None or len(kafka.assigned) != INPUTS // 2 or len(keyed.source.assigned) != 1:
            return False
    return True


def released_past(running: list[InProcess], ts: float) -> bool:
    """Every internal partition's watermark (on its owner) has passed ``ts``: all records applied."""
    owned = 0
    for r in running:
        keyed = r.service.keyed
        assert keyed is not None
        for tp in keyed.source.assigned:
            mark = keyed.detector.watermark((tp.topic, tp.partition))
            if mark is None or mark < ts:
                return False
            owned += 1
    return owned == 2


async def test_a_brute_force_spread_over_partitions_fires_once_in_keyed_scope(kafka_server, tmp_path, capsys):
    events = brute_force()
    topic = unique_topic("auth")
    kafka_server.create_topic(topic, INPUTS)
    await produce_spread(kafka_server.bootstrap, topic, events)
    expected = await reference_ids(tmp_path, events, capsys)
    assert len(expected) == 1, expected

    # baseline: partition scope never sees ten events of one host
    baseline = settings_for(tmp_path, "partition", kafka_server.bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}")
    async with InProcess(baseline) as alone:
        await until(lambda: read_all(alone, len(events)), 60, "every event read in partition scope")
    assert correlation_ids(alone) == []

    # keyed scope: two instances in one group, the internal topic created by them (2 partitions);
    # the same events on a topic of their own, produced once both instances hold their partitions
    topic = unique_topic("auth-keyed")
    kafka_server.create_topic(topic, INPUTS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    internal = unique_topic("keyed-state")
    keyed = {"scope": "keyed", "keyed_topic": internal, "keyed_partitions": 2, "keyed_watermark_interval_s": 0.2}
    first = InProcess(settings_for(tmp_path, "a", kafka_server.bootstrap, topic, group, **keyed))
    second = InProcess(settings_for(tmp_path, "b", kafka_server.bootstrap, topic, group, **keyed))
    async with first, second:
        await until(lambda: split(first, second), 90, "input and internal partitions split 2 + 2 and 1 + 1")
        await produce_spread(kafka_server.bootstrap, topic, events)
        await until(lambda: bool(correlation_ids(first, second)), 90, "the keyed correlation alert")
        last = max(_ts(e) for e in events)
        await until(lambda: released_past([first, second], last + 10), 60, "every record released")
        assert read_all(first, len(events) // 2) and read_all(second, len(events) // 2)  # each read its half
    assert correlation_ids(first, second) == sorted(expected)
    fired = next(a for r in (first, second) for a in r.router.alerts if a.rule.kind == "correlation")
    assert fired.details["contributor_count"] >= 10
    refs = {c["ref"].rsplit(":", 2)[1] for c in fired.details["contributors"]}
    assert refs == {str(p) for p in range(INPUTS)}  # its evidence spans every input partition


def _ts(event: dict[str, Any]) -> float:
    from datetime import datetime

    value = datetime.fromisoformat(event["timestamp"]).timestamp()
    assert math.isfinite(value)
    return value
