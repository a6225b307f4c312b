"""The no-auth mode's guard against other web sites: cross-site requests and DNS rebinding.

Without tokens (the embedded default, on loopback) any page the operator's
browser opens could otherwise post to the API. A request is refused (403) when:

* ``host``: its ``Host`` is not one of the server's names: loopback names, the
  bind address, ``api.allowed_hosts``, or an IP address (a page rebound through
  DNS always carries the attacker's *name*, never an address);
* ``origin``: it carries an ``Origin`` other than the server's own (``null`` too);
* ``content_type``: it changes state (POST, PUT, PATCH, DELETE) without a
  JSON or NDJSON content type and without the ``X-Pipesentry-Client`` header, the
  two things a browser cannot send cross-site without asking the server first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import Scope

from service.api.content import JSON_TYPES

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "localhost.localdomain"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLIENT_HEADER = "x-pipesentry-client"
DEFAULT_PORTS = {"http": 80, "https": 443}


def _split_host(value: str, scheme: str) -> tuple[str, int] | None:
    """``host[:port]`` (IPv6 in brackets) as a lower-case name and a port; None if malformed."""
    try:
        parts = urlsplit(f"//{value}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host.rstrip(".").lower(), port if port is not None else DEFAULT_PORTS.get(scheme, 80)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SameOrigin:
    """Decides whether a request without a token comes from the server's own pages or tools."""

    def __init__(self, bind_host: str, allowed_hosts: Iterable[str]) -> None:
        allowed = {h.strip().rstrip(".").lower() for h in allowed_hosts}
        self.any_host = "*" in allowed
        bind = bind_host.strip("[]").lower()
        self.hosts = frozenset(LOOPBACK_NAMES | allowed | ({bind} if bind not in WILDCARD_BINDS else set()))

    def host_allowed(self, host: str) -> bool:
        return self.any_host or host in self.hosts or _is_address(host)

    def refusal(self, scope: Scope) -> tuple[str, str] | None:
        """(reason word, message) when the request must be refused, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        scheme = scope.get("scheme", "http")
        own = _split_host(headers.get("host", ""), scheme)
        if own is None or not self.host_allowed(own[0]):
            return "host", ("Host header names no host this server answers to without tokens "
                            "(add it to api.allowed_hosts, or configure api.tokens)")
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            theirs = _split_host(parts.netloc, parts.scheme) if parts.scheme in DEFAULT_PORTS else None
            if theirs != own:
                return "origin", "cross-origin requests are refused without tokens (Origin is not this server)"
        if scope["method"] in STATE_CHANGING and CLIENT_HEADER not in headers:
            kind = headers.get("content-type", "").partition(";")[0].strip().lower()
            if kind not in JSON_TYPES:
                return "content_type", ("a request that changes state needs a JSON content type "
                                        "(application/json, application/x-ndjson) or the X-Pipesentry-Client "
                                        "header")
        return None
