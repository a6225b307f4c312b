"""The Elasticsearch sink over HTTPS, against a real Elasticsearch 8 node with security and TLS on.

The CA is made here (``tests/support/tls.py``), signs the node's HTTP certificate for 127.0.0.1,
and the node (``devservices.elasticsearch.NodeTLS``) serves it with a file-realm superuser. The
sink trusts that CA through ``ca_certs`` and logs in with basic auth; without ``ca_certs`` it
trusts only the system CAs, so the handshake fails: a transport error, retried, the alerts held
in the spool (delivered once the sink is given the CA), and the password in no log record.
``verify_certs: false`` delivers without the CA (with the client's SecurityWarning).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from devservices.elasticsearch import ElasticsearchNode, NodeTLS
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from service.alerting.sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkSettings
from service.logs import JsonFormatter
from tests.support.alerts import alert, rule
from tests.support.secrets import secret_forms
from tests.support.tls import TestCA
from tests.support.waits import until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
T0 = 1_750_000_000.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("es-pki"), "pipesentry es test CA")


@pytest.fixture(scope="module")
def tls_node(es8_factory: Callable[..., ElasticsearchNode], pki: TestCA) -> Iterator[ElasticsearchNode]:
    """A private Elasticsearch 8 node: security on, HTTPS with a certificate of ``pki``; removed after the module."""
    served = pki.issue("es-http", "127.0.0.1", server=True)
    node = es8_factory(True, NodeTLS(ca=pki.cert, cert=served.cert, key=served.key))
    yield node
    node.remove()


def settings(node: ElasticsearchNode, prefix: str, **extra: object) -> AlertingSettings:
    return AlertingSettings.model_validate({
        "sinks": [{"type": "elasticsearch", "name": "es", "flavor": "elasticsearch", "hosts": [node.url],
                   "index_prefix": prefix, "item_retries": 1, "username": node.username, "password": node.password,
                   "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.2}, **extra}],
        "spool": {"fsync": "never"}})


def count(node: ElasticsearchNode, index: str) -> int:
    httpx.post(f"{node.url}/{index}/_refresh?ignore_unavailable=true", auth=node.auth, verify=node.verify,
               timeout=30)
    resp = httpx.get(f"{node.url}/{index}/_count?ignore_unavailable=true", auth=node.auth, verify=node.verify,
                     timeout=30)
    return int(resp.json().get("count", 0)) if resp.status_code == 200 else 0


def rendered(records: list[logging.LogRecord]) -> str:
    """Every captured record as the service prints it, and raw (message, arguments, extras)."""
    formatter = JsonFormatter()
    return "\n".join(f"{formatter.format(r)}\n{r.getMessage()}\n{r.__dict__!r}" for r in records)


def password_forms(node: ElasticsearchNode) -> set[str]:
    assert node.username and node.password
    basic = base64.b64encode(f"{node.username}:{node.password}".encode()).decode()
    return secret_forms(node.password) | {basic}


def test_the_node_serves_only_https_with_the_test_ca(tls_node: ElasticsearchNode, pki: TestCA) -> None:
    assert tls_node.url.startswith("https://") and tls_node.auth is not None
    trusting = httpx.get(f"{tls_node.url}/_cluster/health", auth=tls_node.auth,
                         verify=ssl.create_default_context(cafile=str(pki.cert)), timeout=10)
    assert trusting.status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_node.url}/_cluster/health", auth=tls_node.auth, timeout=10)  # system CAs only
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port: the node drops the connection
        httpx.get(f"http://127.0.0.1:{tls_node.port}/_cluster/health", auth=tls_node.auth, timeout=10)


async def test_sink_delivers_over_https_with_ca_certs(tls_node: ElasticsearchNode, pki: TestCA) -> None:
    sink = ElasticsearchSink(ElasticsearchSinkSettings.model_validate({
        "name": "es", "hosts": [tls_node.url], "index_prefix": "ps-tls", "ca_certs": str(pki.cert),
        "username": tls_node.username, "password": tls_node.password}))
    await sink.start()
    try:
        outcome = await sink.deliver([alert(i, r=rule("tls"), ts=T0 + i).to_document() for i in range(20)])
        assert outcome.error is None and outcome.done == 20
        assert sink.server_version == tls_node.version
    finally:
        await sink.stop()
    assert await asyncio.to_thread(count, tls_node, "ps-tls-*") == 20


async def test_verify_certs_false_delivers_without_the_ca(tls_node: ElasticsearchNode) -> None:
    sink = ElasticsearchSink(ElasticsearchSinkSettings.model_validate({
        "name": "es", "hosts": [tls_node.url], "index_prefix": "ps-noverify", "verify_certs": False,
        "username": tls_node.username, "password": tls_node.password}))
    await sink.start()
    try:
        outcome = await sink.deliver([alert(i, r=rule("noverify"), ts=T0 + i).to_document() for i in range(3)])
        assert outcome.error is None and outcome.done == 3
    finally:
        await sink.stop()
    assert await asyncio.to_thread(count, tls_node, "ps-noverify-*") == 3


def test_tls_needs_security(tmp_path: Path, pki: TestCA) -> None:
    with pytest.raises(ValueError, match="security"):
        ElasticsearchNode.start(tmp_path, 8, tls=NodeTLS(ca=pki.cert, cert=pki.cert, key=pki.cert))


async def test_without_the_ca_the_alerts_stay_spooled_and_no_password_is_logged(
        tls_node: ElasticsearchNode, pki: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    batch = [alert(i, r=rule("tls-noca"), ts=T0 + i) for i in range(12)]
    caplog.set_level(logging.DEBUG)
    untrusting = AlertRouter(settings(tls_node, "ps-noca"), tmp_path)
    await untrusting.start()
    await untrusting.submit(batch)
    worker = untrusting.workers["es"]
    await until(lambda: "CERTIFICATE_VERIFY_FAILED" in (worker.last_error or ""), 60,
                "a certificate verification error from the sink")
    assert worker.spool is not None and worker.spool.pending == len(batch)  # held, not dropped
    assert worker.dead_lettered == 0 and worker.delivered == 0  # retriable: nothing rejected
    await untrusting.stop()
    assert await asyncio.to_thread(count, tls_node, "ps-noca-*") == 0

    # The same spool, now with the CA: everything held is delivered, once.
    trusting = AlertRouter(settings(tls_node, "ps-noca", ca_certs=str(pki.cert)), tmp_path)
    await trusting.start()
    await trusting.wait_idle(60)
    await trusting.stop()
    assert await asyncio.to_thread(count, tls_node, "ps-noca-*") == len(batch)

    logs = rendered(caplog.records)
    assert "CERTIFICATE_VERIFY_FAILED" in logs  # the failure is logged, with its reason
    leaked = sorted(form for form in password_forms(tls_node) if form in logs)
    assert not leaked

