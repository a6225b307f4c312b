"""The service's own registry: standard process/python series, build info, no ``*_created`` series,
and query typos counted apart from ingest rejections (``service.metrics``)."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from service import metrics
from service.metrics import REGISTRY
from tests.support.api import ANALYST, INGESTER, auth, build_api, build_ctx


def exposition() -> str:
    return generate_latest(REGISTRY).decode()


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process_* series need /proc")
def test_process_and_python_series_are_exported() -> None:
    text = exposition()
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total",
                 "python_info", "python_gc_collections_total"):
        assert f"\n{name}" in text, name


def test_no_created_series() -> None:
    metrics.SINK_DELIVERIES.labels(sink="created-check").inc()
    assert "_created" not in exposition()


def test_build_info_is_one_series_set_to_one() -> None:
    metrics.record_build_info(True)
    metrics.record_build_info(False)
    lines = [line for line in exposition().splitlines() if line.startswith("pipesentry_build_info{")]
    assert len(lines) == 1
    assert f'python="{platform.python_version()}"' in lines[0] and 'native_screen="false"' in lines[0]
    assert 'version="' in lines[0] and lines[0].endswith(" 1.0")


async def test_query_typos_are_not_ingest_rejections(tmp_path: Path) -> None:
    from httpx import ASGITransport, AsyncClient

    from service.api import create_app

    ctx, _ = build_ctx(tmp_path)
    invalid = sample("pipesentry_http_requests_rejected_total", {"reason": "invalid"})
    route = {"route": "/api/v1/alerts"}
    typos = sample("pipesentry_api_invalid_requests_total", route)
    async with AsyncClient(transport=ASGITransport(app=create_app(ctx)), base_url="http://127.0.0.1") as client:
        response = await client.get("/api/v1/alerts?limit=lots", headers=auth(ANALYST))
    assert response.status_code == 422
    assert sample("pipesentry_api_invalid_requests_total", route) == typos + 1
    assert sample("pipesentry_http_requests_rejected_total", {"reason": "invalid"}) == invalid


async def test_an_unusable_ingest_body_is_an_ingest_rejection(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    invalid = sample("pipesentry_http_requests_rejected_total", {"reason": "invalid"})
    async with client:
        response = await client.post("/api/v1/events", content=b'"just a string"\n',
                                     headers={**auth(INGESTER), "content-type": "application/x-ndjson"})
    assert response.status_code == 400
    assert sample("pipesentry_http_requests_rejected_total", {"reason": "invalid"}) == invalid + 1
