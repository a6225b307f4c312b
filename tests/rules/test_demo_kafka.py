"""``pipesentry demo --kafka`` against a real broker (``devservices``), and its topic settings."""

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
    from devservices.kafka import KafkaServer

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


@pytest.mark.integration
def test_pipesentry_run_detects_the_stories_from_kafka(broker: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``demo --kafka`` then ``pipesentry run`` with the printed topic settings: the stories' alerts reach the API."""
    import subprocess
    import sys
    import time

    import httpx
    import yaml

    from devservices.process import free_port
    from service.rules import default_rules_dir

    assert cli_main(["demo", "--kafka", "--bootstrap", broker, "--seed", "12"]) == 0
    capsys.readouterr()
    rules = default_rules_dir()
    port = free_port()
    config = {
        "data_dir": str(tmp_path / "data"), "api": {"port": port}, "stdin": {"enabled": False},
        "kafka": {"bootstrap_servers": [broker], "group_id": "demo-e2e", "commit_interval_s": 0.2,
                  "topics": topics_config()},
        "rules": {"paths": [str(rules)], "pipelines": [str(rules / "pipelines" / "nginx.pipeline")], "watch": False},
        "anomaly": {"checks": [str(Path(__file__).resolve().parents[2] / "service" / "demo" / "checks.yml")]},
        "alerting": {"sinks": [{"type": "store"}]},
    }
    config_path = tmp_path / "pipesentry.yml"
    config_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPESENTRY_")}
    stderr = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "run", "--config", str(config_path)],
                            stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL, env=env)
    wanted = {
        "GitHub Branch Protection Or Ruleset Removed", "Kubernetes Privileged Container Created",
        "AWS CloudTrail Trail Stopped Or Deleted", "Jenkins Script Console Used",
        "Critical SAST Finding On A Release Branch", "Path Traversal Attempt In Request URI",
    }
    # Correlations are not asserted here: the run consumes a backlog of 17 topics at once, so event
    # time goes back and forth between topics and the correlation engine (allowed lateness 0 by
    # default) drops the older inputs as late. Offline ``pipesentry demo`` feeds one ordered stream.
    titles: set[str] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not wanted <= titles:
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text(errors="replace")[-3000:]
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/v1/alerts", params={"limit": 500}, timeout=2)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                titles = {item["rule"]["name"] for item in response.json()["items"]}
            time.sleep(0.5)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        stderr.close()
    assert wanted <= titles, (sorted(wanted - titles), (tmp_path / "stderr.log").read_text(errors="replace")[-3000:])
