"""``pipesentry demo --kafka`` against a real broker (``service.devservices``), and its topic settings."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from service.cli import main as cli_main
from service.config import KafkaSettings
from service.demo.corpus import generate
from service.demo.kafka import topics_config
from service.demo.sources import SOURCES


def test_topics_config_is_valid_kafka_settings() -> None:
    settings = KafkaSettings(bootstrap_servers=["127.0.0.1:9092"], topics=topics_config())
    assert set(settings.topics) == {s.topic for s in SOURCES}
    k8s = settings.topic_settings("pipesentry.demo.k8s_audit")
    assert (k8s.logsource.product, k8s.logsource.category, k8s.logsource.service) == ("kubernetes", "application", "audit")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("PIPESENTRY_SKIP_INTEGRATION", "").strip().lower() in ("1", "true", "yes"):
        pytest.skip("PIPESENTRY_SKIP_INTEGRATION=1")
    from service.devservices.kafka import KafkaServer

    server = KafkaServer.start(tmp_path_factory.mktemp("demo-kafka"))
    try:
        yield server.bootstrap
    finally:
        server.stop()


async def _consume(bootstrap: str, topics: list[str], expected: int, timeout: float = 60.0) -> list[tuple[str, bytes]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[tuple[str, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                out.extend((r.topic, r.value) for r in records)
    finally:
        await consumer.stop()
    return out


@pytest.mark.integration
def test_demo_produces_every_event_to_its_topic(broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["demo", "--kafka", "--bootstrap", broker, "--seed", "11", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    events = generate(11)
    expected = Counter(f"pipesentry.demo.{e.source}" for e in events)
    for topic, count in expected.items():
        assert f"{count:>7,}  {topic}" in out
    assert "kafka:" in out and "topics:" in out
    records = asyncio.run(_consume(broker, sorted(expected), len(events)))
    assert Counter(topic for topic, _ in records) == expected
    first_github = next(e.event for e in events if e.source == "github_audit")
    assert any(orjson.loads(value) == first_github for topic, value in records if topic.endswith(".github_audit"))
    assert not (tmp_path / "alerting").exists()  # --kafka leaves detection to the running service
