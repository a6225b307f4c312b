"""Crash points of stateful detection: SIGKILL ``pipesentry run`` at chosen points, restart, compare alert ids.

A stream of SSH events (failures keyed by host, successes, root logins) goes to one
Kafka partition in chunks. After each chunk the running instance is SIGKILLed at a
point chosen by a condition — the first commits of a partition before its first
periodic snapshot, right after a snapshot file was written, as soon as alerts of the
chunk were printed (before their commit), or once the committed offset passed a
point — and restarted on the same data dir. At the end the set of alert ids printed
by all runs must equal the ids ``pipesentry eval`` gives for the same stream: a
repeated alert is fine when its id is the same (the stores dedup by id), a missing
id is a lost alert, an extra one a double count.

``tests/integration/test_crash_points.py`` runs a fixed handful of points; this
module, run as a script, runs randomized rounds on a private broker and writes JSON:

    python -m bench.crash_points --rounds 5 --seed 7 --out crash-points.json

The heartbeat is effectively off (``state.heartbeat_interval_s``) and lateness 0, so
no alert depends on wall time: eval and run must agree exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import yaml

from tests.support.instances import ServiceProcess, write_config
from tests.support.waits import until

RULES = """
title: SSH Failed Password
id: 0c3c7a4e-5d00-4c00-8000-00000000c001
name: crash_ssh_failed
author: bench
logsource: {product: linux, service: sshd}
detection:
    sel: {message|contains: 'Failed password'}
    condition: sel
level: low
---
title: SSH Accepted Password
id: 0c3c7a4e-5d00-4c00-8000-00000000c002
name: crash_ssh_accepted
author: bench
logsource: {product: linux, service: sshd}
detection:
    sel: {message|contains: 'Accepted password'}
    condition: sel
level: low
---
title: SSH Root Login Attempt
id: 0c3c7a4e-5d00-4c00-8000-00000000c003
author: bench
logsource: {product: linux, service: sshd}
detection:
    sel: {message|contains: 'for root'}
    condition: sel
level: medium
---
title: SSH Brute Force On One Host
id: 0c3c7a4e-5d00-4c00-8000-00000000c004
name: crash_ssh_burst
author: bench
correlation:
    type: event_count
    rules: [crash_ssh_failed]
    group-by: [host]
    timespan: 10m
    condition: {gte: 5}
level: high
---
title: SSH Login Succeeds After A Brute Force
id: 0c3c7a4e-5d00-4c00-8000-00000000c005
author: bench
correlation:
    type: temporal_ordered
    rules: [crash_ssh_burst, crash_ssh_accepted]
    group-by: [host]
    timespan: 10m
level: critical
"""
LOGSOURCE = {"product": "linux", "service": "sshd"}
T0 = 1_767_323_045.0


def make_stream(rng: random.Random, hosts: int, length: int) -> list[bytes]:
    """Events one second apart: per host, runs of failures (some for root) sometimes ended by a success."""
    names = [f"web-{i}" for i in range(hosts)]
    pending = dict.fromkeys(names, 0)
    out: list[bytes] = []
    for n in range(length):
        host = rng.choice(names)
        roll = rng.random()
        if roll < 0.6:
            user = "root" if rng.random() < 0.1 else rng.choice(["deploy", "admin", "git"])
            message = f"Failed password for {user} from 203.0.113.{n % 250} port 22 ssh2"
            pending[host] += 1
        elif roll < 0.75 or pending[host] >= rng.randint(4, 9):
            message = f"Accepted password for deploy from 198.51.100.{n % 250} port 22 ssh2"
            pending[host] = 0
        else:
            message = f"session opened for user git n={n}"
        out.append(orjson.dumps({"time": T0 + n, "host": host, "message": message}))
    return out


def write_rules(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "crash.yml").write_text(RULES)
    return directory


def expected_ids(rules: Path, stream: list[bytes], topic: str, workdir: Path) -> set[str]:
    """The alert ids ``pipesentry eval`` gives for ``stream`` read from ``topic`` partition 0 (line n = offset n-1)."""
    from detectors.alert import alert_id

    events = workdir / "stream.ndjson"
    events.write_bytes(b"\n".join(stream) + b"\n")
    logsource = ",".join(f"{k}={v}" for k, v in LOGSOURCE.items())
    config = workdir / "eval.yml"  # the run's correlation settings (eval otherwise takes the defaults)
    config.write_text(yaml.safe_dump({"rules": {"paths": [str(rules)]}, "correlation": {"allowed_lateness": 0}}))
    done = subprocess.run([sys.executable, "-m", "service.cli", "eval", "--config", str(config),
                           "--logsource", logsource, str(events)], capture_output=True, check=True, timeout=120)
    ids = set()
    for line in done.stdout.splitlines():
        record = orjson.loads(line)
        key = (record.get("details") or {}).get("alert_key") or f"kafka:{topic}:0:{record['line'] - 1}"
        ids.add(alert_id(record["rule_id"], str(key)))
    return ids


def service_config(bootstrap: str, topic: str, group: str, rules: Path, data_dir: Path,
                   snapshot_interval_s: float) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "kafka": {"bootstrap_servers": [bootstrap], "group_id": group, "commit_interval_s": 0.2,
                  "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_batch": 50,
                  "connect_backoff_initial_s": 0.2, "connect_backoff_max_s": 1.0,
                  "topics": {topic: {"decoder": "json", "logsource": LOGSOURCE}}},
        "rules": {"paths": [str(rules)], "watch": False},
        "correlation": {"allowed_lateness": 0},
        "state": {"scope": "partition", "snapshot_interval_s": snapshot_interval_s,
                  "heartbeat_interval_s": 86_400},
        "alerting": {"sinks": [{"type": "stdout"}]},
        "api": {"enabled": False}, "stdin": {"enabled": False},
    }


def start_run(workdir: Path, config: dict[str, Any], index: int) -> ServiceProcess:
    """``pipesentry run`` on ``config`` (written to ``workdir/pipesentry.yml``); run ``index``'s output files."""
    run = ServiceProcess(write_config(workdir / "pipesentry.yml", config), workdir / f"stdout-{index}.jsonl",
                         workdir / f"stderr-{index}.log")
    run.start()
    return run


@dataclass
class Observer:
    """Reads what a crash point waits on: the group's committed offset and the partition's snapshot offset."""

    bootstrap: str
    topic: str
    group: str
    data_dir: Path
    consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                                         enable_auto_commit=False)
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def committed(self) -> int:
        from aiokafka import TopicPartition

        offset = await self.consumer.committed(TopicPartition(self.topic, 0))
        return offset if offset is not None else 0

    def snapshot_offset(self) -> int | None:
        path = self.data_dir / "state" / quote(f"kafka:{self.topic}:0", safe="") / "partition.json"
        try:
            doc = orjson.loads(path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        offset = doc.get("offset") if isinstance(doc, dict) else None
        return offset if isinstance(offset, int) else None


@dataclass
class KillPoint:
    """Where to SIGKILL after a chunk was produced (see :func:`condition`)."""

    kind: str
    """``before_first_snapshot`` (the run's first commit), ``after_snapshot`` (a snapshot file past the one
    the run started from), ``alerts_printed`` (an alert of the new chunk printed) or ``committed``."""
    at: int = 0
    """For ``committed``: the offset the group must have committed."""


@dataclass
class Outcome:
    points: list[dict[str, Any]] = field(default_factory=list)
    expected: int = 0
    seen: int = 0
    printed: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    extra_alerts: list[dict[str, Any]] = field(default_factory=list)
    """The printed alerts behind ``extra`` (with the run that printed them)."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, partition=0) for value in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def crash_run(bootstrap: str, create_topic: Callable[[str], None], workdir: Path, stream: list[bytes],
                    chunks: list[int], points: list[KillPoint], snapshot_interval_s: float = 3.0,
                    timeout: float = 90.0) -> Outcome:
    """Produce ``stream`` in ``chunks`` (sizes), killing the instance at ``points[i]`` after chunk i; then
    finish the stream with a last run stopped cleanly, and compare every printed alert id with eval's."""
    assert len(points) == len(chunks) - 1 and sum(chunks) == len(stream)
    started = time.monotonic()
    topic = f"crash-{uuid.uuid4().hex[:8]}"
    group = f"grp-{uuid.uuid4().hex[:8]}"
    create_topic(topic)
    rules = write_rules(workdir / "rules")
    data_dir = workdir / "data"
    config = service_config(bootstrap, topic, group, rules, data_dir, snapshot_interval_s)
    expected = expected_ids(rules, stream, topic, workdir)
    observer = Observer(bootstrap, topic, group, data_dir)
    await observer.start()
    outcome = Outcome(expected=len(expected))
    printed: list[str] = []
    documents: dict[str, dict[str, Any]] = {}
    sent = 0
    try:
        for index, size in enumerate(chunks):
            committed_before = await observer.committed()
            run = start_run(workdir, config, index)
            try:
                before = observer.snapshot_offset()
                chunk = stream[sent:sent + size]
                await produce(bootstrap, topic, chunk)
                sent += size
                if index < len(points):
                    point = points[index]
                    await until(lambda p=point, b=before, c=committed_before, r=run, chunk=(sent - size, sent):
                                     _reached(p, observer, b, c, r, chunk), timeout, f"kill point {point}", run)
                    outcome.points.append({**asdict(point), "committed": await observer.committed(),
                                           "snapshot": observer.snapshot_offset(), "sent": sent})
                    run.kill()
                else:
                    await until(lambda s=sent: _committed_at_least(observer, s), timeout,
                                     "the whole stream committed", run)
                    run.stop()
            finally:
                run.stop()
                for doc in run.alerts():
                    printed.append(doc["alert_id"])
                    documents.setdefault(doc["alert_id"], {**doc, "run": index})
    finally:
        await observer.stop()
    seen = set(printed)
    outcome.seen, outcome.printed = len(seen), len(printed)
    outcome.missing = sorted(expected - seen)
    outcome.extra = sorted(seen - expected)
    outcome.extra_alerts = [documents[i] for i in outcome.extra]
    outcome.seconds = round(time.monotonic() - started, 1)
    return outcome


async def _committed_at_least(observer: Observer, offset: int) -> bool:
    return await observer.committed() >= offset


async def _reached(point: KillPoint, observer: Observer, snapshot_before: int | None, committed_before: int,
                   run: ServiceProcess, chunk: tuple[int, int]) -> bool:
    if point.kind == "before_first_snapshot":
        # the run's first commit (its first periodic snapshot is seconds away)
        return await observer.committed() > committed_before
    if point.kind == "after_snapshot":
        snap = observer.snapshot_offset()
        return snap is not None and snap > (snapshot_before or 0)
    if point.kind == "alerts_printed":
        # an alert raised by a record of the new chunk (not one re-raised by the replay), likely before its
        # commit; a chunk without alerts: once it is committed
        return any(int(str(doc.get("source", "")).rsplit(":", 1)[-1] or -1) >= chunk[0]
                   for doc in run.alerts() if str(doc.get("source", "")).startswith("kafka:")) or (
            await observer.committed() >= chunk[1])
    if point.kind == "committed":
        return await observer.committed() >= point.at
    raise ValueError(f"unknown kill point {point.kind!r}")


def random_plan(rng: random.Random, length: int, kills: int) -> tuple[list[int], list[KillPoint]]:
    cuts = sorted(rng.sample(range(20, length - 20), kills))
    chunks = [b - a for a, b in zip([0, *cuts], [*cuts, length], strict=True)]
    points = []
    for cut in cuts:
        kind = rng.choice(["before_first_snapshot", "after_snapshot", "alerts_printed", "committed"])
        points.append(KillPoint(kind, rng.randint(max(cut - 15, 1), cut) if kind == "committed" else 0))
    return chunks, points


async def main_async(args: argparse.Namespace) -> int:
    from devservices.kafka import KafkaServer

    rng = random.Random(args.seed)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="crash-points-") as tmp:
        broker = KafkaServer.start(Path(tmp) / "kafka")
        try:
            for round_no in range(args.rounds):
                stream = make_stream(rng, args.hosts, args.length)
                chunks, points = random_plan(rng, args.length, args.kills)
                workdir = Path(tmp) / f"round-{round_no}"
                workdir.mkdir()
                outcome = await crash_run(broker.bootstrap, lambda t: broker.create_topic(t, 1), workdir, stream,
                                          chunks, points, args.snapshot_interval)
                results.append({"round": round_no, "chunks": chunks, **asdict(outcome), "ok": outcome.ok})
                print(orjson.dumps(results[-1]).decode(), flush=True)
        finally:
            broker.stop()
    summary = {"seed": args.seed, "rounds": results, "failed": sum(1 for r in results if not r["ok"])}
    Path(args.out).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return 1 if summary["failed"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--length", type=int, default=400, help="events per round")
    parser.add_argument("--hosts", type=int, default=6)
    parser.add_argument("--kills", type=int, default=4, help="SIGKILLs per round")
    parser.add_argument("--snapshot-interval", type=float, default=3.0)
    parser.add_argument("--out", default="crash-points.json")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
