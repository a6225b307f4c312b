"""Per-token ingest rate limits, and a large ingest that does not hold up the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service import metrics
from service.api.errors import ErrorBody
from service.api.ratelimit import IngestLimiter
from service.config import IngestRateSettings
from tests.support.api import ADMIN, INGESTER, MATCHING, auth
from tests.support.api import build_api as build


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_admits_until_in_debt_then_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = IngestLimiter(IngestRateSettings(events_per_s=10, bytes_per_s=1000, burst_s=2), clock)
    assert limiter.admit("a", 500) == 0
    limiter.charge_events("a", 50)  # 20 saved up: 30 events of debt, 3 s at 10/s
    assert limiter.admit("a", 1) == 3
    assert limiter.admit("b", 1) == 0  # every caller has its own buckets
    clock.now += 2.5
    assert limiter.admit("a", 1) == 1  # 5 events of debt left: half a second, rounded up
    clock.now += 0.5
    assert limiter.admit("a", 2500) == 0  # out of debt: one large request still passes
    assert limiter.admit("a", 1) == 1  # ... and its 500 bytes of debt wait half a second
    clock.now += 1000
    assert limiter.admit("a", 1) == 0 and limiter._buckets[("a", "bytes")].level <= 2000  # capped at the burst


def test_switched_off_limits_admit_everything() -> None:
    limiter = IngestLimiter(IngestRateSettings(events_per_s=None, bytes_per_s=None), Clock())
    limiter.charge_events("a", 10**9)
    assert limiter.admit("a", 10**12) == 0


async def test_a_token_over_its_rate_gets_429_with_retry_after_and_others_do_not(tmp_path: Path) -> None:
    client, router, _ = build(tmp_path, api={"ingest_rate": {"events_per_s": 1, "burst_s": 1}})
    before = metrics.HTTP_RATE_LIMITED.labels("shipper")._value.get()
    five = b"\n".join([MATCHING] * 5)
    async with client:
        first = await client.post("/api/v1/events", content=five, headers=auth(INGESTER))
        assert first.status_code == 200 and first.json()["accepted"] == 5  # one burst in debt: admitted
        second = await client.post("/api/v1/events", content=MATCHING, headers=auth(INGESTER))
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
        assert "shipper" in ErrorBody.model_validate(second.json()).detail and INGESTER not in second.text
        assert (await client.post("/api/v1/events", content=MATCHING, headers=auth(ADMIN))).status_code == 200
        exposition = (await client.get("/metrics")).text
    assert metrics.HTTP_RATE_LIMITED.labels("shipper")._value.get() == before + 1
    assert 'pipesentry_http_rate_limited_total{token="shipper"}' in exposition and INGESTER not in exposition
    assert len(router.accepted) == 5 + 1  # the refused request raised nothing


async def test_the_byte_rate_limits_too(tmp_path: Path) -> None:
    client, _, _ = build(tmp_path, api={"ingest_rate": {"events_per_s": None, "bytes_per_s": 1024, "burst_s": 1}})
    async with client:
        big = b"\n".join([MATCHING] * 40)  # about 3 kB
        assert (await client.post("/api/v1/events", content=big, headers=auth(INGESTER))).status_code == 200
        again = await client.post("/api/v1/events", content=MATCHING, headers=auth(INGESTER))
    assert again.status_code == 429 and int(again.headers["retry-after"]) >= 1


async def test_healthz_answers_while_a_large_body_is_being_ingested(tmp_path: Path) -> None:
    """The body is split cooperatively: /healthz, asked once the body has arrived, answers
    before the ingest reaches the pipeline (and so before its response)."""
    client, _, _ = build(tmp_path)
    ctx = client._transport.app.state.context
    real, order = ctx.pipeline, []

    class Recording:
        async def ingest(self, name: str, messages: Any, spec: Any) -> Any:
            order.append("pipeline")
            return await real.ingest(name, messages, spec)

    ctx.pipeline = Recording()
    arrived = asyncio.Event()
    line = b'{"message": "build step %d finished", "@timestamp": "2026-01-02T03:04:05Z"}\n'

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, 60_000, 5_000):
            yield b"".join(line % i for i in range(start, start + 5_000))
        arrived.set()

    async with client:
        ingest = asyncio.create_task(client.post("/api/v1/events", content=body(), headers=auth(INGESTER)))
        await arrived.wait()
        health = await client.get("/healthz")
        order.append("healthz")
        response = await ingest
    assert health.status_code == 200 and response.status_code == 200 and response.json()["accepted"] == 60_000
    assert order == ["healthz", "pipeline"]


@pytest.mark.parametrize("array", [False, True])
def test_split_bodies_are_the_same_either_way(array: bool) -> None:
    from service.sources.http import parse_body, parse_body_async

    events = [b'{"n":%d}' % i for i in range(5000)]
    body = (b"[" + b",".join(events) + b"]") if array else b"\n\n".join(events)
    sync = parse_body(body, 1.0, max_events=10_000)
    cooperative = asyncio.run(parse_body_async(body, 1.0, max_events=10_000))
    assert [m.value for m in sync.messages] == [m.value for m in cooperative.messages] == events
