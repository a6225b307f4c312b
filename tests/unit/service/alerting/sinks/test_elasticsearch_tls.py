"""The search sink's TLS settings fail clearly before any connection (the real HTTPS node is in
tests/integration/test_sinks_elasticsearch_tls.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.alerting.sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkSettings
from tests.support.tls import TestCA


def test_ca_certs_with_a_plain_http_host_is_refused_without_echoing_the_host() -> None:
    with pytest.raises(ValidationError, match="not every host is https://") as caught:
        ElasticsearchSinkSettings(hosts=["https://a:9200", "http://writer:hunter2@b:9200"], ca_certs="/ca.pem")
    assert "hunter2" not in "".join(str(e["msg"]) for e in caught.value.errors())


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_a_missing_ca_file_is_named(tmp_path: Path, flavor: str) -> None:
    missing = tmp_path / "no-such-ca.pem"
    sink = ElasticsearchSink(ElasticsearchSinkSettings(name="es", flavor=flavor, hosts=["https://127.0.0.1:9"],
                                                       ca_certs=str(missing)))
    with pytest.raises(ValueError, match=r"es: ca_certs '.*no-such-ca\.pem' is not a readable file"):
        sink._make_client()


def test_a_file_without_a_certificate_is_named(tmp_path: Path) -> None:
    ca = tmp_path / "empty.pem"
    ca.write_text("not a certificate\n")
    sink = ElasticsearchSink(ElasticsearchSinkSettings(name="es", hosts=["https://127.0.0.1:9"], ca_certs=str(ca)))
    with pytest.raises(ValueError, match=r"es: ca_certs '.*empty\.pem' holds no usable CA certificate"):
        sink._make_client()


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
async def test_a_ca_file_makes_a_client(tmp_path: Path, flavor: str) -> None:
    ca = TestCA(tmp_path)
    sink = ElasticsearchSink(ElasticsearchSinkSettings(name="es", flavor=flavor, hosts=["https://127.0.0.1:9"],
                                                       ca_certs=str(ca.cert)))
    client = sink._make_client()
    await client.close()
