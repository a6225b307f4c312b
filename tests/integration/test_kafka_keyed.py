"""``state.scope: keyed`` against a real broker: a brute force spread over the input partitions,
which ``partition`` scope never sees whole, fires once in keyed scope, with the id
``pipesentry eval`` gives over the merged stream (docs/scaling.md, issue 18)."""

from __future__ import annotations

import asyncio
import math
import time
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
BRUTE_FORCE = "SSH Brute Force Against A Host"


def brute_force() -> list[dict[str, Any]]:
    """The rule pack's brute force case: twelve failed logins on one host within two minutes."""
    case = orjson.loads((SIGMA_RULES / "correlations" / "ssh_brute_force.events.json").read_bytes())["match"][0]
    return [step["event"] for step in case]


async def produce_spread(bootstrap: str, topic: str, events: list[dict[str, Any]], start: int = 0) -> None:
    """Round robin over the input partitions: none holds the ten events the threshold needs."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, orjson.dumps(event), partition=(start + i) % INPUTS)
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


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _ts(event: dict[str, Any]) -> float:
    from datetime import datetime

    value = datetime.fromisoformat(event["timestamp"]).timestamp()
    assert math.isfinite(value)
    return value


# --- faults ------------------------------------------------------------------------------------

def keyed_process(tmp_path: Path, name: str, config: dict[str, Any], shared_state: Path) -> Any:
    """``pipesentry run`` with its own data dir whose ``state`` is the group's shared volume."""
    from devservices.process import free_port
    from tests.support.instances import ServiceProcess, write_config

    home = tmp_path / name
    (home / "data").mkdir(parents=True)
    (home / "data" / "state").symlink_to(shared_state, target_is_directory=True)
    port = free_port()
    full = {**config, "data_dir": str(home / "data"), "stdin": {"enabled": False},
            "api": {"port": port, "host": "127.0.0.1"}}
    process = ServiceProcess(write_config(home / "pipesentry.yml", full), home / "stdout.jsonl", home / "stderr.log")
    process.start()
    process.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return process


async def metric_sum(process: Any, name: str, label: str = "") -> float:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=2) as client:
            text = (await client.get(process.url + "/metrics")).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and label in line and not line.startswith("#"))


async def ready(process: Any) -> bool:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(process.url + "/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
async def test_keyed_scope_survives_a_sigkill_of_one_instance_mid_stream(kafka_server, tmp_path, capsys):
    """Half the brute force, SIGKILL of the instance whose stage 2 owns the key (once it applied
    records), the other half: the survivor takes over its input and internal partitions (state on a
    shared volume) and the correlation fires with eval's id; every duplicate shares it."""
    # a live stream: event time follows the wall clock, as the marks of quiet partitions do (the
    # pause around the kill must not make the second half late)
    template = brute_force()
    first_half = [{**e, "timestamp": _iso(time.time() + i)} for i, e in enumerate(template[:6])]
    topic, internal = unique_topic("auth-kill"), unique_topic("keyed-kill")
    kafka_server.create_topic(topic, INPUTS)
    kafka_server.create_topic(internal, 2)
    shared = tmp_path / "shared-state"
    shared.mkdir()
    config = {
        "kafka": {"bootstrap_servers": [kafka_server.bootstrap], "group_id": f"g-{uuid.uuid4().hex[:8]}",
                  "commit_interval_s": 0.2, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
                  "connect_backoff_initial_s": 0.2, "connect_backoff_max_s": 1.0,
                  "topics": {topic: {"decoder": "json", "logsource": AUTH}}},
        "rules": {"paths": [str(p) for p in RULES], "watch": False},
        "state": {"scope": "keyed", "keyed_topic": internal, "keyed_watermark_interval_s": 0.2,
                  "snapshot_interval_s": 0.5},
        "alerting": {"sinks": [{"type": "stdout"}]},
    }
    first = keyed_process(tmp_path, "a", config, shared)
    second = keyed_process(tmp_path, "b", config, shared)
    try:
        await until(lambda: _all(ready(first), ready(second)), 90, "both instances ready", first)
        await produce_spread(kafka_server.bootstrap, topic, first_half)
        owner: list[Any] = []

        async def applied() -> bool:
            for process in (first, second):
                if await metric_sum(process, "pipesentry_keyed_state_records", 'kind="applied"') > 0:
                    owner.append(process)
                    return True
            return False

        await until(applied, 60, "stage 2 applying records")
        victim = owner[0]
        survivor = second if victim is first else first
        victim.kill()
        second_half = [{**e, "timestamp": _iso(time.time() + i)} for i, e in enumerate(template[6:])]
        await produce_spread(kafka_server.bootstrap, topic, second_half, start=6)
        await until(lambda: bool(_correlations(survivor)), 120, "the correlation alert on the survivor", survivor)
        assert survivor.alive(), survivor.log()
    finally:
        first.stop()
        second.stop()
    fired = _correlations(first) + _correlations(second)
    expected = await reference_ids(tmp_path, first_half + second_half, capsys)
    assert len(expected) == 1 and set(fired) == expected, (fired, expected)


async def _all(*checks: Any) -> bool:
    return all([await check for check in checks])


def _correlations(process: Any) -> list[str]:
    """The brute force alerts a child process printed (the stdout sink names the rule, not its kind)."""
    return [doc["alert_id"] for doc in process.alerts() if doc.get("rule", {}).get("name") == BRUTE_FORCE]
