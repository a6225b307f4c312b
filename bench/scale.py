"""``state.scope: keyed`` at scale: events/s for 1-3 instances, CPU beside ``instance`` scope,
stage 2's CPU per state record, the internal topic's volume and end-to-end latency (issue 18).

    python bench/scale.py [--events 100000] [--rounds 3] [--quick] [--json F] [--markdown F]

A private broker is started with ``devservices``. Steps, in one run:

1. the **correlation-heavy mix**: the demo corpus (``service/demo``: seventeen sources, one topic
   each, ``--partitions`` partitions per topic; one seeded day after another) with failed SSH and
   application logins woven in (``--heavy-share`` of the events, spread over ``--hosts`` hosts and
   client addresses, each feeding two correlations of ``sigma-rules/``), encoded once, in
   event-time order;
2. rounds (``--rounds``, the order of the lanes rotating from round to round) of ``pipesentry run``
   child processes, each lane on topics and groups of its own (the internal topic too), their
   ``data_dir/state`` on one directory of the lane (the shared volume keyed scope's stage 2 needs
   for its state to follow a moved partition, as in ``tests/support/keyed.py``):
   ``instance`` (one process, ``state.scope: instance``: today's exact single-instance set-up),
   ``keyed-1``, ``keyed-2``, ``keyed-3`` (``state.scope: keyed``, ``keyed_role: both``) and
   ``split`` (one ``stage1`` process beside one ``stage2`` process). The processes start on the
   empty topics; once every one holds its share of the partitions (input and internal: every
   partition assigned, and each process some of each group it belongs to) the backlog is produced
   at full speed (about ten times faster than it is consumed), so no process reads a share alone
   while the others still join. ``events_per_s``: the backlog over the wall time from the first
   send until the input group has committed all of it and the stage-2 group the internal topic up
   to where it ended then; ``cpu_us_per_event``: the CPU time (``/proc/<pid>/stat``: user + system)
   of every process of the lane from the first send until stage 2 has applied every state record
   (the last ones wait for the watermark), per event;
3. ``split``'s stage-2 process alone gives ``stage2_us_per_record`` (its CPU over the state records
   stage 1 sent, ``pipesentry_keyed_state_records_total{kind="sent"}``); ``keyed-1``'s internal
   topic, read back, gives the bytes per input event (keys and values, watermarks included);
4. ``demo_state_share``: ``keyed-1`` over the plain demo mix (no logins added): the state
   records' bytes in the internal topic over the input's (``..._with_watermarks``: the whole
   internal topic; the watermarks' bytes grow with the run's duration, not with the events);
5. ``latency``: one ``keyed`` process over fresh topics, a steady ``--rate`` events/s of the same
   mix with live event times for ``--seconds``; for every correlation alert, the time from the
   send of its firing event to the alert's creation (``event.created``).

``ratio_keyed_vs_instance`` divides ``keyed-1``'s CPU per event by ``instance``'s (goal < 1.3);
``state_share`` is the state records' bytes (keys and values, watermarks left out) over the input
bytes (goal < 10% on the demo mix). Once the backlog is in, one ordinary event per source with a
time an hour after the backlog goes to every input partition: it moves every partition's mark past
the backlog, so stage 2 releases the last records at once (a replay of old data otherwise leaves
them waiting for the marks of the quieter partitions, which only the wall clock moves on).
Figures are the median over rounds with min and max. ``--quick`` is a smoke test (small backlog,
one round, short latency run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.demo import builders as b  # noqa: E402
from service.demo.corpus import DEFAULT_DAY, generate  # noqa: E402
from service.demo.kafka import topics_config  # noqa: E402
from service.demo.sources import BY_NAME, SOURCES  # noqa: E402
from tests.support.instances import Instance  # noqa: E402

RULES = ROOT / "sigma-rules"
TICK = os.sysconf("SC_CLK_TCK")
LANES = ("instance", "keyed-1", "keyed-2", "keyed-3", "split")


@dataclass(frozen=True)
class Produced:
    topic: str
    value: bytes


# --- the mix ---------------------------------------------------------------------------------

def heavy_event(rng: random.Random, ts: float, hosts: int) -> tuple[str, dict[str, Any]]:
    """A failed SSH login on one of ``hosts`` hosts, or a failed application login from one of as
    many client addresses: each feeds two correlations (the brute force and its chain's burst)."""
    n = rng.randrange(hosts)
    if rng.random() < 0.5:
        return b.syslog_auth(ts, f"web-{n:04d}", "sshd", f"Failed password for invalid user admin{n % 7} from "
                             f"203.0.113.{n % 250} port {50000 + rng.randrange(9000)} ssh2")
    user = f"user{rng.randrange(5000)}"
    return b.app_log(ts, f"authn_login_fail:{user}", "warn", "authn_login_fail", logger="payments.auth", user=user,
                     client_ip=f"198.51.{n // 250}.{n % 250}")


FIRST_DAY = DEFAULT_DAY - 60 * 86_400.0
"""The mix's first day: its days (and the flush after them) stay in the past, as Kafka refuses
record timestamps far in the future."""


def mix(events: int, heavy_share: float, hosts: int, seed: int) -> list[tuple[float, str, dict[str, Any]]]:
    """``events`` (time, source, event) triples in event-time order: demo days, one after another,
    from :data:`FIRST_DAY`, with ``heavy_share`` failed logins woven in."""
    rng = random.Random(seed)
    background = round(events * (1 - heavy_share))
    out: list[tuple[float, str, dict[str, Any]]] = []
    day = 0
    while len(out) < background:
        for item in generate(seed + day, FIRST_DAY + day * 86_400.0):
            out.append((item.ts, item.source, item.event))
        day += 1
    del out[background:]
    start, end = out[0][0], out[-1][0]
    for _ in range(events - background):
        ts = rng.uniform(start, end)
        source, event = heavy_event(rng, ts, hosts)
        out.append((ts, source, event))
    out.sort(key=lambda row: row[0])
    return out


def flush_events(after: float) -> dict[str, bytes]:
    """Per source, an ordinary event at ``after``: sent to every input partition once the backlog is
    in, it moves every partition's mark past the backlog (a replay of old data otherwise leaves the
    last records waiting for the marks of the quieter partitions, which only the wall clock moves on)."""
    out: dict[str, bytes] = {}
    for item in generate(7):
        if item.story is None and item.source not in out:
            event = at_time(item.source, item.event, after)
            out[item.source] = orjson.dumps(event)
    return out


def at_time(source: str, event: dict[str, Any], ts: float) -> dict[str, Any]:
    """``event`` with its event time field (dotted: nested) set to ``ts``."""
    name = BY_NAME[source].time_field
    event = orjson.loads(orjson.dumps(event))
    if name is None:
        return event  # the record's timestamp is its time
    *parents, leaf = name.split(".")
    node = event
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return event


def live(source: str, event: dict[str, Any], now: float) -> dict[str, Any] | None:
    """``event`` with its event time moved to ``now`` (None for a source whose time is nested)."""
    name = BY_NAME[source].time_field
    if name is None or "." in name:
        return None
    event = dict(event)
    event[name] = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return event


# --- Kafka --------------------------------------------------------------------------------------

def topic_names(prefix: str) -> dict[str, str]:
    return {s.name: f"{prefix}-{s.topic}" for s in SOURCES}


def topics_settings(names: dict[str, str]) -> dict[str, Any]:
    by_topic = {s.topic: s.name for s in SOURCES}
    return {names[by_topic[topic]]: entry for topic, entry in topics_config().items()}


async def produce(bootstrap: str, rows: Sequence[Produced], partitions: int,
                  flush: Sequence[tuple[str, int, bytes, int]] = ()) -> None:
    """``rows`` round robin over each topic's ``partitions`` in whole batches (aiokafka's batch
    API: several times faster than one ``send`` per message, so production stays ahead of every
    lane), then ``flush`` ((topic, partition, value, timestamp ms): after every row)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=1_048_576,
                                max_request_size=4_194_304)
    await producer.start()
    try:
        batches: dict[tuple[str, int], Any] = {}
        turn: dict[str, int] = {}
        pending = []
        for row in rows:
            part = turn[row.topic] = (turn.get(row.topic, -1) + 1) % partitions
            batch = batches.get((row.topic, part))
            if batch is None:
                batch = batches[(row.topic, part)] = producer.create_batch()
            if batch.append(key=None, value=row.value, timestamp=None) is None:
                batch.close()
                pending.append(await producer.send_batch(batch, row.topic, partition=part))
                batch = batches[(row.topic, part)] = producer.create_batch()
                batch.append(key=None, value=row.value, timestamp=None)
        for (topic, part), batch in batches.items():
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=part))
        await asyncio.gather(*pending)
        await asyncio.gather(*[await producer.send(topic, value, partition=partition, timestamp_ms=ts)
                               for topic, partition, value, ts in flush])
    finally:
        await producer.stop()


async def topic_bytes(bootstrap: str, topic: str) -> tuple[int, int, int]:
    """Messages, key + value bytes and the watermarks' share of them, of ``topic`` (read from the
    start to its end)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            await consumer._client.force_metadata_update()
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        count = size = marks = 0
        left = {tp for tp in parts if ends[tp] > 0}
        while left:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, messages in batch.items():
                for m in messages:
                    count += 1
                    size += len(m.key or b"") + len(m.value or b"")
                    if b'"k":"w"' in (m.value or b""):
                        marks += len(m.key or b"") + len(m.value or b"")
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        return count, size, marks
    finally:
        await consumer.stop()


class Offsets:
    """Committed offsets of a group and end offsets of topics."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin: Any = None
        self.consumer: Any = None

    async def __aenter__(self) -> Offsets:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self.admin.start()
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def committed(self, group: str, topics: set[str]) -> dict[Any, int]:
        found = await self.admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in found.items() if tp.topic in topics and meta.offset >= 0}

    async def ends(self, topic: str) -> dict[Any, int]:
        from aiokafka import TopicPartition

        await self.consumer._client.force_metadata_update()
        parts = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        return dict(await self.consumer.end_offsets(parts)) if parts else {}


# --- processes ----------------------------------------------------------------------------------

def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def config(bootstrap: str, topics: dict[str, Any], group: str, scope: str, internal: str, role: str = "both",
           full: bool = False, lateness: float = 2.0, internal_partitions: int = 3) -> dict[str, Any]:
    state: dict[str, Any] = {"scope": scope}
    if scope == "keyed":
        state.update(keyed_topic=internal, keyed_partitions=internal_partitions, keyed_role=role,
                     keyed_watermark_interval_s=0.5)
    return {
        "kafka": {"bootstrap_servers": [bootstrap], "group_id": group, "topics": topics, "commit_interval_s": 0.2},
        "rules": {"paths": [str(RULES)], "watch": False},
        "correlation": {"allowed_lateness": lateness},
        "state": state,
        "alerting": {"sinks": [{"type": "stdout", "full": full}]},
    }


async def metric(instance: Instance, name: str, label: str = "") -> float:
    response = await instance.get("/metrics")
    if response is None:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in response.text.splitlines()
               if line.startswith(name) and label in line and not line.startswith("#"))


async def wait_for(condition: Any, timeout: float, what: str, procs: Sequence[Instance] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.dir.name} died while waiting for {what}:\n{p.log()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def spy(process: Instance, out: Path) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``process`` (collapsed stacks, idle frames left out) until SIGINT."""
    out.parent.mkdir(parents=True, exist_ok=True)
    assert process.proc is not None
    return subprocess.Popen(["py-spy", "record", "--pid", str(process.proc.pid), "--format", "raw", "--rate", "250",
                             "--nonblocking", "--gil", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class LaneResult:
    lane: str
    events: int
    wall_s: float
    cpu_s: float
    stage2_cpu_s: float = 0.0
    records: float = 0.0
    internal_messages: int = 0
    internal_bytes: int = 0
    watermark_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6


async def run_lane(lane: str, bootstrap: str, create: Any, backlog: Sequence[tuple[str, bytes]], partitions: int,
                   work: Path, flush_at: float, lateness: float, *, read_internal: bool = False,
                   profile: Path | None = None) -> LaneResult:
    """One lane over ``backlog`` ((source, value) pairs), on topics of its own: the processes start
    on the empty topics; once every one holds its partitions the backlog is produced at full speed
    and the window runs until everything is committed (and, in keyed scope, applied in stage 2)."""
    tag = uuid.uuid4().hex[:8]
    group, internal = f"scale-{lane}-{tag}", f"scale-state-{tag}"
    names = topic_names(f"{lane}-{tag}")
    for topic in names.values():
        create(topic, partitions)
    rows = [Produced(names[source], value) for source, value in backlog]
    flush = [(names[source], p, value, int(flush_at * 1000)) for source, value in flush_events(flush_at).items()
             for p in range(partitions)]
    total = len(rows) + len(flush)
    topics = topics_settings(names)
    inputs = set(topics)
    scope = "instance" if lane == "instance" else "keyed"
    roles = ["stage1", "stage2"] if lane == "split" else ["both"] * (int(lane[-1]) if scope == "keyed" else 1)
    lane_dir = work / f"{lane}-{tag}"
    lane_dir.mkdir()
    shared = lane_dir / "state"
    shared.mkdir()
    procs = [Instance(lane_dir, f"p{i}", config(bootstrap, topics, group, scope, internal, role, lateness=lateness),
                      state_dir=shared)
             for i, role in enumerate(roles)]
    input_parts = len(inputs) * partitions
    try:
        async def assigned() -> bool:
            """Both groups formed: a process that joined late would move partitions while the backlog
            is read (without shared state stage 2's new owner would drop the records it had buffered)."""
            got_in = got_keyed = 0.0
            for p, role in zip(procs, roles, strict=True):
                own_in = await metric(p, "pipesentry_kafka_partitions_assigned", 'consumer="input"')
                own_keyed = await metric(p, "pipesentry_kafka_partitions_assigned", 'consumer="keyed"')
                if (role != "stage2" and not own_in) or (scope == "keyed" and role != "stage1" and not own_keyed):
                    return False
                got_in, got_keyed = got_in + own_in, got_keyed + own_keyed
            return got_in == input_parts and (scope != "keyed" or got_keyed == 3)

        async def records(kinds: Sequence[str]) -> float:
            return sum([await metric(p, "pipesentry_keyed_state_records_total", f'kind="{kind}"')
                        for p in procs for kind in kinds])

        async with Offsets(bootstrap) as offsets:
            await wait_for(assigned, 120, f"{lane}: partitions assigned", procs)
            spies = [spy(p, profile / f"{lane}-{i}.txt") for i, p in enumerate(procs)] if profile else []
            cpu0 = [cpu_s(p.proc.pid) for p in procs]  # type: ignore[union-attr]
            t0 = time.monotonic()
            await produce(bootstrap, rows, partitions, flush)

            async def inputs_done() -> bool:
                return sum((await offsets.committed(group, inputs)).values()) >= total

            await wait_for(inputs_done, 1800, f"{lane}: backlog committed", procs)
            if scope == "keyed":
                ends = await offsets.ends(internal)

                async def internal_done() -> bool:
                    got = await offsets.committed(group + "-keyed", {internal})
                    return all(got.get(tp, 0) >= end for tp, end in ends.items())

                await wait_for(internal_done, 600, f"{lane}: internal topic committed", procs)
            t1 = time.monotonic()
            unapplied = 0.0
            if scope == "keyed":  # the last records wait for the watermark (allowed lateness) to apply
                sent = await records(["sent"])

                seen = [-1.0, time.monotonic()]

                async def applied() -> bool:
                    """Every record applied, or none more for 3 s (a rebalance may count some twice)."""
                    count = await records(["applied", "late", "duplicate", "overflow", "unknown"])
                    if count != seen[0]:
                        seen[:] = [count, time.monotonic()]
                    return count >= sent or time.monotonic() - seen[1] > 3.0

                await wait_for(applied, 60, f"{lane}: every state record applied", procs)
                unapplied = max(0.0, sent - seen[0])
                if unapplied:  # counted in the figures (``unapplied``)
                    print(f"{lane}: {unapplied:.0f} state records sent and not applied", file=sys.stderr)
            cpu1 = [cpu_s(p.proc.pid) for p in procs]  # type: ignore[union-attr]
            for s in spies:
                s.send_signal(signal.SIGINT)
                s.wait(60)
        result = LaneResult(lane, total, t1 - t0, sum(cpu1) - sum(cpu0))
        result.extra["unapplied"] = unapplied
        result.extra["late"] = sum([await metric(p, "pipesentry_detector_skips_total", 'reason="late"') for p in procs])
        result.extra["alerts"] = sum(len(p.stdout.read_bytes().splitlines()) for p in procs)
        if scope == "keyed":
            result.records = await records(["sent"])
        if lane == "split":
            result.stage2_cpu_s = cpu1[1] - cpu0[1]
        if read_internal:
            result.internal_messages, result.internal_bytes, result.watermark_bytes = await topic_bytes(bootstrap,
                                                                                                    internal)
        return result
    finally:
        for p in procs:
            p.stop()


async def latency(bootstrap: str, create: Any, partitions: int, rate: float, seconds: float, heavy_share: float,
                  hosts: int, work: Path, lateness: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    names = topic_names(f"live-{uuid.uuid4().hex[:6]}")
    for topic in names.values():
        create(topic, partitions)
    tag = uuid.uuid4().hex[:8]
    lane_dir = work / f"latency-{tag}"
    lane_dir.mkdir()
    proc = Instance(lane_dir, "p0", config(bootstrap, topics_settings(names), f"scale-live-{tag}", "keyed",
                                           f"scale-live-state-{tag}", full=True, lateness=lateness))
    templates = [(s, e) for _, s, e in mix(20_000, 0.0, hosts, 5) if live(s, e, 0.0) is not None]
    rng = random.Random(3)
    sent: dict[str, float] = {}
    try:
        async def ready() -> bool:
            return (await metric(proc, "pipesentry_kafka_partitions_assigned", 'consumer="input"') == len(names)
                    * partitions and await metric(proc, "pipesentry_kafka_partitions_assigned",
                                                  'consumer="keyed"') == 3)

        await wait_for(ready, 120, "latency: partitions assigned", [proc])
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
        await producer.start()
        try:
            begin = time.time()
            count = int(rate * seconds)
            for i in range(count):
                due = begin + i / rate
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                if rng.random() < heavy_share:
                    source, event = heavy_event(rng, now, hosts)
                else:
                    source, template = templates[i % len(templates)]
                    event = live(source, template, now)  # type: ignore[assignment]
                at = time.time()
                meta = await (await producer.send(names[source], orjson.dumps(event)))
                sent[f"kafka:{meta.topic}:{meta.partition}:{meta.offset}"] = at
        finally:
            await producer.stop()
        settle = time.monotonic() + lateness + 10
        while time.monotonic() < settle:
            await asyncio.sleep(0.5)
    finally:
        proc.stop()
    delays = []
    for line in proc.stdout.read_bytes().splitlines():
        doc = orjson.loads(line)
        ps = doc.get("pipesentry", {})
        if ps.get("rule_kind") != "correlation":
            continue
        sent_at = sent.get(ps.get("origin", {}).get("token", ""))
        if sent_at is not None:
            delays.append(datetime.fromisoformat(doc["event"]["created"]).timestamp() - sent_at)
    delays.sort()
    if not delays:
        return {"alerts": 0}
    return {"alerts": len(delays), "p50_s": round(delays[len(delays) // 2], 3),
            "p99_s": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 3), "rate": rate,
            "seconds": seconds, "allowed_lateness_s": lateness}


# --- figures ------------------------------------------------------------------------------------

def spread(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def summarise(results: list[LaneResult], input_bytes: int, events: int, demo: LaneResult | None,
              demo_bytes: int) -> dict[str, Any]:
    by: dict[str, list[LaneResult]] = {}
    for r in results:
        by.setdefault(r.lane, []).append(r)
    out: dict[str, Any] = {"lanes": {}}
    for lane, rows in by.items():
        out["lanes"][lane] = {"events_per_s": spread([r.events_per_s for r in rows], 0),
                              "cpu_us_per_event": spread([r.cpu_us_per_event for r in rows], 1),
                              "runs": len(rows), "unapplied": sum(r.extra.get("unapplied", 0) for r in rows),
                              "late": [r.extra.get("late") for r in rows],
                              "alerts": [r.extra.get("alerts") for r in rows]}
    if "instance" in by and "keyed-1" in by:
        pairs = [k.cpu_us_per_event / i.cpu_us_per_event for k, i in zip(by["keyed-1"], by["instance"], strict=False)]
        out["ratio_keyed_vs_instance"] = spread(pairs, 2)
    if "split" in by:
        out["stage2_us_per_record"] = spread([r.stage2_cpu_s / r.records * 1e6 for r in by["split"] if r.records], 2)
        if "instance" in by:
            out["split_ratio_vs_instance"] = spread(
                [s.cpu_us_per_event / i.cpu_us_per_event for s, i in zip(by["split"], by["instance"], strict=False)],
                2)
    keyed1 = [r for r in by.get("keyed-1", []) if r.internal_bytes]
    if keyed1:
        r = keyed1[0]
        out["internal"] = {"messages": r.internal_messages, "bytes": r.internal_bytes,
                           "records_per_event": round(r.records / events, 3),
                           "bytes_per_event": round(r.internal_bytes / events, 1),
                           "watermark_bytes": r.watermark_bytes,
                           "input_bytes_per_event": round(input_bytes / events, 1),
                           "state_share": round((r.internal_bytes - r.watermark_bytes) / input_bytes, 4),
                           "share_with_watermarks": round(r.internal_bytes / input_bytes, 4)}
    if demo is not None:
        out["demo_state_share"] = round((demo.internal_bytes - demo.watermark_bytes) / demo_bytes, 4)
        out["demo_share_with_watermarks"] = round(demo.internal_bytes / demo_bytes, 4)
        out["demo_internal"] = {"events": demo.events, "messages": demo.internal_messages,
                                "bytes": demo.internal_bytes, "input_bytes": demo_bytes,
                                "watermark_bytes": demo.watermark_bytes,
                                "records": demo.records}
    return out


def markdown(summary: dict[str, Any]) -> str:
    lines = ["| lane | events/s (median, min-max) | CPU µs/event (median, min-max) | runs | alerts | skipped late |",
             "| --- | --- | --- | --- | --- | --- |"]
    for lane in LANES:
        row = summary["lanes"].get(lane)
        if row:
            e, c = row["events_per_s"], row["cpu_us_per_event"]
            lines.append(f"| {lane} | {e['median']:,.0f} ({e['min']:,.0f}-{e['max']:,.0f}) | "
                         f"{c['median']} ({c['min']}-{c['max']}) | {row['runs']} | "
                         f"{'/'.join(str(a) for a in row['alerts'])} | {'/'.join(f'{x:.0f}' for x in row['late'])} |")
    lines.append("")
    for key in ("ratio_keyed_vs_instance", "split_ratio_vs_instance", "stage2_us_per_record"):
        if key in summary:
            s = summary[key]
            lines.append(f"- `{key}`: {s['median']} ({s['min']}-{s['max']})")
    if "internal" in summary:
        i = summary["internal"]
        lines.append(f"- internal topic (keyed-1, heavy mix): {i['messages']:,} messages, {i['bytes_per_event']} B "
                     f"per input event ({i['records_per_event']} state records), input {i['input_bytes_per_event']} B "
                     f"per event: `state_share` {i['state_share']:.1%} (with the watermarks "
                     f"{i['share_with_watermarks']:.1%})")
    if "demo_state_share" in summary:
        d = summary["demo_internal"]
        lines.append(f"- `demo_state_share` (demo mix, {d['events']:,} events, {d['records']:.0f} state records, "
                     f"{d['messages']:,} messages): {summary['demo_state_share']:.1%} (with the watermarks "
                     f"{summary['demo_share_with_watermarks']:.1%})")
    if "latency" in summary:
        lat = summary["latency"]
        if lat.get("alerts"):
            lines.append(f"- latency produce -> correlation alert at {lat['rate']:.0f} events/s for "
                         f"{lat['seconds']:.0f} s, allowed_lateness {lat['allowed_lateness_s']} s: p50 "
                         f"{lat['p50_s']} s, p99 {lat['p99_s']} s ({lat['alerts']} alerts)")
        else:
            lines.append("- latency: no correlation alert")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from devservices.kafka import KafkaServer

    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        work = Path(tmp)
        broker = KafkaServer.start(work / "kafka")
        try:
            bootstrap = broker.bootstrap
            rows = mix(args.events, args.heavy_share, args.hosts, args.seed)
            backlog = [(s, orjson.dumps(e)) for _, s, e in rows]
            flush_at = rows[-1][0] + args.backlog_lateness + 3600.0
            input_bytes = sum(len(v) for _, v in backlog)
            demo_rows = mix(args.demo_events, 0.0, 1, args.seed)
            demo_backlog = [(s, orjson.dumps(e)) for _, s, e in demo_rows]
            demo_flush_at = demo_rows[-1][0] + args.backlog_lateness + 3600.0
            demo_bytes = sum(len(v) for _, v in demo_backlog)
            lanes = [lane for lane in LANES if lane in args.lanes]
            profile = Path(args.profile) if args.profile else None
            results: list[LaneResult] = []
            for round_no in range(args.rounds):
                shift = round_no % len(lanes)
                for lane in lanes[shift:] + lanes[:shift]:
                    result = await run_lane(lane, bootstrap, broker.create_topic, backlog, args.partitions, work,
                                            flush_at, args.backlog_lateness, read_internal=lane == "keyed-1" and round_no == 0, profile=profile)
                    results.append(result)
                    print(f"round {round_no} {lane}: {result.events_per_s:,.0f} events/s, "
                          f"{result.cpu_us_per_event:.1f} µs CPU/event", file=sys.stderr, flush=True)
            demo = None
            if "keyed-1" in lanes:
                demo = await run_lane("keyed-1", bootstrap, broker.create_topic, demo_backlog, args.partitions, work,
                                      demo_flush_at, args.backlog_lateness, read_internal=True)
            summary = summarise(results, input_bytes, len(backlog), demo, demo_bytes)
            if args.seconds > 0:
                summary["latency"] = await latency(bootstrap, broker.create_topic, args.partitions, args.rate,
                                                   args.seconds, args.heavy_share, args.live_hosts, work,
                                                   args.lateness)
        finally:
            broker.stop()
    summary.update(events=args.events, heavy_share=args.heavy_share, partitions=args.partitions, rounds=args.rounds,
                   nproc=os.cpu_count(), load_avg_1m=round(os.getloadavg()[0], 2))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="backlog of the correlation-heavy mix")
    parser.add_argument("--demo-events", type=int, default=20_000, help="backlog of the plain demo mix")
    parser.add_argument("--heavy-share", type=float, default=0.3)
    parser.add_argument("--hosts", type=int, default=300)
    parser.add_argument("--live-hosts", type=int, default=10, help="latency run: hosts and client addresses")
    parser.add_argument("--partitions", type=int, default=3, help="per input topic")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lanes", default=",".join(LANES))
    parser.add_argument("--rate", type=float, default=500.0, help="latency run: events/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="latency run: duration (0: skip)")
    parser.add_argument("--lateness", type=float, default=2.0, help="latency run: correlation.allowed_lateness")
    parser.add_argument("--backlog-lateness", type=float, default=2.0,
                        help="backlog lanes: correlation.allowed_lateness")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", help="py-spy every lane's processes into this directory (collapsed stacks)")
    parser.add_argument("--quick", action="store_true", help="smoke test: small backlog, one round")
    parser.add_argument("--json", help="write the figures as JSON to this file")
    parser.add_argument("--markdown", help="write the table to this file")
    args = parser.parse_args()
    args.lanes = set(args.lanes.split(","))
    if args.quick:
        args.events, args.demo_events, args.rounds, args.seconds = 15_000, 6000, 1, 8.0
    summary = asyncio.run(main_async(args))
    table = markdown(summary)
    print(table)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
