"""``state.scope``: per-partition engines (default) or one engine pair for the whole instance.

A correlation whose base events arrive on different topics (GitHub audit log on
one, push webhooks on another) only fires when the topics share state.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from detectors.model import LogSource, Origin
from service.config import EventSettings, KafkaSettings, Settings, StateSettings
from service.detection import Detector, compile_detection
from service.sources.base import Item
from service.sources.kafka import KafkaSource
from service.state_store import StateStore
from tests.conftest import PROJECT_RULES
from tests.support.kafka import FakeConsumer, FakeDeadLetters, Record
from tests.support.routers import FakeRouter
from tests.support.waits import until

ROOT = PROJECT_RULES
RULES = [ROOT / "github" / "github_audit_branch_protection_removed.yml",
         ROOT / "github" / "github_webhook_force_push_protected_branch.yml",
         ROOT / "correlations" / "github_protection_removed_then_force_push.yml"]
CORRELATION = "GitHub Branch Protection Removed Then Force Push"
AUDIT = LogSource(product="github", service="audit")
WEBHOOK = LogSource(product="github", service="webhook")
T0 = 1_764_113_000.0


def protection_removed(ts: float = T0) -> dict[str, Any]:
    return {"ts": ts, "action": "protected_branch.destroy", "actor": "mallory", "org": "acme",
            "repo": "acme/payments", "branch": "main"}


def force_push(ts: float = T0 + 240) -> dict[str, Any]:
    return {"ts": ts, "ref": "refs/heads/main", "forced": True, "created": False, "deleted": False,
            "before": "9f1c2a7e0b3d4c5e6f708192a3b4c5d6e7f80912", "after": "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
            "repository": {"full_name": "acme/payments", "default_branch": "main"},
            "pusher": {"name": "mallory"}, "sender": {"login": "mallory"}}


def detector(scope: str = "partition") -> Detector:
    outcome = compile_detection(RULES, [], skip_invalid=False)
    assert outcome.accepted, outcome.errors
    assert outcome.detection is not None and outcome.detection.correlation is not None
    return Detector(outcome.detection, scope=scope)  # type: ignore[arg-type]


def items() -> list[Item]:
    return [Item(protection_removed(), Origin("kafka", "gh-audit", 0, 0), AUDIT, ("ts",), 0.0),
            Item(force_push(), Origin("kafka", "gh-push", 2, 0), WEBHOOK, ("ts",), 0.0)]


def titles(alerts: list[Any]) -> list[str]:
    return [a.rule.title for a in alerts]


def test_setting_defaults_to_partition_and_accepts_instance():
    assert Settings().state.scope == "partition"
    assert Settings(state={"scope": "instance"}).state.scope == "instance"
    with pytest.raises(ValueError):
        StateSettings(scope="cluster")  # type: ignore[arg-type]


def test_partition_scope_keeps_topics_apart_so_the_cross_topic_correlation_never_fires():
    det = detector()
    alerts = det.process(items(), now=T0 + 300) + det.heartbeat(T0 + 4000)
    assert CORRELATION not in titles(alerts)
    assert len(alerts) == 2  # each base rule alerts on its own (generate: true)
    assert sorted(det.scopes()) == [("gh-audit", 0), ("gh-push", 2)]


def test_instance_scope_joins_topics_in_the_local_engines():
    det = detector("instance")
    alerts = det.process(items(), now=T0 + 300)
    assert titles(alerts).count(CORRELATION) == 1
    fired = next(a for a in alerts if a.rule.title == CORRELATION)
    assert fired.details["group"] == {"repository": "acme/payments"}
    assert det.scopes() == []  # no per-partition engines: Kafka items used the local pair
    assert det.scope_clock(None) is not None and det.scope_clock(("gh-push", 2)) is None
    assert set(det.export_scope(None)) == {"correlation"}


def test_instance_scope_keeps_the_order_rule_of_temporal_ordered():
    det = detector("instance")
    wrong_order = [Item(force_push(T0), Origin("kafka", "gh-push", 0, 0), WEBHOOK, ("ts",), 0.0),
                   Item(protection_removed(T0 + 60), Origin("kafka", "gh-audit", 0, 0), AUDIT, ("ts",), 0.0)]
    assert CORRELATION not in titles(det.process(wrong_order, now=T0 + 100) + det.heartbeat(T0 + 4000))


# --- the Kafka loop in instance mode -------------------------------------------------------

AUDIT_TP = TopicPartition("gh-audit", 0)
PUSH_TP = TopicPartition("gh-push", 1)


def record(event: dict[str, Any], offset: int) -> Record:
    return Record(orjson.dumps(event), None, offset, 0, [])


def runner(tmp_path: Path, consumer: FakeConsumer, scope: str) -> tuple[KafkaSource, FakeRouter]:
    topics = {"gh-audit": {"logsource": {"product": "github", "service": "audit"}},
              "gh-push": {"logsource": {"product": "github", "service": "webhook"}}}
    settings = KafkaSettings(bootstrap_servers=["unused:1"], topics=topics, commit_interval_s=0.02)
    router = FakeRouter()
    run = KafkaSource(settings, EventSettings(timestamp_fields=["ts"]), detector(scope), router,
                      dead_letters=FakeDeadLetters(), consumer_factory=lambda **_: consumer,
                      state_store=StateStore(tmp_path / "state"), snapshot_interval_s=0.001)
    return run, router


async def _consume(run: KafkaSource, consumer: FakeConsumer, ends: dict[TopicPartition, int]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run.run(stop))
    await until(lambda: all(run.tracker.acked.get(tp) == end for tp, end in ends.items())
                     and all(consumer.committed_now(tp) == end for tp, end in ends.items()))
    stop.set()
    await task


class CommitConsumer(FakeConsumer):
    def committed_now(self, tp: TopicPartition) -> int | None:
        return next((c[tp] for c in reversed(self.commits) if tp in c), None)


async def test_kafka_runner_in_instance_mode_fires_across_topics_without_partition_snapshots(tmp_path):
    consumer = CommitConsumer({AUDIT_TP: [record(protection_removed(), 0)],
                               PUSH_TP: [record(force_push(), 0)]})
    run, router = runner(tmp_path, consumer, "instance")
    await _consume(run, consumer, {AUDIT_TP: 1, PUSH_TP: 1})
    assert titles(router.accepted).count(CORRELATION) == 1
    store = run.state_store
    for tp in (AUDIT_TP, PUSH_TP):  # per-partition snapshots are not taken: the local scope holds it all
        assert store.load(f"kafka:{tp.topic}:{tp.partition}", "partition") is None
    assert run.detector.scopes() == []


async def test_kafka_runner_in_partition_mode_does_not_fire_across_topics(tmp_path):
    consumer = CommitConsumer({AUDIT_TP: [record(protection_removed(), 0)],
                               PUSH_TP: [record(force_push(), 0)]})
    run, router = runner(tmp_path, consumer, "partition")
    await _consume(run, consumer, {AUDIT_TP: 1, PUSH_TP: 1})
    assert CORRELATION not in titles(router.accepted) and len(router.accepted) == 2
    await until(lambda: run.state_store.load("kafka:gh-audit:0", "partition") is not None)


async def test_instance_mode_ignores_saved_partition_state_and_never_rewinds(tmp_path):
    """A per-partition snapshot left by an earlier ``partition`` run must not seek the partition back."""
    store = StateStore(tmp_path / "state")
    store.save("kafka:gh-push:1", "correlation", {"offset": 0, "snapshot": {"format": "x"}, "clock": None})
    consumer = CommitConsumer({AUDIT_TP: [record(protection_removed(), 0)],
                               PUSH_TP: [record(force_push(T0 - 60), 0), record(force_push(), 1)]},
                              committed={PUSH_TP: 1})
    run, router = runner(tmp_path, consumer, "instance")
    await _consume(run, consumer, {AUDIT_TP: 1, PUSH_TP: 2})
    assert consumer.seeks == []
    assert titles(router.accepted).count(CORRELATION) == 1


def test_lagging_partitions_make_the_local_scope_busy_in_instance_mode(tmp_path):
    records = {PUSH_TP: [record(force_push(T0 + i), i) for i in range(5)]}  # fetched three at a time
    for scope, expected in (("instance", {None}), ("partition", {("gh-push", 1)})):
        consumer = CommitConsumer({tp: list(r) for tp, r in records.items()})
        run, _ = runner(tmp_path / scope, consumer, scope)
        run.tracker.assign([PUSH_TP])
        run._process({PUSH_TP: consumer.records[PUSH_TP][:3]}, consumer)
        assert run.busy_scopes() == expected
        run._process({PUSH_TP: consumer.records[PUSH_TP][3:]}, consumer)
        assert run.busy_scopes() == set()
