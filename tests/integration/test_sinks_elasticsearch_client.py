"""The ``elasticsearch`` 8.x client path, against a local stand-in for Elasticsearch 8.

Elasticsearch itself cannot be obtained on this machine (docs/alerting.md), so
:class:`FakeElasticsearch` checks what the server checks of this client:
``compatible-with=8`` Accept/Content-Type media types, bulk NDJSON ending in a
newline, the index template body; and it answers with ``X-Elastic-Product``
(without it the official client refuses the server).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from tests.support.alerts import alert, rule

from .receivers import FakeElasticsearch

pytestmark = pytest.mark.integration
T0 = 1_750_000_000.0


@pytest.fixture
async def fake_es() -> AsyncIterator[FakeElasticsearch]:
    server = FakeElasticsearch()
    await server.start()
    yield server
    await server.stop()


def settings(url: str, **extra: object) -> AlertingSettings:
    return AlertingSettings.model_validate({
        "sinks": [{"type": "elasticsearch", "name": "es", "flavor": "elasticsearch", "hosts": [url],
                   "index_prefix": "alerts", "item_retries": 1, "api_key": "c2VjcmV0",
                   "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.2}, **extra}],
        "spool": {"fsync": "never"}})


async def test_client_path_indexes_with_ids_and_template(fake_es: FakeElasticsearch, tmp_path: Path) -> None:
    router = AlertRouter(settings(fake_es.url), tmp_path)
    await router.start()
    batch = [alert(i, r=rule("es-rule"), ts=T0 + i) for i in range(30)]
    await router.submit(batch)
    await router.submit(batch)  # re-delivery
    await router.wait_idle(20)
    await router.stop()
    template = fake_es.templates["alerts-template"]
    assert template["index_patterns"] == ["alerts-*"]
    assert template["template"]["mappings"]["properties"]["rule"]["properties"]["author"]["type"] == "keyword"
    assert sorted(_id for _, _id in fake_es.docs) == sorted(a.id for a in batch)
    assert {index for index, _ in fake_es.docs} == {"alerts-2025.06.15"}
    assert fake_es.docs[("alerts-2025.06.15", batch[0].id)]["rule"]["author"] == "Tester"
    assert set(fake_es.authorization) == {"ApiKey c2VjcmV0"}  # api_key setting
    first_line = json.loads(fake_es.bulk_bodies[0].split(b"\n")[0])
    assert first_line == {"index": {"_index": "alerts-2025.06.15", "_id": batch[0].id}}


async def test_item_failures_retried_and_rejected(fake_es: FakeElasticsearch, tmp_path: Path) -> None:
    batch = [alert(i, r=rule("es-rule"), ts=T0 + i) for i in range(10)]
    fake_es.item_failures[batch[2].id] = [503, 429, 503]  # more than the in-call retries: worker backs off
    fake_es.item_failures[batch[5].id] = [400] * 10  # mapping error: never succeeds
    router = AlertRouter(settings(fake_es.url), tmp_path)
    await router.start()
    await router.submit(batch)
    await router.wait_idle(20)
    status = router.status()["es"]
    await router.stop()
    stored = sorted(_id for _, _id in fake_es.docs)
    assert stored == sorted(a.id for i, a in enumerate(batch) if i != 5)
    assert status["dead_lettered"] == 1
    dead = (tmp_path / "alerting" / "dead-letter" / "es.jsonl").read_text().splitlines()
    assert json.loads(dead[0])["record"]["event"]["id"] == batch[5].id


async def test_whole_request_failures_back_off_then_recover(fake_es: FakeElasticsearch, tmp_path: Path) -> None:
    fake_es.fail_next, fake_es.fail_status = 4, 503
    router = AlertRouter(settings(fake_es.url), tmp_path)
    await router.start()
    batch = [alert(i, ts=T0) for i in range(5)]
    await router.submit(batch)
    await router.wait_idle(20)
    await router.stop()
    assert sorted(_id for _, _id in fake_es.docs) == sorted(a.id for a in batch)
    assert fake_es.got.requests >= 6


async def test_parallel_bulks_deliver_everything_once(fake_es: FakeElasticsearch, tmp_path: Path) -> None:
    batch = [alert(i, ts=T0 + i) for i in range(1200)]
    for a in batch[::97]:
        fake_es.item_failures[a.id] = [503, 503]  # retriable failures scattered over both chunks
    router = AlertRouter(settings(fake_es.url, batch_size=1000, parallel_bulks=2), tmp_path)
    await router.start()
    await router.submit(batch)
    await router.wait_idle(30)
    await router.stop()
    assert sorted(_id for _, _id in fake_es.docs) == sorted(a.id for a in batch)
    assert len(fake_es.bulk_bodies) >= 3  # at least two concurrent chunks, then retries


async def test_stand_in_refuses_what_elasticsearch_refuses(fake_es: FakeElasticsearch) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        plain = await client.post(f"{fake_es.url}/_bulk", content=b'{"index":{}}\n{}\n',
                                  headers={"Content-Type": "application/x-ndjson", "Accept": "application/json"})
        assert plain.status_code == 400 and "compatible-with" in plain.text
        compat = "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
        no_newline = await client.post(f"{fake_es.url}/_bulk", content=b'{"index":{"_id":"a"}}\n{}',
                                       headers={"Content-Type": compat,
                                                "Accept": "application/vnd.elasticsearch+json; compatible-with=8"})
        assert no_newline.status_code == 400 and "newline" in no_newline.text
        info = await client.get(fake_es.url + "/")
        assert info.headers["X-Elastic-Product"] == "Elasticsearch"
