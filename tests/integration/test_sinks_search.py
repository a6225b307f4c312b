"""The search sink against real nodes: OpenSearch 2.19 (opensearch-py), Elasticsearch 8.19 and 9.1
(the official client, declaring the server's major).

Each test runs once per node (``any_search_node``): mappings from the published template, no
duplicates on re-delivery, a bulk partial failure (items of a blocked index: 429 on OpenSearch,
403 on Elasticsearch, see the test) retried until delivered, a mapping conflict dead-lettered, and the node killed mid-stream: alerts spool and
arrive exactly once by ``_id`` after the restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from detectors.alert import Alert
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from tests.support.alerts import alert, rule
from tests.support.waits import until

from .conftest import AnySearchNode

pytestmark = pytest.mark.integration
DAY = 86_400.0
T0 = 1_750_000_000.0  # 2025-06-15


def settings(node: AnySearchNode, prefix: str, **extra: Any) -> AlertingSettings:
    sink = {"type": "elasticsearch", "name": "search", "flavor": node.flavor, "hosts": [node.url],
            "index_prefix": prefix, "batch_size": 200, "item_retries": 1,
            "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5, "breaker_failures": 3,
                      "breaker_reset_s": 0.5}, **extra}
    return AlertingSettings.model_validate({"sinks": [sink], "spool": {"fsync": "never"}})


def alerts(n: int, start: int = 0, ts: float = T0, rule_id: str = "search-rule") -> list[Alert]:
    r = rule(rule_id, "high", ("attack.execution", "attack.t1059.004"))
    return [alert(start + i, r=r, ts=ts + i, event={"user": f"u{i % 7}", "cmd": "curl | sh", "n": i})
            for i in range(n)]


def es(node: AnySearchNode, method: str, path: str, body: Any = None) -> dict[str, Any]:
    resp = httpx.request(method, node.url + path, json=body, timeout=30)
    assert resp.status_code < 300, resp.text
    result: dict[str, Any] = resp.json()
    return result


def ids_in(node: AnySearchNode, index: str) -> list[str]:
    """The document ids in ``index``; none while an index the sink just created has no started shard yet."""
    refresh = httpx.post(f"{node.url}/{index}/_refresh?ignore_unavailable=true", timeout=30)
    search = httpx.post(f"{node.url}/{index}/_search?ignore_unavailable=true",
                        json={"size": 10_000, "_source": False}, timeout=30)
    if 503 in (refresh.status_code, search.status_code):  # "all shards failed": the primary is still starting
        return []
    assert search.status_code < 300, search.text
    return [h["_id"] for h in search.json()["hits"]["hits"]]


async def test_mappings_and_no_duplicates(any_search_node: AnySearchNode, tmp_path: Path) -> None:
    router = AlertRouter(settings(any_search_node, "ps-map"), tmp_path)
    await router.start()
    batch = alerts(40) + alerts(10, start=100, ts=T0 + DAY)
    await router.submit(batch)
    await router.wait_idle(60)
    await router.submit(batch)  # re-delivery of the same events
    await router.wait_idle(60)
    await router.stop()

    assert "ps-map-template" in json.dumps(es(any_search_node, "GET", "/_index_template/ps-map-template"))
    day1, day2 = "ps-map-2025.06.15", "ps-map-2025.06.16"
    ids = ids_in(any_search_node, day1) + ids_in(any_search_node, day2)
    assert sorted(ids) == sorted(a.id for a in batch)  # each alert exactly once
    mapping = es(any_search_node, "GET", f"/{day1}/_mapping")[day1]["mappings"]["properties"]
    assert mapping["rule"]["properties"]["author"]["type"] == "keyword"
    assert mapping["event"]["properties"]["severity"]["type"] == "long"
    assert mapping["@timestamp"]["type"] == "date"
    assert mapping["pipesentry"]["properties"]["details"]["enabled"] is False
    doc = es(any_search_node, "GET", f"/{day1}/_doc/{batch[0].id}")["_source"]
    assert doc["threat"]["technique"]["subtechnique"]["id"] == ["T1059.004"]
    found = es(any_search_node, "POST", f"/{day1}/_search",
               {"query": {"term": {"threat.technique.id": "T1059"}}, "size": 0})
    assert found["hits"]["total"]["value"] == 40


async def test_data_stream_mode(any_search_node: AnySearchNode, tmp_path: Path) -> None:
    router = AlertRouter(settings(any_search_node, "ps-ds", mode="datastream"), tmp_path)
    await router.start()
    batch = alerts(25, rule_id="ds-rule")
    await router.submit(batch)
    await router.submit(batch)  # creates answered 409: already there, not a failure
    await router.wait_idle(60)
    status = router.status()["search"]
    await router.stop()
    # `_resolve/index`, not `GET /_data_stream`: Elasticsearch's integration-test distribution has no
    # data-stream endpoints (405), yet a bulk `create` still makes the stream from the template.
    streams = es(any_search_node, "GET", "/_resolve/index/ps-ds")["data_streams"]
    assert [s["name"] for s in streams] == ["ps-ds"]
    assert streams[0]["backing_indices"][0].startswith(".ds-ps-ds-")
    assert sorted(ids_in(any_search_node, "ps-ds")) == sorted(a.id for a in batch)
    assert status["dead_lettered"] == 0


async def test_bulk_partial_failure_retried_and_conflict_dead_lettered(any_search_node: AnySearchNode,
                                                                       tmp_path: Path) -> None:
    blocked, conflicting = "ps-part-2025.06.15", "ps-part-2025.06.17"
    # The 429 block (what a full disk sets) on OpenSearch. Elasticsearch's disk monitor owns that
    # block and released it by itself within seconds in these runs (the index settings lost it
    # before the sink's first bulk), so there the index gets a write block: items answer 403,
    # retriable as well (a refused write is the operator's to fix, not a reason to drop alerts).
    block, status = (("index.blocks.read_only_allow_delete", 429) if any_search_node.flavor == "opensearch"
                     else ("index.blocks.write", 403))
    es(any_search_node, "PUT", f"/{blocked}", {"settings": {"number_of_replicas": 0}})
    es(any_search_node, "PUT", f"/{blocked}/_settings", {block: True})
    es(any_search_node, "PUT", f"/{conflicting}", {"settings": {"number_of_replicas": 0},
                                              "mappings": {"properties": {"rule": {"properties": {
                                                  "name": {"type": "integer"}}}}}})
    router = AlertRouter(settings(any_search_node, "ps-part"), tmp_path)
    await router.start()
    to_blocked = alerts(10)
    to_free = alerts(10, start=100, ts=T0 + DAY)
    to_conflict = alerts(3, start=200, ts=T0 + 2 * DAY)
    await router.submit(to_free[:5] + to_blocked + to_free[5:] + to_conflict)
    worker = router.workers["search"]
    # the free day lands; the blocked items are retried (429/403), holding the rest of the batch spooled
    await until(lambda: len(ids_in(any_search_node, "ps-part-2025.06.16")) >= 5, 30, "first free items")
    try:
        await until(lambda: worker.spool is not None and worker.spool.pending > 0
                         and f"HTTP {status}" in (worker.last_error or ""), 60,
                    f"{status} items held back for retry")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status {router.status()['search']}, blocked index "
                             f"{es(any_search_node, 'GET', f'/{blocked}/_settings')}") from None
    es(any_search_node, "PUT", f"/{blocked}/_settings", {block: None})
    await router.wait_idle(60)
    await router.stop()
    assert sorted(ids_in(any_search_node, blocked)) == sorted(a.id for a in to_blocked)
    assert sorted(ids_in(any_search_node, "ps-part-2025.06.16")) == sorted(a.id for a in to_free)
    dead = [json.loads(line) for line in (tmp_path / "alerting" / "dead-letter" / "search.jsonl").read_text()
            .splitlines()]
    assert sorted(d["record"]["event"]["id"] for d in dead) == sorted(a.id for a in to_conflict)
    assert all("HTTP 400" in d["reason"] for d in dead)


@pytest.mark.slow
async def test_node_down_mid_stream_then_exactly_once(any_search_node_factory: Callable[[], AnySearchNode],
                                                     tmp_path: Path) -> None:
    node = await asyncio.to_thread(any_search_node_factory)
    router = AlertRouter(settings(node, "ps-fault"), tmp_path)
    await router.start()
    sent: list[Alert] = []
    for i in range(5):
        batch = alerts(40, start=i * 40)
        await router.submit(batch)
        sent += batch
    await router.wait_idle(60)
    await asyncio.to_thread(node.kill)
    for i in range(5, 10):  # the node is down: submit still returns promptly (spooled)
        batch = alerts(40, start=i * 40)
        t = time.monotonic()
        await router.submit(batch)
        assert time.monotonic() - t < 2.0
        sent += batch
    worker = router.workers["search"]
    assert worker.spool is not None
    await until(lambda: worker.breaker.open, 30, "circuit to open")
    assert worker.spool.pending >= 200
    await asyncio.to_thread(node.restart)
    await router.wait_idle(120)
    await router.stop()
    ids = ids_in(node, "ps-fault-*")
    assert len(ids) == len(sent) == 400
    assert sorted(ids) == sorted(a.id for a in sent)
