"""Real servers for integration tests, started by ``devservices``.

Every fixture here is session-scoped and lazy: a server starts the first time a
test asks for it, with fresh data under this session's pytest temp dir and free
loopback ports, and is stopped (process group killed) when the session ends,
whatever happened in between. Shared servers (``kafka_server``, ``search_node``,
``alertmanager_server``, ``prometheus_server``) are for ordinary tests; tests that
kill or restart a server, or need their own config, take a private one from the
``*_factory`` fixtures.

A server that cannot start fails the tests that need it, with the reason (CI must
have everything installed, so nothing is skipped silently). Set
``PIPESENTRY_SKIP_INTEGRATION=1`` to skip every ``@pytest.mark.integration`` test
on purpose.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, TypeAlias, TypeVar

import pytest

from devservices.alertmanager import AlertmanagerServer
from devservices.elasticsearch import ElasticsearchNode
from devservices.errors import DevServiceError
from devservices.kafka import KafkaServer
from devservices.prometheus import PrometheusServer
from devservices.search import SearchNode

SKIP_ENV = "PIPESENTRY_SKIP_INTEGRATION"
SEARCH_BACKENDS = ("opensearch", "es8", "es9")
AnySearchNode: TypeAlias = SearchNode | ElasticsearchNode


class Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


def integration_skipped() -> bool:
    return os.environ.get(SKIP_ENV, "").strip().lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not integration_skipped():
        return
    skip = pytest.mark.skip(reason=f"{SKIP_ENV}=1: integration tests skipped on request")
    for item in items:
        if item.get_closest_marker("integration") is not None:
            item.add_marker(skip)


class ServerPool:
    """Starts servers on demand and stops every one of them at session end."""

    def __init__(self, tmp_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_factory
        self._started: list[Stoppable] = []

    def start(self, name: str, starter: Callable[[Path], S]) -> S:
        if integration_skipped():
            pytest.skip(f"{SKIP_ENV}=1: not starting {name}")
        workdir = self._tmp.mktemp(name)
        try:
            server = starter(workdir)
        except DevServiceError as exc:
            reason = f"could not start {name} (work dir {workdir}): {exc}"
        else:
            self._started.append(server)
            return server
        pytest.fail(reason, pytrace=False)

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for server in reversed(self._started):
            try:
                server.stop()
            except Exception as exc:
                errors.append(exc)
        self._started.clear()
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def devservice_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="session")
def kafka_factory(devservice_pool: ServerPool) -> Callable[[], KafkaServer]:
    """``kafka_factory()`` -> a private broker (for kill/restart tests), stopped at session end."""
    return lambda: devservice_pool.start("kafka", KafkaServer.start)


@pytest.fixture(scope="session")
def kafka_server(kafka_factory: Callable[[], KafkaServer]) -> KafkaServer:
    """The shared broker: ``.bootstrap`` is ``"127.0.0.1:PORT"``; do not kill it, use the factory."""
    return kafka_factory()


@pytest.fixture(scope="session")
def search_node_factory(devservice_pool: ServerPool) -> Callable[[], SearchNode]:
    """``search_node_factory()`` -> a private search node, stopped at session end."""
    return lambda: devservice_pool.start("search", SearchNode.start)


@pytest.fixture(scope="session")
def search_node(search_node_factory: Callable[[], SearchNode]) -> SearchNode:
    """The shared search node: ``.url``, ``.flavor`` ("opensearch"), ``.version``."""
    return search_node_factory()


@pytest.fixture(scope="session")
def es8_factory(devservice_pool: ServerPool) -> Callable[..., ElasticsearchNode]:
    """``es8_factory(security=False, tls=None)`` -> a private Elasticsearch 8 node (Java 17), stopped at session end;
    ``tls`` is a ``devservices.elasticsearch.NodeTLS`` (HTTPS, needs ``security=True``)."""
    return lambda security=False, tls=None: devservice_pool.start(
        "es8", lambda workdir: ElasticsearchNode.start(workdir, 8, security=security, tls=tls)
    )


@pytest.fixture(scope="session")
def es9_factory(devservice_pool: ServerPool) -> Callable[..., ElasticsearchNode]:
    """``es9_factory(security=False, tls=None)`` -> a private Elasticsearch 9 node (Java 21+), stopped at session end."""
    return lambda security=False, tls=None: devservice_pool.start(
        "es9", lambda workdir: ElasticsearchNode.start(workdir, 9, security=security, tls=tls)
    )


@pytest.fixture(scope="session")
def es8_node(es8_factory: Callable[..., ElasticsearchNode]) -> ElasticsearchNode:
    """The shared Elasticsearch 8 node (security off): ``.url``, ``.flavor`` ("elasticsearch"), ``.version``."""
    return es8_factory()


@pytest.fixture(scope="session")
def es9_node(es9_factory: Callable[..., ElasticsearchNode]) -> ElasticsearchNode:
    """The shared Elasticsearch 9 node (security off)."""
    return es9_factory()


@pytest.fixture(params=SEARCH_BACKENDS)
def any_search_node(request: pytest.FixtureRequest) -> AnySearchNode:
    """Each shared search node in turn: OpenSearch, Elasticsearch 8, Elasticsearch 9 (one start each per session)."""
    name = {"opensearch": "search_node", "es8": "es8_node", "es9": "es9_node"}[request.param]
    node: AnySearchNode = request.getfixturevalue(name)
    return node


@pytest.fixture(params=SEARCH_BACKENDS)
def any_search_node_factory(request: pytest.FixtureRequest) -> Callable[[], AnySearchNode]:
    """Each search-node factory in turn (private nodes for kill/restart tests)."""
    name = {"opensearch": "search_node_factory", "es8": "es8_factory", "es9": "es9_factory"}[request.param]
    factory: Callable[[], AnySearchNode] = request.getfixturevalue(name)
    return factory


@pytest.fixture(scope="session")
def prometheus_factory(devservice_pool: ServerPool) -> Callable[..., PrometheusServer]:
    """``prometheus_factory(["127.0.0.1:PORT"], scrape_interval="1s", rule_files=(), alertmanager_url=None)``."""

    def make(
        targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        *,
        rule_files: Sequence[Path] = (),
        alertmanager_url: str | None = None,
    ) -> PrometheusServer:
        return devservice_pool.start(
            "prometheus",
            lambda workdir: PrometheusServer.start(
                workdir,
                scrape_targets=targets,
                scrape_interval=scrape_interval,
                rule_files=rule_files,
                alertmanager_url=alertmanager_url,
            ),
        )

    return make


@pytest.fixture(scope="session")
def prometheus_server(prometheus_factory: Callable[..., PrometheusServer]) -> PrometheusServer:
    """A shared Prometheus with no targets yet: call ``.set_targets([...])`` (1 s scrape interval)."""
    return prometheus_factory()


@pytest.fixture(scope="session")
def alertmanager_factory(devservice_pool: ServerPool) -> Callable[..., AlertmanagerServer]:
    """``alertmanager_factory(webhook_url=None)`` -> a private Alertmanager, stopped at session end."""

    def make(webhook_url: str | None = None) -> AlertmanagerServer:
        return devservice_pool.start(
            "alertmanager", lambda workdir: AlertmanagerServer.start(workdir, webhook_url=webhook_url)
        )

    return make


@pytest.fixture(scope="session")
def alertmanager_server(alertmanager_factory: Callable[..., AlertmanagerServer]) -> AlertmanagerServer:
    """The shared Alertmanager (notifications dropped): ``.url``, ``.alerts()``, ``.post_alerts()``."""
    return alertmanager_factory()
