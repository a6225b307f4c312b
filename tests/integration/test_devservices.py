"""The dev services are real servers that real clients can use.

Each test talks to a server the way the product will: aiokafka and kcat against
Kafka, opensearch-py against the search node, PromQL against a Prometheus that
scraped a live /metrics endpoint, the v2 API of Alertmanager and its webhook.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import TopicAlreadyExistsError
from opensearchpy import AsyncOpenSearch
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from devservices.__main__ import main as devservices_main
from devservices.alertmanager import AlertmanagerServer
from devservices.elasticsearch import SERVICE_USER, ElasticsearchNode
from devservices.errors import PrerequisiteMissing, StartupFailed
from devservices.fetch import (
    ALL_JARSETS,
    ELASTICSEARCH_DISTS,
    debian_binary,
    dist_home,
    fetch,
    is_fetched,
)
from devservices.kafka import KafkaServer
from devservices.process import ManagedProcess
from devservices.prometheus import PrometheusServer, QueryFailed
from devservices.search import SearchNode

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def kcat() -> str:
    found = shutil.which("kcat")
    if found is None:
        pytest.fail("kcat is not installed: apt-get install kcat (or `make system-packages`)", pytrace=False)
    return found


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (dead, not yet reaped by its new parent) still answers kill(0).
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


async def consume(
    bootstrap: str, topic: str, count: int, timeout: float = 20.0
) -> list[tuple[bytes | None, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=unique("g")
    )
    await consumer.start()
    records: list[tuple[bytes | None, bytes]] = []
    try:
        async with asyncio.timeout(timeout):
            async for message in consumer:
                assert message.value is not None
                records.append((message.key, message.value))
                if len(records) == count:
                    break
    finally:
        await consumer.stop()
    return records


# --- fetch -----------------------------------------------------------------------------------


def test_fetch_is_idempotent_and_instant_when_done() -> None:
    for jars in ALL_JARSETS:
        fetch(jars)
    began = time.monotonic()
    assert [fetch(jars) for jars in ALL_JARSETS] == [False, False, False]
    assert time.monotonic() - began < 1.0
    assert all(is_fetched(jars) for jars in ALL_JARSETS)


def test_elasticsearch_zips_are_unpacked_runnable_and_readable_by_all() -> None:
    fetch(ELASTICSEARCH_DISTS)
    for version in ELASTICSEARCH_DISTS.versions():
        home = dist_home(ELASTICSEARCH_DISTS, version)
        launcher = home / "bin" / "elasticsearch"
        assert launcher.stat().st_mode & 0o005 == 0o005  # o+rx: the node runs as another user
        assert (home / "lib" / "entitlement-agent").is_dir()  # what Maven's server jar alone lacks
        assert not list(home.parent.parent.glob("**/*.zip"))  # zips deleted after unpacking


def test_missing_binary_says_which_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PrerequisiteMissing, match="apt-get install prometheus-alertmanager"):
        debian_binary(("prometheus-alertmanager", "alertmanager"), "prometheus-alertmanager")


def test_cli_fetch_reports_what_it_found(capsys: pytest.CaptureFixture[str]) -> None:
    for jars in ALL_JARSETS:
        fetch(jars)
    assert devservices_main(["fetch"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert set(report["fetch_seconds"]) == {"kafka", "opensearch", "elasticsearch"}
    assert all(seconds < 0.5 for seconds in report["fetch_seconds"].values())  # stamps present: no Maven run
    assert "elasticsearch: already fetched" in captured.err  # progress lines on stderr
    assert Path(report["java"]).name == "java"
    assert Path(report["elasticsearch9_java_home"], "bin", "java").is_file()
    assert report["alertmanager"] and report["prometheus"] and report["kcat"]


def test_cli_start_prints_address_and_stops_on_ctrl_c() -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "devservices", "start", "alertmanager"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert cli.stdout is not None
        info = json.loads(cli.stdout.readline())
        assert info["service"] == "alertmanager"
        assert httpx.get(f"{info['url']}/-/ready", timeout=5).status_code == 200
    finally:
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{info['url']}/-/ready", timeout=2)
    assert not Path(info["workdir"]).exists()


# --- process lifecycle -----------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    # The leader ignores SIGTERM and has a child: stop must still leave nothing behind.
    script = f"trap '' TERM; sleep 300 & echo $! > {tmp_path / 'child'}; wait"
    proc = ManagedProcess.spawn("group", ["bash", "-c", script], tmp_path / "group.log")
    assert wait_until(
        lambda: (tmp_path / "child").exists() and (tmp_path / "child").read_text().strip() != ""
    )
    child = int((tmp_path / "child").read_text())
    proc.stop(timeout=1)
    assert process_gone(proc.pid)
    assert wait_until(lambda: process_gone(child)), "the child outlived its process group"
    proc.stop()  # idempotent


def test_wait_ready_fails_fast_with_the_log_when_the_server_exits(tmp_path: Path) -> None:
    proc = ManagedProcess.spawn(
        "crasher", ["bash", "-c", "echo config is broken; exit 3"], tmp_path / "c.log"
    )
    began = time.monotonic()
    with pytest.raises(StartupFailed, match=r"(?s)exited with code 3.*config is broken"):
        proc.wait_ready(lambda: False, timeout=30, what="never")
    assert time.monotonic() - began < 10


def test_servers_die_with_a_killed_parent(tmp_path: Path) -> None:
    # A SIGKILLed test run cannot run finalizers: PR_SET_PDEATHSIG must take the server down.
    code = (
        "import sys, time; from pathlib import Path; from devservices.process import ManagedProcess; "
        f"p = ManagedProcess.spawn('orphan', ['sleep', '300'], Path({str(tmp_path / 'o.log')!r})); "
        "print(p.pid, flush=True); time.sleep(300)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])  # devservices/ is not installed
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    assert not process_gone(server_pid)
    parent.kill()
    parent.wait(timeout=10)
    assert wait_until(lambda: process_gone(server_pid))


# --- Kafka -----------------------------------------------------------------------------------


async def test_kafka_produce_and_consume_with_aiokafka(kafka_server: KafkaServer) -> None:
    assert kafka_server.bootstrap.startswith("127.0.0.1:")
    topic = unique("aiokafka")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_server.bootstrap, acks="all")
    await producer.start()
    try:
        for index in range(3):
            await producer.send_and_wait(topic, f"event-{index}".encode(), key=b"k")
    finally:
        await producer.stop()
    records = await consume(kafka_server.bootstrap, topic, 3)
    assert records == [(b"k", b"event-0"), (b"k", b"event-1"), (b"k", b"event-2")]


async def test_kcat_and_aiokafka_interoperate(kafka_server: KafkaServer) -> None:
    to_python, to_kcat = unique("from-kcat"), unique("to-kcat")
    lines = 'build-1:{"step": "deploy"}\nbuild-2:{"step": "test"}\n'
    produced = subprocess.run(
        [kcat(), "-P", "-b", kafka_server.bootstrap, "-t", to_python, "-K:"],
        input=lines, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    records = await consume(kafka_server.bootstrap, to_python, 2)
    assert records == [(b"build-1", b'{"step": "deploy"}'), (b"build-2", b'{"step": "test"}')]

    producer = AIOKafkaProducer(bootstrap_servers=kafka_server.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(to_kcat, b"from python", key=b"py")
    finally:
        await producer.stop()
    consumed = subprocess.run(
        [kcat(), "-C", "-b", kafka_server.bootstrap, "-t", to_kcat, "-o", "beginning", "-e", "-q",
         "-f", "%k=%s\\n"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == ["py=from python"]


def test_kafka_create_topic_with_partitions(kafka_server: KafkaServer) -> None:
    topic = unique("partitioned")
    kafka_server.create_topic(topic, partitions=4)
    assert topic in kafka_server.topics()
    listed = subprocess.run(
        [kcat(), "-L", "-b", kafka_server.bootstrap, "-t", topic, "-J"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    (described,) = json.loads(listed.stdout)["topics"]
    assert len(described["partitions"]) == 4
    with pytest.raises(TopicAlreadyExistsError):
        kafka_server.create_topic(topic, partitions=4)


@pytest.mark.slow
async def test_kafka_kill_and_restart_keeps_port_and_data(kafka_factory: Callable[[], KafkaServer]) -> None:
    broker = kafka_factory()
    topic = unique("durable")
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before crash")
    finally:
        await producer.stop()
    bootstrap, pid = broker.bootstrap, broker.pid
    assert pid is not None
    broker.kill()
    assert not broker.running() and process_gone(pid)
    await asyncio.to_thread(broker.restart)
    assert broker.bootstrap == bootstrap and broker.running() and broker.pid != pid
    assert await consume(broker.bootstrap, topic, 1) == [(None, b"before crash")]
    broker.stop()
    assert not broker.running()


# --- search node -----------------------------------------------------------------------------


@pytest.fixture
async def search_client(search_node: SearchNode) -> Any:
    client = AsyncOpenSearch(hosts=[search_node.url])
    yield client
    await client.close()


async def test_search_node_identity(search_node: SearchNode, search_client: AsyncOpenSearch) -> None:
    info = await search_client.info()
    assert search_node.flavor == "opensearch"
    assert info["version"]["distribution"] == "opensearch"
    assert info["version"]["number"] == search_node.version
    health = await search_client.cluster.health(wait_for_status="yellow")
    assert health["number_of_nodes"] == 1


async def test_search_node_index_and_search(search_client: AsyncOpenSearch) -> None:
    index = unique("alerts")
    await search_client.index(
        index=index,
        id="a1",
        body={"rule": "Suspicious curl piped to shell", "severity": "high", "pipeline": "deploy-prod"},
        refresh=True,
    )
    await search_client.index(
        index=index, id="a2", body={"rule": "Quiet build", "severity": "low"}, refresh=True
    )
    found = await search_client.search(index=index, body={"query": {"match": {"rule": "curl shell"}}})
    assert [hit["_id"] for hit in found["hits"]["hits"]] == ["a1"]
    assert found["hits"]["hits"][0]["_source"]["pipeline"] == "deploy-prod"
    # A single node must be green for new indices (replicas default to 0 here).
    health = await search_client.cluster.health(index=index, wait_for_status="green")
    assert health["status"] == "green"


@pytest.mark.slow
@pytest.mark.parametrize("major", [8, 9])
def test_elasticsearch_node_identity_and_integ_test_gaps(major: int, request: pytest.FixtureRequest) -> None:
    node: ElasticsearchNode = request.getfixturevalue(f"es{major}_node")
    assert node.version.startswith(f"{major}.") and node.flavor == "elasticsearch"
    root = httpx.get(node.url, timeout=10)
    # What this distribution lacks (docs/dev-services.md): `GET /` and the data-stream endpoints.
    assert root.status_code == 405 and root.headers["X-Elastic-Product"] == "Elasticsearch"
    # No data-stream endpoint: the path falls through to the document routes (400 or 405 by version).
    assert httpx.put(f"{node.url}/_data_stream/{unique('ds')}", timeout=10).status_code in (400, 405)
    assert node.info()["version"]["number"] == node.version  # rebuilt from GET /_nodes/_local
    if os.geteuid() == 0:  # Elasticsearch refuses root: the node runs as the service user
        assert node.pid is not None
        assert Path(f"/proc/{node.pid}").stat().st_uid != 0
        assert SERVICE_USER in subprocess.run(["ps", "-o", "user=", "-p", str(node.pid)], capture_output=True,
                                              text=True, check=False).stdout


def test_search_node_kill_and_restart_keeps_data(search_node_factory: Callable[[], SearchNode]) -> None:
    node = search_node_factory()
    created = httpx.put(f"{node.url}/durable/_doc/1", params={"refresh": "true"}, json={"v": 1}, timeout=30)
    assert created.status_code == 201, created.text
    url = node.url
    node.kill()
    assert not node.running()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)
    node.restart()
    assert node.url == url
    assert httpx.get(f"{url}/durable/_doc/1", timeout=10).json()["_source"] == {"v": 1}


# --- Prometheus ------------------------------------------------------------------------------


@pytest.fixture
def metrics_endpoint() -> Iterator[tuple[str, Gauge]]:
    """A live /metrics endpoint on a free loopback port, with one gauge the test controls."""
    registry = CollectorRegistry()
    gauge = Gauge("pipesentry_devservices_probe", "Value set by the dev-services test", registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}", gauge
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_prometheus_scrapes_target_and_answers_promql(
    prometheus_factory: Callable[..., PrometheusServer], metrics_endpoint: tuple[str, Gauge]
) -> None:
    target, gauge = metrics_endpoint
    gauge.set(42.5)
    prometheus = prometheus_factory([target], scrape_interval="1s")
    (sample,) = prometheus.wait_for("pipesentry_devservices_probe == 42.5")
    assert sample["metric"]["instance"] == target
    assert float(sample["value"][1]) == 42.5
    gauge.set(7)
    assert prometheus.wait_for("pipesentry_devservices_probe == 7")
    (up,) = prometheus.query(f'up{{instance="{target}"}}')
    assert up["value"][1] == "1"
    with pytest.raises(QueryFailed, match="parse error"):
        prometheus.query("up{")


def test_prometheus_targets_can_be_set_after_start(
    prometheus_server: PrometheusServer, metrics_endpoint: tuple[str, Gauge]
) -> None:
    target, gauge = metrics_endpoint
    gauge.set(3)
    assert prometheus_server.query("pipesentry_devservices_probe") == []
    prometheus_server.set_targets([target])
    try:
        (sample,) = prometheus_server.wait_for(f'pipesentry_devservices_probe{{instance="{target}"}}')
        assert sample["value"][1] == "3"
        assert [t["scrapeUrl"] for t in prometheus_server.active_targets()] == [f"http://{target}/metrics"]
    finally:
        prometheus_server.set_targets([])  # the server is shared


def test_prometheus_rules_fire_into_alertmanager(
    prometheus_factory: Callable[..., PrometheusServer],
    alertmanager_server: AlertmanagerServer,
    metrics_endpoint: tuple[str, Gauge],
    tmp_path: Path,
) -> None:
    target, gauge = metrics_endpoint
    gauge.set(99)
    name = unique("ProbeTooHigh")
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n- name: devservices\n  rules:\n"
        f"  - alert: {name}\n    expr: pipesentry_devservices_probe > 10\n    labels:\n      severity: page\n"
    )
    prometheus = prometheus_factory([target], rule_files=[rules], alertmanager_url=alertmanager_server.url)
    assert prometheus.wait_for(f'ALERTS{{alertname="{name}",alertstate="firing"}}')
    assert wait_until(lambda: bool(alertmanager_server.alerts(alertname=name)), timeout=20)
    (alert,) = alertmanager_server.alerts(alertname=name)
    assert alert["labels"]["severity"] == "page" and alert["labels"]["instance"] == target


# --- Alertmanager ----------------------------------------------------------------------------


def test_alertmanager_accepts_and_lists_alerts(alertmanager_server: AlertmanagerServer) -> None:
    name = unique("PipelineSecretLeak")
    response = httpx.post(
        f"{alertmanager_server.url}/api/v2/alerts",
        json=[
            {
                "labels": {"alertname": name, "severity": "critical"},
                "annotations": {"summary": "token in log"},
            }
        ],
        timeout=10,
    )
    assert response.status_code == 200
    listed = httpx.get(f"{alertmanager_server.url}/api/v2/alerts", timeout=10).json()
    (alert,) = [a for a in listed if a["labels"]["alertname"] == name]
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == "token in log"
    assert alert["status"]["state"] == "active"
    assert alertmanager_server.alerts(alertname=name)[0]["fingerprint"] == alert["fingerprint"]


class _WebhookSink(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Event()


class _WebhookHandler(http.server.BaseHTTPRequestHandler):
    server: _WebhookSink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))
        self.server.arrived.set()
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_alertmanager_delivers_to_webhook(alertmanager_factory: Callable[..., AlertmanagerServer]) -> None:
    sink = _WebhookSink()
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        alertmanager = alertmanager_factory(webhook_url=f"http://127.0.0.1:{sink.server_port}/hook")
        alertmanager.post_alerts([{"labels": {"alertname": "DeployFromUnknownRunner", "team": "sec"}}])
        assert sink.arrived.wait(timeout=20), "Alertmanager sent no notification within 20 s"
        (notification,) = sink.received
        assert notification["status"] == "firing"
        assert notification["alerts"][0]["labels"] == {"alertname": "DeployFromUnknownRunner", "team": "sec"}
    finally:
        sink.shutdown()
        sink.server_close()
