"""A real Prometheus (Debian package) scrapes pipesentry's metrics and a PromQL
query over its HTTP API sees the alert and sink counters rise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import start_http_server

from devservices.process import free_port
from devservices.prometheus import PrometheusServer
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from service.metrics import REGISTRY
from tests.support.alerts import alert, rule

pytestmark = pytest.mark.integration


@pytest.fixture
def metrics_endpoint() -> Iterator[str]:
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=REGISTRY)
    yield f"127.0.0.1:{port}"
    server.shutdown()
    thread.join(5)


def value(prom: PrometheusServer, promql: str) -> float:
    result = prom.query(promql)
    return float(result[0]["value"][1]) if result else 0.0


async def wait_value(prom: PrometheusServer, promql: str, at_least: float, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        v = await asyncio.to_thread(value, prom, promql)
        if v >= at_least:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{promql} stayed at {v}, expected >= {at_least}")
        await asyncio.sleep(0.3)


async def test_prometheus_sees_alert_counters_rise(prometheus_server: PrometheusServer, metrics_endpoint: str,
                                                  tmp_path: Path) -> None:
    prometheus_server.set_targets([metrics_endpoint])
    settings = AlertingSettings.model_validate({
        "sinks": [{"type": "store"}], "spool": {"fsync": "never"},
        "suppression": {"policies": [{"rules": ["prom-rule"], "group_by": ["user"], "window_s": 600}]}})
    router = AlertRouter(settings, tmp_path)
    await router.start()
    try:
        r = rule("prom-rule", "medium")
        await router.submit([alert(i, r=r, event={"user": f"u{i % 2}"}) for i in range(3)])
        await router.wait_idle(10)
        q = 'pipesentry_alerts_total{rule_id="prom-rule",level="medium"}'
        first = await wait_value(prometheus_server, q, 3)
        await router.submit([alert(100 + i, r=r, event={"user": "u9"}) for i in range(4)])
        await router.wait_idle(10)
        assert await wait_value(prometheus_server, q, first + 4) == first + 4
        await wait_value(prometheus_server, 'pipesentry_alerts_suppressed_total{reason="window"}', 4)
        await wait_value(prometheus_server, 'pipesentry_sink_deliveries_total{sink="store"}', 3)
        assert await asyncio.to_thread(value, prometheus_server, 'pipesentry_spool_records{sink="store"}') == 0
    finally:
        await router.stop()
