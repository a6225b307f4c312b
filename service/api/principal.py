"""Who made a request: the one place the API records the caller's identity.

Authentication (:mod:`service.api.auth`) stores a :class:`Principal` on
``request.state.principal``; the audit trail, the access log, silences
(``created_by``) and rate limits read it back with :func:`principal_of`. A
request nobody authenticated (no tokens configured: the loopback default) is
``ANONYMOUS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: the token's configured ``name`` (never the token) and the role it was granted."""

    name: str
    role: str
    via: str = "token"
    """How the caller was identified: ``token``, ``client-certificate`` or ``none`` (auth off)."""


ANONYMOUS = Principal(name="anonymous", role="admin", via="none")
"""With authentication off every caller may do everything (loopback only by default)."""


def principal_of(conn: HTTPConnection) -> Principal:
    """The principal authentication stored on the request, or ``ANONYMOUS`` when none did."""
    found = getattr(conn.state, "principal", None)
    return found if isinstance(found, Principal) else ANONYMOUS
