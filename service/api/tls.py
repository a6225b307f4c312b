"""HTTPS for the API: the server's SSL context, certificate rotation, and client certificates (mTLS).

uvicorn does not put the TLS session into the ASGI scope, so :class:`TlsH11Protocol`
(uvicorn's h11 protocol, one instance per connection) reads the verified peer
certificate from the transport's ``ssl_object`` once the handshake is done and
adds it to the connection's ``state``; every request's ``scope["state"]`` is a copy
of it, and :func:`peer_certificate` reads it back. Python only reports a peer
certificate that the handshake verified against ``api.tls.client_ca_file``.

:class:`ClientIdentities` (ASGI middleware) maps such a certificate to a
:class:`~service.api.principal.Principal` (``via="client-certificate"``) by its
subject (``CN=<name>`` or the whole subject, ``CN=x,O=y`` in certificate order)
or one of its subject alternative names.

:class:`ServerTls` owns the one live ``ssl.SSLContext``. Its :meth:`~ServerTls.watch`
task polls the certificate and key files (mtime, size, inode); on a change it
checks the new pair in a scratch context and only then loads it into the live
context with ``load_cert_chain``, so new handshakes use it while open connections
keep theirs. A bad pair is logged, counted
(``pipesentry_api_tls_reloads_total{result="failed"}``) and the old one stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from service import metrics
from service.api.principal import Principal
from service.config import ClientIdentitySettings, TlsSettings
from service.errors import ServiceError
from service.waits import stopped_within

log = logging.getLogger(__name__)
PEER_KEY = "tls_peer"

_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "localityName": "L", "stateOrProvinceName": "ST", "emailAddress": "emailAddress",
          "domainComponent": "DC", "serialNumber": "serialNumber"}


class TlsError(ServiceError):
    """The API's certificate, key or client CA cannot be loaded; the message names the file, never key bytes."""


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """A client certificate the handshake verified."""

    subject: str
    """``CN=shipper,O=ci``: short attribute names, in the certificate's order."""
    common_name: str | None
    sans: tuple[str, ...]

    @classmethod
    def from_peercert(cls, cert: dict[str, Any]) -> PeerCertificate:
        parts: list[str] = []
        common_name: str | None = None
        for rdn in cert.get("subject", ()):
            for name, value in rdn:
                parts.append(f"{_SHORT.get(name, name)}={value}")
                if name == "commonName" and common_name is None:
                    common_name = value
        sans = tuple(str(value) for _, value in cert.get("subjectAltName", ()))
        return cls(subject=",".join(parts), common_name=common_name, sans=sans)


def peer_certificate(conn: HTTPConnection) -> PeerCertificate | None:
    """The verified client certificate of the request's connection, or None (no TLS, none sent)."""
    found = conn.scope.get("state", {}).get(PEER_KEY)
    return found if isinstance(found, PeerCertificate) else None


class TlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that hands the verified client certificate to the app via ``scope["state"]``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if cert:
            # app_state is this connection's attribute: each request's scope["state"] copies it
            self.app_state = {**self.app_state, PEER_KEY: PeerCertificate.from_peercert(cert)}


def identity_for(peer: PeerCertificate, identities: list[ClientIdentitySettings]) -> Principal | None:
    """The first configured identity whose subject or SAN matches ``peer``."""
    for ident in identities:
        if ident.subject is not None:
            wanted = ident.subject
            if wanted == peer.subject or (peer.common_name is not None and wanted == f"CN={peer.common_name}"):
                return Principal(name=ident.name, role=ident.role, via="client-certificate")
        elif ident.san is not None and ident.san in peer.sans:
            return Principal(name=ident.name, role=ident.role, via="client-certificate")
    return None


class ClientIdentities:
    """ASGI middleware: a mapped client certificate becomes ``request.state.principal``."""

    def __init__(self, app: ASGIApp, identities: list[ClientIdentitySettings]) -> None:
        self.app = app
        self.identities = identities

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state = scope.setdefault("state", {})
            peer = state.get(PEER_KEY)
            if isinstance(peer, PeerCertificate):
                principal = identity_for(peer, self.identities)
                if principal is not None:
                    state["principal"] = principal
        await self.app(scope, receive, send)


def _signature(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((0, 0, 0))
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _not_after(cert_file: Path) -> float | None:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()


class ServerTls:
    """The API's live SSL context, built from ``api.tls``; the constructor only stores settings."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self._context: ssl.SSLContext | None = None
        self._signature: tuple[tuple[int, int, int], ...] | None = None
        self.reloads = 0

    @property
    def files(self) -> tuple[Path, Path]:
        return self.settings.cert_file, self.settings.key_file

    @property
    def context(self) -> ssl.SSLContext:
        if self._context is None:
            raise TlsError("the API's TLS context is not loaded")
        return self._context

    def load(self) -> ssl.SSLContext:
        """Build the context (TLS 1.2+; client verification per ``client_certs``); raises :class:`TlsError`."""
        s = self.settings
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._signature = _signature(self.files)
        self._load_pair(ctx)
        if s.client_ca_file is not None:
            try:
                ctx.load_verify_locations(cafile=str(s.client_ca_file))
            except (ssl.SSLError, OSError) as exc:
                raise TlsError(f"api.tls.client_ca_file {str(s.client_ca_file)!r} cannot be loaded: "
                               f"{getattr(exc, 'reason', None) or exc.strerror or type(exc).__name__}") from None
            ctx.verify_mode = ssl.CERT_REQUIRED if s.client_certs == "required" else ssl.CERT_OPTIONAL
        self._context = ctx
        self._expiry()
        return ctx

    def _load_pair(self, ctx: ssl.SSLContext) -> None:
        cert, key = self.files
        try:
            ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise TlsError(f"api.tls certificate {str(cert)!r} / key {str(key)!r} cannot be loaded: {reason}") \
                from None

    def _expiry(self) -> None:
        not_after = _not_after(self.settings.cert_file)
        if not_after is not None:
            metrics.API_TLS_CERT_EXPIRY.set(not_after)

    def reload_if_changed(self) -> bool | None:
        """Load the files again if they changed: True loaded, False refused (old pair kept), None unchanged."""
        current = _signature(self.files)
        if self._context is None or current == self._signature:
            return None
        self._signature = current  # a refused pair is retried when the files change again
        try:
            self._load_pair(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))  # check before touching live
            self._load_pair(self.context)
        except TlsError as exc:
            metrics.API_TLS_RELOADS.labels("failed").inc()
            log.warning("API certificate not reloaded; the previous one stays in use", extra={"error": str(exc)})
            return False
        self.reloads += 1
        metrics.API_TLS_RELOADS.labels("ok").inc()
        self._expiry()
        log.info("API certificate reloaded", extra={"cert_file": str(self.settings.cert_file)})
        return True

    async def watch(self, stop: asyncio.Event) -> None:
        """Poll the files every ``reload_interval_s`` until ``stop`` (a supervised task).

        The reload runs on the event loop thread, the one that makes handshakes from the
        context: OpenSSL does not promise a context may change while another thread uses it."""
        while not await stopped_within(stop, self.settings.reload_interval_s):
            self.reload_if_changed()
