"""``state.scope: keyed`` on a real broker, seen from outside the instances: who owns which
partition (by Kafka client id), committed and end offsets, the internal partition a group key
hashes to, a live stream of events stamped as they are produced, and the reference alert ids
(``pipesentry eval`` over the merged stream in time order), and the check both keyed anomaly
tests run (``FAILED_LOGINS_CHECK``).

The fault tests kill instances and restart the broker at conditions read here (records
acknowledged = input offsets committed; stage 2 drained = its committed offsets at the internal
topic's end), never after fixed sleeps.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

Partition = tuple[str, int]
Step = tuple[str, dict[str, Any]]
"""(feed name, event without its time): the time is the wall clock when it is produced."""
TIME_FIELD = "@timestamp"
FAILED_LOGINS_PER_HOST = "failed-logins-per-host"
FAILED_LOGINS_CHECK = f"""\
  - id: {FAILED_LOGINS_PER_HOST}
    type: threshold
    logsource: {{product: linux, service: auth}}
    by: [hostname]
    selection: {{message|contains: Failed password}}
    count: 6
    window: 5m
"""
"""The keyed tests' threshold check, an item of a ``checks:`` list (:func:`checks_yaml`): six failed
SSH logins of one host within five minutes."""


def checks_yaml(*items: str) -> str:
    """An anomaly check file of ``items`` (each a ``checks:`` list item as text)."""
    return "checks:\n" + "".join(items)


@asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[Any]:
    """A fresh admin client per question: it must work across a broker restart."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def members(bootstrap: str, group: str) -> dict[str, set[Partition]]:
    """The group's members by client id (``kafka.client_id``: the instance's name) and the
    partitions each was assigned; empty while the group rebalances or the broker is away."""
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    try:
        async with _admin(bootstrap) as admin:
            responses = await admin.describe_consumer_groups([group])
    except Exception:  # the broker restarting, the coordinator moving: ask again
        return {}
    out: dict[str, set[Partition]] = {}
    for response in responses:
        for described in response.to_object()["groups"]:
            if described["state"] != "Stable":
                return {}
            for member in described["members"]:
                owned = out.setdefault(member["client_id"], set())
                if member["member_assignment"]:
                    assignment = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
                    owned.update((topic, p) for topic, partitions in assignment.assignment for p in partitions)
    return out


async def committed(bootstrap: str, group: str) -> dict[Partition, int]:
    try:
        async with _admin(bootstrap) as admin:
            offsets = await admin.list_consumer_group_offsets(group)
    except Exception:
        return {}
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[Partition, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await consumer.end_offsets(partitions)
    finally:
        try:
            await consumer.stop()
        except asyncio.CancelledError:
            # aiokafka 0.14 re-raises the cancellation of its own no-group task when that task had
            # not run yet; a cancellation of this task is passed on
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def acknowledged(bootstrap: str, group: str, topics: Iterable[str]) -> int:
    """Input records the group committed (every record's state records were acknowledged before)."""
    wanted = set(topics)
    return sum(offset for (topic, _), offset in (await committed(bootstrap, group)).items() if topic in wanted)


async def reached(bootstrap: str, group: str, ends: dict[Partition, int]) -> bool:
    """The group committed every partition of ``ends`` up to its end offset there."""
    done = await committed(bootstrap, group)
    return all(done.get(tp, 0) >= offset for tp, offset in ends.items())


def internal_partition(correlation_id: str, group: Sequence[Any], partitions: int) -> int:
    """The internal partition a correlation's group key goes to (Kafka's default partitioner over
    stage 1's record key)."""
    from aiokafka.partitioner import murmur2

    from detectors.correlation.fields import key_part
    from service.keyed.records import record_key

    key = record_key(correlation_id, [key_part(value) for value in group])
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Feed:
    """An input topic: its name, log source (``product=…,service=…``) and partition count."""

    topic: str
    logsource: str
    partitions: int

    def settings(self) -> dict[str, Any]:
        ls = dict(part.split("=", 1) for part in self.logsource.split(","))
        return {"decoder": "json", "logsource": ls}


@dataclass
class Produced:
    ts: float
    feed: str
    partition: int
    offset: int
    event: dict[str, Any]


@dataclass
class LiveStream:
    """Events produced one at a time, each stamped with the wall clock when it is sent (strictly
    increasing, in milliseconds): a live stream, whose event time follows the wall clock as the
    marks of quiet input partitions do, so a pause around a fault does not make later events late."""

    bootstrap: str
    feeds: dict[str, Feed]
    rng: random.Random
    produced: list[Produced] = field(default_factory=list)

    async def produce(self, steps: Iterable[Step], partitions: dict[str, Sequence[int]] | None = None) -> None:
        """Send ``steps`` in order, each to a random partition of its feed, or round robin over
        ``partitions[feed]`` when given."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", request_timeout_ms=30_000)
        await producer.start()
        sent: dict[str, int] = {}
        try:
            for name, body in steps:
                feed = self.feeds[name]
                chosen = (partitions or {}).get(name)
                if chosen:
                    partition = chosen[sent.get(name, 0) % len(chosen)]
                    sent[name] = sent.get(name, 0) + 1
                else:
                    partition = self.rng.randrange(feed.partitions)
                last = self.produced[-1].ts if self.produced else 0.0
                ms = max(round(time.time() * 1000), round(last * 1000) + 1)
                event = {TIME_FIELD: ms, **body}
                meta = await producer.send_and_wait(feed.topic, orjson.dumps(event), partition=partition)
                self.produced.append(Produced(ms / 1000, name, partition, meta.offset, event))
        finally:
            await producer.stop()

    @property
    def last_ts(self) -> float:
        return self.produced[-1].ts

    def merged(self, path: Path) -> Path:
        """The stream in time order, each event with its feed's log source in ``logsource``."""
        path.write_bytes(b"".join(orjson.dumps({**p.event, "logsource": self.feeds[p.feed].logsource}) + b"\n"
                                  for p in sorted(self.produced, key=lambda p: p.ts)))
        return path


def interleave(rng: random.Random, *scenarios: Sequence[Step]) -> list[Step]:
    """The scenarios' steps merged at random, each scenario's own order kept."""
    queues = [list(s) for s in scenarios if s]
    out: list[Step] = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return out


def reference(merged: Path, rules: Sequence[Path], checks: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """``pipesentry eval`` over the merged stream (each event routed by its ``logsource`` field)."""
    argv = [sys.executable, "-m", "service.cli", "eval", *(a for r in rules for a in ("--rules", str(r))),
            *(a for c in checks for a in ("--checks", str(c))), "--logsource-field", "logsource",
            str(merged)]
    done = subprocess.run(argv, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [orjson.loads(line) for line in done.stdout.splitlines()]


async def reference_ids(merged: Path, rules: Sequence[Path], checks: Sequence[Path] = (),
                        kinds: tuple[str, ...] = ("correlation", "anomaly")) -> set[str]:
    found = await asyncio.to_thread(reference, merged, rules, checks)
    return {r["alert_id"] for r in found if r["rule_kind"] in kinds}


class KeyedCluster:
    """Instances of one group in ``state.scope: keyed`` (``pipesentry run`` child processes, named
    by their Kafka client id, state on one shared volume, or ``shared_state=False`` each on its own)
    over ``feeds``, with the internal topic created beforehand."""

    def __init__(self, tmp_path: Path, bootstrap: str, feeds: dict[str, Feed], *, internal_partitions: int,
                 rules: Sequence[Path], checks: Sequence[Path] = (), shared_state: bool = True,
                 **state: Any) -> None:
        from tests.support.instances import unique_topic

        self.tmp_path = tmp_path
        self.bootstrap = bootstrap
        self.feeds = feeds
        self.internal = unique_topic("keyed-state")
        self.internal_partitions = internal_partitions
        self.group = unique_topic("g")
        self.shared: Path | None = tmp_path / "shared-state" if shared_state else None
        if self.shared is not None:
            self.shared.mkdir()
        self.instances: dict[str, Any] = {}
        self.config: dict[str, Any] = {
            "kafka": {"bootstrap_servers": [bootstrap], "group_id": self.group,
                      "commit_interval_s": 0.2, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
                      "connect_backoff_initial_s": 0.2, "connect_backoff_max_s": 1.0,
                      "topics": {feed.topic: feed.settings() for feed in feeds.values()}},
            "rules": {"paths": [str(p) for p in rules], "watch": False, "cache_dir": str(tmp_path / "rules-cache")},
            "anomaly": {"checks": [str(c) for c in checks]},
            "state": {"scope": "keyed", "keyed_topic": self.internal, **state},
            "alerting": {"sinks": [{"type": "stdout"}]},
        }

    @property
    def topics(self) -> list[str]:
        return [feed.topic for feed in self.feeds.values()]

    @property
    def stage2_group(self) -> str:
        return self.group + "-keyed"

    @property
    def input_partitions(self) -> int:
        return sum(feed.partitions for feed in self.feeds.values())

    def create_topics(self, create: Any) -> None:
        """``create(name, partitions)``: the broker fixture's ``create_topic``."""
        for feed in self.feeds.values():
            create(feed.topic, feed.partitions)
        create(self.internal, self.internal_partitions)

    def start(self, name: str) -> Any:
        from tests.support.instances import Instance

        config = {**self.config, "kafka": {**self.config["kafka"], "client_id": name}}
        self.instances[name] = Instance(self.tmp_path, name, config, state_dir=self.shared)
        return self.instances[name]

    def saved_state(self, name: str, partition: int) -> Any:
        """The snapshot document of internal ``partition`` in instance ``name``'s state directory (None: none)."""
        from service.state_store import StateStore

        store = StateStore(self.shared or self.tmp_path / name / "data" / "state")
        return store.load(f"kafka:{self.internal}:{partition}", "partition")

    async def changelog_state(self, partition: int) -> Any:
        """The snapshot document of internal ``partition`` in the changelog topic (``state.snapshots: kafka``)."""
        from service.config import KafkaSettings
        from service.state_changelog import ChangelogStore
        from service.state_store import StateStore

        state = self.config["state"]
        kafka = KafkaSettings(bootstrap_servers=[self.bootstrap], topics={self.internal: {}}, group_id=self.group)
        store = ChangelogStore(StateStore(self.tmp_path / "changelog-reader"), kafka, state["changelog_topic"],
                               state.get("changelog_partitions", 6))
        try:
            return await store.load_async(f"kafka:{self.internal}:{partition}", "partition")
        finally:
            await store.stop()

    def alive(self) -> dict[str, Any]:
        return {name: i for name, i in self.instances.items() if i.alive()}

    def stop(self) -> None:
        for instance in self.instances.values():
            instance.stop()

    async def settled(self) -> bool:
        """Every live instance is ready, and both groups are stable with exactly those members,
        every input partition and every internal one assigned."""
        alive = self.alive()
        if not all([await i.ready() for i in alive.values()]):
            return False
        for group, count in ((self.group, self.input_partitions), (self.stage2_group, self.internal_partitions)):
            owners = await members(self.bootstrap, group)
            if set(owners) != set(alive) or sum(len(p) for p in owners.values()) != count:
                return False
        return True

    async def stage2_owner(self, partition: int) -> str | None:
        """The client id of the stage-2 member that owns ``partition`` of the internal topic."""
        for name, owned in (await members(self.bootstrap, self.stage2_group)).items():
            if (self.internal, partition) in owned:
                return name
        return None

    async def acknowledged(self) -> int:
        return await acknowledged(self.bootstrap, self.group, self.topics)

    def alert_ids(self, rule_ids: Iterable[str]) -> set[str]:
        """Ids of every alert of ``rule_ids`` any instance (dead ones too) printed."""
        wanted = set(rule_ids)
        return {doc["alert_id"] for i in self.instances.values() for doc in i.alerts()
                if doc.get("rule", {}).get("id") in wanted}

    def logs(self) -> str:
        return "\n".join(f"--- {name} (alive: {i.alive()})\n{i.log()}" for name, i in self.instances.items())

    async def drained(self, timeout: float) -> None:
        """Wait until stage 2 committed everything the internal topic holds now (every record
        received so far applied and its alerts accepted)."""
        from tests.support.waits import until

        ends = await end_offsets(self.bootstrap, [self.internal])
        await until(lambda: reached(self.bootstrap, self.stage2_group, ends), timeout, "stage 2 drained")
