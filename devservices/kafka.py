"""A single-node Apache Kafka 4.x broker (KRaft, combined broker+controller) on loopback.

The jars come from Maven Central (``kafka-pom.xml``). Start = write server.properties
with two free ports, format the log dir with ``kafka.tools.StorageTool`` (its own JVM:
it ends with ``System.exit``), run ``kafka.Kafka``, and wait until a real client gets
cluster metadata. ``restart`` reuses the ports and the log dir, so clients see the
same broker come back with its data, as after a broker restart in production.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from devservices.errors import DevServiceError, StartupFailed
from devservices.fetch import KAFKA_JARS, classpath, fetch, java_executable
from devservices.process import ManagedProcess, ServerHandle, free_port, port_open

T = TypeVar("T")
START_TIMEOUT = 60.0
START_ATTEMPTS = 3
HEAP = "-Xmx512m"


def run_coroutine_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a private loop in a helper thread.

    Works whether or not the caller is itself inside a running event loop (sync
    fixtures, async tests), which ``asyncio.run`` alone does not.
    """
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=runner, name="devservices-kafka-admin", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def random_cluster_id() -> str:
    """22 URL-safe base64 characters of a UUID, the format ``kafka-storage random-uuid`` prints.

    Never starts with ``-``: the storage tool's argument parser would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(log_dir: Path, port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "auto.create.topics.enable": "true",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After a SIGKILL the restarted broker must wait for its old session to expire
        # before it may register again: keep that wait short for fault tests.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        # Tests create and delete many small topics; keep segment files small.
        "log.segment.bytes": str(16 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


async def _metadata(bootstrap: str, timeout: float = 5.0) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        # Bounded: a readiness probe must come back to let the caller check the process.
        async with asyncio.timeout(timeout):
            await admin.start()
            return list(await admin.list_topics())
    finally:
        await admin.close()


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name=name, num_partitions=partitions, replication_factor=1)]
        )
        for topic, code, *_ in getattr(response, "topic_errors", []):
            if code == TopicAlreadyExistsError.errno:
                raise TopicAlreadyExistsError(f"topic {topic} already exists")
            if code != 0:
                raise DevServiceError(f"creating topic {topic} failed with Kafka error code {code}")
    finally:
        await admin.close()


@dataclass(eq=False)
class KafkaServer(ServerHandle):
    """A running broker. Build with :meth:`start`; ``bootstrap`` is ``127.0.0.1:PORT``."""

    workdir: Path
    port: int
    controller_port: int
    version: str
    _process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def properties_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kafka.log"

    @classmethod
    def start(cls, workdir: Path, *, timeout: float = START_TIMEOUT) -> KafkaServer:
        """Format a fresh log dir under ``workdir`` and start a broker on free loopback ports."""
        fetch(KAFKA_JARS)
        for attempt in range(1, START_ATTEMPTS + 1):
            server = cls(
                workdir=workdir / f"broker-{attempt}",
                port=free_port(),
                controller_port=free_port(),
                version=KAFKA_JARS.pom_property("kafka.version"),
            )
            try:
                server._prepare()
                server._launch(timeout)
                return server
            except StartupFailed as exc:
                # A chosen port can be taken by someone else before the broker binds it.
                if attempt == START_ATTEMPTS or not exc.retriable:
                    raise
        raise AssertionError("unreachable")

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(
            server_properties(self.workdir / "data", self.port, self.controller_port)
        )
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(resources.files(__package__).joinpath("kafka-log4j2.properties").read_text())
        self._format()

    def _java_argv(self, main: str, *args: str, heap: str = HEAP, short_lived: bool = False) -> list[str]:
        # A JVM that exits after a second does better without the optimizing JIT (halves format time).
        jit = ["-XX:TieredStopAtLevel=1"] if short_lived else []
        return [
            java_executable(17), heap, *jit, "-XX:+UseSerialGC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp", classpath(KAFKA_JARS), main, *args,
        ]  # fmt: skip

    def _format(self) -> None:
        argv = self._java_argv(
            "kafka.tools.StorageTool", "format", f"--cluster-id={random_cluster_id()}",
            "-c", str(self.properties_path), "-g", heap="-Xmx256m", short_lived=True,
        )  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise StartupFailed(f"kafka StorageTool format failed:\n{done.stdout}{done.stderr}")

    def _launch(self, timeout: float) -> None:
        self._process = ManagedProcess.spawn(
            "kafka", self._java_argv("kafka.Kafka", str(self.properties_path)), self.log_path
        )
        # Only ask a client once the port listens: aiokafka logs every refused connection.
        self._process.wait_ready(
            lambda: port_open(self.port) and self.topics() is not None, timeout, "cluster metadata answers"
        )

    def topics(self) -> list[str]:
        """Topic names, via a real client metadata request."""
        return run_coroutine_sync(_metadata(self.bootstrap))

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name``; raises aiokafka's ``TopicAlreadyExistsError`` if it exists."""
        run_coroutine_sync(_create_topic(self.bootstrap, name, partitions))

    def restart(self, *, timeout: float = START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same ports and log dir."""
        self.stop()
        self._launch(timeout)


@contextlib.contextmanager
def broker(bootstrap: str | None, workdir: Path) -> Iterator[str]:
    """``bootstrap`` as it is, or a private broker's, started under ``workdir`` and stopped after
    (the benches' ``--bootstrap`` option: their own broker unless one is named)."""
    if bootstrap is not None:
        yield bootstrap
        return
    server = KafkaServer.start(workdir / "kafka")
    try:
        yield server.bootstrap
    finally:
        server.stop()
