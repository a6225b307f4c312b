"""Anomaly checks in ``state.scope: keyed`` against a real broker: two instances, failed logins
spread over four input partitions, and the anomaly alerts (a per-host threshold and a per-source
cardinality, whose keys land on different internal partitions) are those ``pipesentry eval``
raises over the merged stream, with the same ids (docs/scaling.md, issue 18)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from service import metrics
from service.cli import main
from tests.support.instances import InProcess, kafka_settings, unique_topic
from tests.support.keyed import FAILED_LOGINS_CHECK, checks_yaml
from tests.support.waits import until

pytestmark = pytest.mark.integration

SIGMA_RULES = Path(__file__).resolve().parents[2] / "sigma-rules"
RULES = [SIGMA_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
         SIGMA_RULES / "correlations" / "ssh_brute_force.yml"]
AUTH = {"product": "linux", "service": "auth"}
INPUTS = 4
T0 = 1_764_113_000.0
CHECKS = checks_yaml(FAILED_LOGINS_CHECK, """\
  - id: users-per-source
    type: cardinality
    logsource: {product: linux, service: auth}
    by: [src_ip]
    field: user
    max_distinct: 4
    window: 30m
""")


def logins() -> list[dict[str, Any]]:
    """Failed (and a few accepted) logins of three hosts from three sources, time ordered."""
    events = []
    for i in range(45):
        host, source, user = f"bastion-{i % 3}", f"203.0.113.{70 + i % 4}", f"admin{i % 7}"
        verb = "Accepted" if i % 5 == 4 else "Failed"
        events.append({"timestamp": datetime.fromtimestamp(T0 + 8 * i, UTC).isoformat(), "hostname": host,
                       "app_name": "sshd", "user": user, "src_ip": source,
                       "message": f"{verb} password for invalid user {user} from {source} port {51000 + i} ssh2"})
    return events


async def produce_spread(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, orjson.dumps(event), partition=i % INPUTS)
                   for i, event in enumerate(events)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def reference_ids(tmp_path: Path, checks: Path, events: list[dict[str, Any]],
                        capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """``pipesentry eval`` over the merged stream (in time order, as it was produced)."""
    path = tmp_path / "merged.ndjson"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    capsys.readouterr()
    argv = ["eval", *(a for rule in RULES for a in ("--rules", str(rule))), "--checks", str(checks),
            "--logsource", "product=linux,service=auth", str(path)]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    return [orjson.loads(line) for line in out.splitlines()]


def anomaly_ids(*running: InProcess, kind: str = "anomaly") -> list[str]:
    return sorted(a.id for r in running for a in r.router.alerts if a.rule.kind == kind)


def split(*running: InProcess) -> bool:
    """Each instance owns half the input partitions and one internal partition."""
    for r in running:
        kafka, keyed = r.service.kafka, r.service.keyed
        if kafka is None or keyed is None or len(kafka.assigned) != INPUTS // 2 or len(keyed.source.assigned) != 1:
            return False
    return True


def released_past(running: list[InProcess], ts: float) -> bool:
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


async def test_keyed_anomaly_alerts_have_evals_ids_over_the_merged_stream(kafka_server, tmp_path, capsys):
    events = logins()
    checks = tmp_path / "checks.yml"
    checks.write_text(CHECKS)
    reference = await reference_ids(tmp_path, checks, events, capsys)
    expected = sorted(r["alert_id"] for r in reference if r["rule_kind"] == "anomaly")
    assert len(expected) >= 4, reference
    assert len({r["rule_id"] for r in reference if r["rule_kind"] == "anomaly"}) == 2, reference  # both checks
    brute_force = sorted(r["alert_id"] for r in reference if r["rule_kind"] == "correlation")
    assert await asyncio.to_thread(main, ["anomaly", "replay", "--checks", str(checks), "--logsource",
                                          "product=linux,service=auth", str(tmp_path / "merged.ndjson")]) == 0
    replayed = sorted(orjson.loads(line)["alert_id"] for line in capsys.readouterr().out.splitlines())
    assert replayed == expected  # ``pipesentry anomaly replay`` agrees with eval

    topic, internal = unique_topic("auth-anomaly"), unique_topic("keyed-anomaly")
    kafka_server.create_topic(topic, INPUTS)
    group = f"g-{uuid.uuid4().hex[:8]}"

    def settings(name: str) -> Any:
        base = kafka_settings(tmp_path, kafka_server.bootstrap, {topic: {"logsource": AUTH}}, group_id=group)
        return base.model_copy(update={
            "data_dir": tmp_path / name,
            "rules": base.rules.model_copy(update={"paths": RULES}),
            "anomaly": base.anomaly.model_copy(update={"checks": [checks]}),
            "state": base.state.model_copy(update={"scope": "keyed", "keyed_topic": internal,
                                                   "keyed_partitions": 2, "keyed_watermark_interval_s": 0.2})})

    first, second = InProcess(settings("a")), InProcess(settings("b"))
    async with first, second:
        await until(lambda: split(first, second), 90, "input and internal partitions split 2 + 2 and 1 + 1")
        await produce_spread(kafka_server.bootstrap, topic, events)
        await until(lambda: len(anomaly_ids(first, second)) >= len(expected), 90, "the keyed anomaly alerts")
        last = T0 + 8 * (len(events) - 1)
        await until(lambda: released_past([first, second], last + 10), 60, "every record released")
        raisers = {r for r in (first, second) if anomaly_ids(r)}
    assert anomaly_ids(first, second) == expected
    assert anomaly_ids(first, second, kind="correlation") == brute_force  # correlations beside them
    assert len(raisers) == 2  # the keys' models live on both instances' internal partitions
    for alert in (a for r in (first, second) for a in r.router.alerts if a.rule.kind == "anomaly"):
        assert alert.origin.input == "kafka" and alert.origin.topic == topic  # the firing event's origin


CHAINED = Path(__file__).resolve().parents[1] / "fixtures" / "rules" / "chained_sources_per_user.yml"
PARENT = "One User Attacked From Several Sources"


def attack() -> list[dict[str, Any]]:
    """Failed logins of two users from three addresses each, three per address: the bursts (grouped
    by address) feed a correlation grouped by user, so the parent's key differs from its child's."""
    events = []
    for i in range(18):
        user, source = ("alice" if i % 2 else "bob"), f"198.51.100.{i % 6}"
        events.append({"timestamp": datetime.fromtimestamp(T0 + 15 * i, UTC).isoformat(), "user": user,
                       "src_ip": source, "app_name": "sshd",
                       "message": f"Failed password for {user} from {source} port {50000 + i} ssh2"})
    return events


async def eval_reference(events: list[dict[str, Any]], rules: Path, tmp_path: Path, capsys: Any) -> list[dict[str, Any]]:
    """``pipesentry eval``'s records for ``events`` (the merged stream) under ``rules``: the reference."""
    path = tmp_path / "attack.ndjson"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["eval", "--rules", str(rules), "--logsource",
                                          "product=linux,service=auth", str(path)]) == 0
    return [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]


def chained_settings(kafka_server: Any, tmp_path: Path, name: str, topic: str, internal: str, group: str,
                     rules: Path) -> Any:
    """Keyed scope over two internal partitions with a short watermark interval (chain marks move fast)."""
    base = kafka_settings(tmp_path, kafka_server.bootstrap, {topic: {"logsource": AUTH}}, group_id=group)
    return base.model_copy(update={
        "data_dir": tmp_path / name,
        "rules": base.rules.model_copy(update={"paths": [rules]}),
        "state": base.state.model_copy(update={"scope": "keyed", "keyed_topic": internal,
                                               "keyed_partitions": 2, "keyed_watermark_interval_s": 0.2})})


async def test_a_chained_correlation_whose_key_differs_fires_with_evals_ids(kafka_server, tmp_path, capsys):
    events = attack()
    reference = await eval_reference(events, CHAINED, tmp_path, capsys)
    expected = sorted(r["alert_id"] for r in reference if r["rule_kind"] == "correlation")
    assert sum(r["rule_title"] == PARENT for r in reference) == 2, reference  # alice and bob

    topic, internal = unique_topic("auth-chained"), unique_topic("keyed-chained")
    kafka_server.create_topic(topic, INPUTS)
    group = f"g-{uuid.uuid4().hex[:8]}"

    first, second = (InProcess(chained_settings(kafka_server, tmp_path, name, topic, internal, group, CHAINED))
                     for name in "ab")
    async with first, second:
        await until(lambda: split(first, second), 90, "input and internal partitions split 2 + 2 and 1 + 1")
        await produce_spread(kafka_server.bootstrap, topic, events)
        await until(lambda: len(anomaly_ids(first, second, kind="correlation")) >= len(expected), 90,
                    "the child and parent correlation alerts")
        last = T0 + 15 * (len(events) - 1)
        await until(lambda: released_past([first, second], last + 10), 60, "every record released")
    assert anomaly_ids(first, second, kind="correlation") == expected
    parents = [a for r in (first, second) for a in r.router.alerts if a.rule.title == PARENT]
    assert {a.details["group"]["user"] for a in parents} == {"alice", "bob"}
    assert all(a.origin.topic == internal for a in parents)  # fed by re-keyed child alerts


THREE_LEVELS = Path(__file__).resolve().parents[1] / "fixtures" / "rules" / "chained_three_levels.yml"
PER_HOST = "Several Users Of One Host Attacked"
TOP_LANE = 2


def deep_attack() -> list[dict[str, Any]]:
    """On each of two hosts two users attacked from two addresses each, twice per address: the
    bursts (by address) feed a per-user correlation, whose alerts feed a per-host one, each level
    keyed by another field (so re-keyed twice through the internal topic)."""
    events = []
    for host in range(2):
        for user in range(2):
            for source in range(2):
                for _ in range(2):
                    name, address = f"u{host}{user}", f"198.51.{host}.{user * 2 + source}"
                    events.append({"user": name, "src_ip": address, "hostname": f"bastion-{host}",
                                   "app_name": "sshd",
                                   "message": f"Failed password for {name} from {address} port 50000 ssh2"})
    return [{"timestamp": datetime.fromtimestamp(T0 + 10 * i, UTC).isoformat(), **event}
            for i, event in enumerate(events)]


def top_released_past(running: list[InProcess], ts: float) -> bool:
    """Every internal partition's top chained lane released past ``ts`` (nothing left to fire)."""
    owned = 0
    for r in running:
        keyed = r.service.keyed
        assert keyed is not None
        for tp in keyed.source.assigned:
            released = keyed.detector.released((tp.topic, tp.partition), TOP_LANE)
            if released is None or released < ts:
                return False
            owned += 1
    return owned == 2


async def test_a_three_level_chain_whose_keys_differ_per_level_fires_with_evals_ids(kafka_server, tmp_path,
                                                                                      capsys):
    events = deep_attack()
    reference = await eval_reference(events, THREE_LEVELS, tmp_path, capsys)
    expected = sorted(r["alert_id"] for r in reference if r["rule_kind"] == "correlation")
    assert [r["rule_title"] for r in reference if r["rule_kind"] == "correlation"] == [PER_HOST] * 2, reference

    topic, internal = unique_topic("auth-deep"), unique_topic("keyed-deep")
    kafka_server.create_topic(topic, INPUTS)
    group = f"g-{uuid.uuid4().hex[:8]}"

    late = metrics.KEYED_STATE_RECORDS.labels("late")._value.get()
    first, second = (InProcess(chained_settings(kafka_server, tmp_path, name, topic, internal, group, THREE_LEVELS))
                     for name in "ab")
    async with first, second:
        await until(lambda: split(first, second), 90, "input and internal partitions split 2 + 2 and 1 + 1")
        await produce_spread(kafka_server.bootstrap, topic, events)
        await until(lambda: len(anomaly_ids(first, second, kind="correlation")) >= len(expected), 90,
                    "the top level's alerts")
        last = T0 + 10 * (len(events) - 1)
        await until(lambda: top_released_past([first, second], last + 10), 60, "every level released")
    assert anomaly_ids(first, second, kind="correlation") == expected
    assert metrics.KEYED_STATE_RECORDS.labels("late")._value.get() == late  # none found late on any level
    tops = [a for r in (first, second) for a in r.router.alerts if a.rule.title == PER_HOST]
    assert {a.details["group"]["hostname"] for a in tops} == {"bastion-0", "bastion-1"}
    assert all(a.origin.topic == internal for a in tops)  # fed by re-keyed middle-level alerts
