"""The shipped alerting rules (``deploy/prometheus/pipesentry-alerts.yml``) in a real Prometheus
scraping a freshly started ``pipesentry run``: a healthy fresh instance fires nothing, and a
real failure (a reload of a broken rule file) makes its alert pending.

promtool unit tests check the rules against made-up series; this checks them against the
series the service really exports from its first scrape on (a gauge that starts at 0, a
counter created at 0), which is where "fires on every healthy instance" bugs hide.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from devservices.prometheus import PrometheusServer
from service.rules import default_rules_dir
from tests.support.instances import Instance
from tests.support.rules import BROKEN_RULE, PIPED_SCRIPT_RULE
from tests.support.waits import until

pytestmark = pytest.mark.integration

RULES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "pipesentry-alerts.yml"


def scrape_as_pipesentry(prom: PrometheusServer, target: str) -> None:
    """Point Prometheus at ``target`` with ``job="pipesentry"``, the job the shipped rules select."""
    tmp = prom.targets_file.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [target], "labels": {"job": "pipesentry"}}]))
    os.replace(tmp, prom.targets_file)


def _get(prom: PrometheusServer, path: str) -> dict[str, Any]:
    response = httpx.get(f"{prom.url}{path}", timeout=5)
    response.raise_for_status()
    data: dict[str, Any] = response.json()["data"]
    return data


def evaluations(prom: PrometheusServer) -> str:
    """The pipesentry group's ``lastEvaluation`` ('' before the first evaluation)."""
    groups = _get(prom, "/api/v1/rules")["groups"]
    return next((str(g.get("lastEvaluation") or "") for g in groups if g["name"] == "pipesentry"), "")


def active_alerts(prom: PrometheusServer) -> list[dict[str, Any]]:
    """Alerts pending or firing (Prometheus lists no inactive ones here)."""
    alerts: list[dict[str, Any]] = _get(prom, "/api/v1/alerts")["alerts"]
    return alerts


async def evaluated_times(prom: PrometheusServer, count: int, timeout: float = 60) -> None:
    """Wait until the rule group has been evaluated ``count`` more times."""
    seen = {await asyncio.to_thread(evaluations, prom)}

    async def another() -> bool:
        seen.add(await asyncio.to_thread(evaluations, prom))
        return len(seen) > count

    await until(another, timeout, f"{count} rule evaluations")


async def scraped(prom: PrometheusServer, promql: str) -> bool:
    return bool(await asyncio.to_thread(prom.query, promql))


@pytest.mark.slow
async def test_shipped_rules_quiet_on_a_fresh_instance_and_fire_on_a_failed_reload(
        prometheus_factory: Any, tmp_path: Path) -> None:
    extra = tmp_path / "extra-rules"
    extra.mkdir()
    (extra / "curl.yml").write_text(PIPED_SCRIPT_RULE)
    config = {"rules": {"paths": [str(default_rules_dir()), str(extra)], "watch": False},
              "alerting": {"sinks": [{"type": "stdout"}]}}
    instance = Instance(tmp_path, "fresh", config)
    try:
        prom: PrometheusServer = prometheus_factory(scrape_interval="1s", rule_files=[RULES_FILE])
        await until(instance.ready, 120, "the instance to be ready: " + instance.log())
        async with httpx.AsyncClient(timeout=30) as client:  # a bad message: the events counter exists, at 0
            response = await client.post(f"{instance.url}/api/v1/events?category=ci_job_log", content=b"{not json",
                                         headers={"content-type": "application/x-ndjson"})
        assert response.status_code < 500, response.text
        scrape_as_pipesentry(prom, f"127.0.0.1:{instance.port}")
        await until(lambda: scraped(prom, 'up{job="pipesentry"} == 1'), 60, "the first scrape")
        await until(lambda: scraped(prom, 'pipesentry_rules_loaded{job="pipesentry"}'), 30,
                       "the service's metrics in Prometheus")
        await until(lambda: scraped(prom, 'pipesentry_events_total{job="pipesentry",source="http"} == 0'), 30,
                       "the http source's events counter at 0")
        await evaluated_times(prom, 3)

        assert await asyncio.to_thread(active_alerts, prom) == [], "a healthy fresh instance fires nothing"
        success = await asyncio.to_thread(prom.query, 'pipesentry_last_reload_success{job="pipesentry"}')
        assert [s["value"][1] for s in success] == ["1"], "the initial load counts as a successful load"

        (extra / "broken.yml").write_text(BROKEN_RULE)
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(f"{instance.url}/api/v1/rules/reload",
                                         headers={"X-Pipesentry-Client": "tests"})  # no tokens: not a browser
        assert response.status_code == 422, response.text

        async def reload_alert() -> bool:
            alerts = await asyncio.to_thread(active_alerts, prom)
            return any(a["labels"]["alertname"] == "PipesentryReloadFailed"
                       and a["labels"].get("instance") == f"127.0.0.1:{instance.port}"
                       and a["state"] in ("pending", "firing") for a in alerts)

        await until(reload_alert, 60, "PipesentryReloadFailed to become pending")
        others = {a["labels"]["alertname"] for a in await asyncio.to_thread(active_alerts, prom)}
        assert others == {"PipesentryReloadFailed"}
        assert instance.alive(), instance.log()
    finally:
        instance.stop()
