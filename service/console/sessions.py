"""Console sign-in sessions: a named API token exchanged for a server-side session.

The browser holds only a random session id in an ``HttpOnly``, ``SameSite=Strict``
cookie (``Secure`` over TLS); the token itself is never stored by the server nor
handed to the page. Each session carries its own CSRF token, which every
state-changing request authenticated by the cookie must echo (hidden form field
``csrf`` or header ``X-CSRF-Token``). Sessions live in memory: a restart signs
everybody out, which is the safe failure. They expire ``console.session_ttl_s``
after sign-in and ``console.idle_timeout_s`` after their last use, and at most
``console.max_sessions`` exist (the oldest goes first).

Failed sign-ins are rate-limited per client address (:class:`SignInLimiter`).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time only an annotation: service.api imports this module
    from service.api.principal import Principal

COOKIE = "pipesentry_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


@dataclass(slots=True)
class Session:
    id: str
    principal: Principal
    csrf: str
    created: float
    last_used: float
    expires: float = field(default=0.0)

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf.encode(), presented.encode())


class SessionStore:
    """In-memory sessions keyed by their random id; ``clock`` is unix seconds."""

    def __init__(self, ttl_s: float, idle_s: float, max_sessions: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, principal: Principal, not_after: float | None = None) -> Session:
        """A new session for ``principal``; it ends at ``not_after`` at the latest (the token's expiry)."""
        now = self._clock()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session = Session(id=secrets.token_urlsafe(32), principal=principal, csrf=secrets.token_urlsafe(32),
                          created=now, last_used=now,
                          expires=min(now + self.ttl_s, not_after if not_after is not None else now + self.ttl_s))
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id`` (its idle clock restarts), or None."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires or now - session.last_used >= self.idle_s:
            del self._sessions[session_id]
            return None
        session.last_used = now
        return session

    def end(self, session_id: str | None) -> bool:
        return self._sessions.pop(session_id or "", None) is not None


class SignInLimiter:
    """At most ``failures`` failed sign-ins per ``window_s`` from one client address; bounded memory."""

    def __init__(self, failures: int, window_s: float, clock: Callable[[], float] = time.time,
                 max_clients: int = 10_000) -> None:
        self.failures = failures
        self.window_s = window_s
        self._clock = clock
        self._max_clients = max_clients
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str) -> deque[float]:
        now = self._clock()
        times = self._seen.get(client)
        if times is None:
            return deque()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        return times

    def blocked(self, client: str) -> bool:
        return len(self._recent(client)) >= self.failures

    def failed(self, client: str) -> None:
        times = self._recent(client)
        times.append(self._clock())
        self._seen[client] = times
        self._seen.move_to_end(client)
        while len(self._seen) > self._max_clients:
            self._seen.popitem(last=False)


def cookie_value(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> str | None:
    """The session cookie's value from raw ASGI headers."""
    for name, value in headers:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == COOKIE and val:
                    return val
    return None
