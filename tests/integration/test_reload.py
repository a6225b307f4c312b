"""Hot reload: under Kafka load (nothing lost, nothing evaluated twice), on SIGHUP, on file change,
and a broken ruleset rejected as a whole while the old one keeps running."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from service import metrics
from tests.support.instances import InProcess, Instance, kafka_settings, unique_topic
from tests.support.rules import BROKEN_RULE, PIPED_SCRIPT_RULE
from tests.support.waits import until

pytestmark = pytest.mark.integration

WGET_RULE = """
title: Wget Download In A Build
id: 7a5c0f3e-2222-4000-8000-000000000001
author: tests
logsource: {category: ci_job_log}
detection:
    sel: {message|contains: 'wget '}
    condition: sel
level: low
"""


def events_total(source: str) -> float:
    return metrics.EVENTS.labels(source)._value.get()


async def test_hot_reload_under_load_loses_and_repeats_nothing(kafka_server, tmp_path):
    topic = unique_topic("ci-reload")
    kafka_server.create_topic(topic, 1)
    settings = kafka_settings(tmp_path, kafka_server.bootstrap,
                              {topic: {"decoder": "json", "logsource": {"category": "ci_job_log"}}}, max_batch=50)
    rules = Path(settings.rules.paths[0])
    total = 3000
    before = events_total("kafka")
    async with InProcess(settings) as running:
        reloader = running.service.reloader
        assert reloader is not None

        async def producer() -> None:
            client = AIOKafkaProducer(bootstrap_servers=kafka_server.bootstrap, acks="all")
            await client.start()
            try:
                for start in range(0, total, 100):
                    values = [orjson.dumps({"message": f"{n}: wget https://x | sh", "n": n})
                              for n in range(start, start + 100)]
                    await asyncio.gather(*[await client.send(topic, v) for v in values])
                    await asyncio.sleep(0.02)
            finally:
                await client.stop()

        producing = asyncio.create_task(producer())
        await until(lambda: len(running.router.alerts) > 200, 60, "alerts flowing")
        (rules / "wget.yml").write_text(WGET_RULE)
        results = []
        for _ in range(4):  # several swaps while batches keep coming
            results.append((await reloader.reload("test")).result)
            await asyncio.sleep(0.05)
        await producing
        await until(lambda: sum(1 for a in running.router.alerts if a.rule.title.startswith("Remote")) >= total,
                       90, "every event evaluated")
        await asyncio.sleep(0.5)
        assert results == ["ok"] * 4
        curl = sorted(a.origin.offset for a in running.router.alerts if a.rule.title.startswith("Remote"))
        assert curl == list(range(total)), "each event evaluated exactly once by the curl rule"
        wget = sorted(a.origin.offset for a in running.router.alerts if a.rule.title.startswith("Wget"))
        assert wget, "the new rule became active"
        # the new rule covers exactly a suffix of the stream: the swap fell between two batches
        assert wget == list(range(wget[0], total))
        assert 0 < wget[0] < total
    assert events_total("kafka") - before == total


async def _rules(instance: Instance) -> list[str]:
    response = await instance.get("/api/v1/rules")
    return sorted(r["title"] for r in response.json()["items"]) if response is not None else []


async def _post(instance: Instance, path: str, body: bytes = b"") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        # no tokens: a state change says it is not a cross-site browser request
        return await client.post(instance.url + path, content=body, headers={"content-type": "application/json"})


def rules_only(tmp_path: Path, **rules: object) -> tuple[Path, dict[str, object]]:
    path = tmp_path / f"rules-{uuid.uuid4().hex[:6]}"
    path.mkdir()
    (path / "curl.yml").write_text(PIPED_SCRIPT_RULE)
    return path, {"rules": {"paths": [str(path)], **rules}, "alerting": {"sinks": [{"type": "stdout"}]}}


@pytest.mark.slow
async def test_rules_directory_change_and_broken_ruleset(tmp_path):
    path, config = rules_only(tmp_path, watch=True, watch_interval_s=0.2)
    instance = Instance(tmp_path, "watch", config)
    try:
        await until(instance.ready, 60, "instance ready")
        assert await _rules(instance) == ["Remote Script Piped Into A Shell"]
        (path / "wget.yml").write_text(WGET_RULE)
        await until(lambda: _has(instance, "Wget Download In A Build"), 30, "the watcher to load the new rule")
        (path / "broken.yml").write_text(BROKEN_RULE)
        await until(lambda: _metric_at_least(instance, 'pipesentry_rule_reloads_total{result="rejected"}', 1),
                       30, "the broken ruleset to be rejected")
        assert await _rules(instance) == ["Remote Script Piped Into A Shell", "Wget Download In A Build"]
        response = await _post(instance, "/api/v1/events?category=ci_job_log",
                               b'{"message": "wget https://x | sh"}')
        assert response.status_code == 200 and len(response.json()["alerts"]) == 2  # old set still runs
        manual = await _post(instance, "/api/v1/rules/reload")
        assert manual.status_code == 422 and "broken.yml" in manual.text
        (path / "broken.yml").unlink()
        await until(lambda: _metric_at_least(instance, 'pipesentry_rule_reloads_total{result="ok"}', 2),
                       30, "a good reload after the fix")
        assert instance.alive(), instance.log()
    finally:
        instance.stop()


@pytest.mark.slow
async def test_sighup_reloads(tmp_path):
    path, config = rules_only(tmp_path, watch=False)
    instance = Instance(tmp_path, "hup", config)
    try:
        await until(instance.ready, 60, "instance ready")
        (path / "wget.yml").write_text(WGET_RULE)
        await asyncio.sleep(0.5)
        assert await _rules(instance) == ["Remote Script Piped Into A Shell"]  # no watcher: nothing yet
        instance.proc.send_signal(signal.SIGHUP)
        await until(lambda: _has(instance, "Wget Download In A Build"), 30, "SIGHUP reload")
        assert instance.alive()
    finally:
        instance.stop()


async def _has(instance: Instance, title: str) -> bool:
    return title in await _rules(instance)


async def _metric_at_least(instance: Instance, name: str, value: float) -> bool:
    response = await instance.get("/metrics")
    if response is None:
        return False
    for line in response.text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1]) >= value
    return False
