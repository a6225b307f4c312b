"""HTTPS for the API on the real server (the service's uvicorn), with a PKI made in the test:
https works, plain http and untrusted certificates are refused, a rotated certificate is picked up
without a restart, client certificates stand for principals and are required per role."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import Service, StartupError
from service.config import Settings
from tests.support.api import ADMIN, READER, TOKENS, auth
from tests.support.rules import CURL_RULE as RULE
from tests.support.security import captured
from tests.support.tls import TestCA, client_context, served_serial


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = TestCA(tmp_path / "pki")
    other = TestCA(tmp_path / "other", name="someone else's CA")
    return {"ca": ca, "other": other, "server": ca.issue("server", "pipesentry", server=True),
            "shipper": ca.issue("shipper", "shipper"),
            "robot": ca.issue("robot", "robot-7", sans=("robot.ci.example",), organization="ci"),
            "stranger": other.issue("stranger", "shipper")}


def tls_settings(pki: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"cert_file": str(pki["server"].cert), "key_file": str(pki["server"].key), **extra}


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, tls: dict[str, Any], **api: Any) -> AsyncIterator[tuple[Service, str]]:
    """The whole service with its API on an ephemeral loopback port; yields it and its https base URL."""
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "curl.yml").write_text(RULE)
    settings = Settings(rules={"paths": [str(rules)], "watch": False},  # type: ignore[arg-type]
                        data_dir=tmp_path / "data", stdin={"enabled": False},  # type: ignore[arg-type]
                        api={"host": "127.0.0.1", "port": 0, "tokens": TOKENS, "tls": tls, **api})  # type: ignore[arg-type]
    service = Service(settings)
    task = asyncio.create_task(service.run(install_signals=False))
    deadline = time.monotonic() + 30
    while not service.api_serving:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "the API did not start"
        await asyncio.sleep(0.01)
    assert service.server is not None
    port = service.server.servers[0].sockets[0].getsockname()[1]
    try:
        yield service, f"https://127.0.0.1:{port}"
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)


def client(base: str, pki: dict[str, Any], cert: str | None = None, trust: str = "ca") -> httpx.AsyncClient:
    ctx = client_context(pki[trust].cert, pki[cert] if cert else None)
    return httpx.AsyncClient(base_url=base, verify=ctx, timeout=10)


async def test_https_works_and_plain_http_and_untrusted_servers_fail(tmp_path, pki):
    async with serving(tmp_path, tls_settings(pki)) as (_, base):
        async with client(base, pki) as c:
            assert (await c.get("/healthz")).json() == {"status": "ok"}
            assert (await c.get("/api/v1/rules", headers=auth(READER))).status_code == 200
        async with httpx.AsyncClient(base_url=base.replace("https", "http"), timeout=10) as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get("/healthz")
        async with client(base, pki, trust="other") as wrong_ca:  # the server is not who this client trusts
            with pytest.raises(httpx.ConnectError):
                await wrong_ca.get("/healthz")


async def test_required_client_certificates_refuse_others_at_the_handshake(tmp_path, pki):
    tls = tls_settings(pki, client_ca_file=str(pki["ca"].cert), client_certs="required")
    async with serving(tmp_path, tls) as (_, base):
        async with client(base, pki, cert="shipper") as ok:
            assert (await ok.get("/api/v1/rules", headers=auth(READER))).status_code == 200
        for cert in (None, "stranger"):  # none, or one issued by a CA the server does not trust
            async with client(base, pki, cert=cert) as refused:
                with pytest.raises(httpx.TransportError):
                    await refused.get("/healthz")


async def test_a_rotated_certificate_is_served_without_restart_and_a_bad_one_is_refused(tmp_path, pki):
    from service import metrics

    failed = metrics.API_TLS_RELOADS.labels("failed")
    failures_before = failed._value.get()
    async with serving(tmp_path, tls_settings(pki, reload_interval_s=0.05)) as (service, base):
        port = int(base.rsplit(":", 1)[1])
        first = pki["server"].serial
        assert await asyncio.to_thread(served_serial, port, pki["ca"].cert) == first
        # a broken key file: refused, counted, the old pair is still served
        pki["server"].key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        assert service.tls is not None
        await wait_for(lambda: failed._value.get() > failures_before)
        assert await asyncio.to_thread(served_serial, port, pki["ca"].cert) == first
        # the rotation proper: a new pair written over the files
        rotated = pki["ca"].issue("server", "pipesentry", server=True)
        await wait_for(lambda: service.tls is not None and service.tls.reloads >= 1)
        assert await asyncio.to_thread(served_serial, port, pki["ca"].cert) == rotated.serial != first
        async with client(base, pki) as c:
            assert (await c.get("/healthz")).status_code == 200


async def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_client_certificates_stand_for_principals_in_auth_audit_and_access_log(tmp_path, pki):
    tls = tls_settings(pki, client_ca_file=str(pki["ca"].cert), client_identities=[
        {"subject": "CN=shipper", "name": "shipper", "role": "read"},
        {"san": "robot.ci.example", "name": "robot", "role": "admin"}])
    with captured("pipesentry.access") as access:
        async with serving(tmp_path, tls) as (_, base):
            # uvicorn's own access log is replaced: its protocol logs only when this logger has handlers
            assert not logging.getLogger("uvicorn.access").hasHandlers()
            async with client(base, pki, cert="shipper") as shipper:
                assert (await shipper.get("/api/v1/rules")).status_code == 200  # no token: the certificate
                assert (await shipper.post("/api/v1/rules/reload")).status_code == 403  # read role only
            async with client(base, pki, cert="robot") as robot:
                assert (await robot.post("/api/v1/rules/reload")).status_code == 200
                entries = (await robot.get("/api/v1/audit")).json()["items"]
            async with client(base, pki) as anonymous:  # optional client certs: the token still works
                assert (await anonymous.get("/api/v1/rules")).status_code == 401
                assert (await anonymous.get("/api/v1/rules", headers=auth(READER))).status_code == 200
    assert [(e["action"], e["actor"], e["via"], e["outcome"]) for e in reversed(entries)] == [
        ("auth.denied", "shipper", "client-certificate", "denied"),
        ("rules.reload", "robot", "client-certificate", "ok")]
    lines = [(r.path, r.principal, r.via, r.status) for r in access.records]  # type: ignore[attr-defined]
    assert ("/api/v1/rules", "shipper", "client-certificate", 200) in lines
    assert ("/api/v1/rules/reload", "robot", "client-certificate", 200) in lines


async def test_a_client_certificate_can_be_required_for_a_role(tmp_path, pki):
    tls = tls_settings(pki, client_ca_file=str(pki["ca"].cert), require_client_cert_for=["admin"])
    async with serving(tmp_path, tls) as (_, base):
        async with client(base, pki) as no_cert:
            refused = await no_cert.post("/api/v1/rules/reload", headers=auth(ADMIN))
            assert refused.status_code == 403 and "client certificate" in refused.json()["detail"]
            assert (await no_cert.get("/api/v1/rules", headers=auth(READER))).status_code == 200
        async with client(base, pki, cert="shipper") as with_cert:
            assert (await with_cert.post("/api/v1/rules/reload", headers=auth(ADMIN))).status_code == 200
            denied = (await with_cert.get("/api/v1/audit", params={"outcome": "denied"},
                                          headers=auth(ADMIN))).json()["items"]
    assert [(e["actor"], e["detail"]["reason"]) for e in denied] == [("ops", "client_certificate_required")]


async def test_an_unloadable_certificate_stops_the_start_with_the_file_named(tmp_path, pki):
    pki["server"].key.write_text("garbage")
    with pytest.raises(StartupError, match=r"api.tls certificate .*server.crt"):
        async with serving(tmp_path, tls_settings(pki)):
            pass


def test_client_certificate_settings_need_a_client_ca(pki):
    from service.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="client certificates need client_ca_file"):
        load_settings(overrides={"api.tls": tls_settings(pki, client_certs="required")})


def test_requiring_client_certificates_for_a_role_needs_authentication(pki):
    from service.config import ConfigError, load_settings

    tls = tls_settings(pki, client_ca_file=str(pki["ca"].cert), require_client_cert_for=["admin"])
    with pytest.raises(ConfigError, match="require_client_cert_for needs tokens"):
        load_settings(overrides={"api.tls": tls})


def test_identities_match_the_common_name_the_whole_subject_or_a_san():
    from service.api.tls import PeerCertificate, identity_for
    from service.config import ClientIdentitySettings

    peer = PeerCertificate.from_peercert({
        "subject": ((("commonName", "robot-7"),), (("organizationName", "ci"),)),
        "subjectAltName": (("DNS", "robot.ci.example"), ("URI", "spiffe://ci/robot"))})
    assert peer.subject == "CN=robot-7,O=ci"

    def first(*identities: dict[str, str]) -> str | None:
        found = identity_for(peer, [ClientIdentitySettings(**i) for i in identities])  # type: ignore[arg-type]
        return None if found is None else f"{found.name}/{found.role}/{found.via}"

    assert first({"subject": "CN=robot-7,O=ci", "name": "a", "role": "admin"}) == "a/admin/client-certificate"
    assert first({"subject": "CN=robot-7", "name": "b"}) == "b/read/client-certificate"
    assert first({"san": "spiffe://ci/robot", "name": "c", "role": "ingest"}) == "c/ingest/client-certificate"
    assert first({"subject": "CN=robot", "name": "d"}, {"san": "other.example", "name": "e"}) is None
    with pytest.raises(ValueError, match="exactly one of subject or san"):
        ClientIdentitySettings(subject="CN=x", san="x", name="f")
