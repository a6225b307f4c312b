"""Console sessions: lifetime, idle end, the cap on their number, CSRF comparison, and the sign-in limiter."""

from __future__ import annotations

from service.api.principal import Principal
from service.console.sessions import COOKIE, SessionStore, SignInLimiter, cookie_value
from tests.support.alerts import Clock

WHO = Principal("alice", "analyst", via="session")


def test_a_session_ends_at_its_ttl_after_idling_and_at_the_tokens_expiry() -> None:
    clock = Clock(1000.0)
    store = SessionStore(ttl_s=100, idle_s=30, max_sessions=10, clock=clock)
    s = store.create(WHO)
    assert len(s.id) >= 40 and s.csrf != s.id
    for _ in range(4):  # used every 20 s: the idle clock restarts
        clock.now += 20
        assert store.get(s.id) is s
    clock.now += 25  # 105 s after sign-in: past the lifetime
    assert store.get(s.id) is None and len(store) == 0
    idle = store.create(WHO)
    clock.now += 31
    assert store.get(idle.id) is None
    capped = store.create(WHO, not_after=clock.now + 5)
    clock.now += 6
    assert store.get(capped.id) is None


def test_sessions_are_capped_oldest_first_and_can_be_ended() -> None:
    store = SessionStore(ttl_s=100, idle_s=100, max_sessions=2, clock=Clock())
    a, b, c = store.create(WHO), store.create(WHO), store.create(WHO)
    assert store.get(a.id) is None and store.get(b.id) is b and store.get(c.id) is c
    assert store.end(b.id) and not store.end(b.id) and store.get(b.id) is None
    assert store.get(None) is None and store.get("") is None and store.get("nope") is None


def test_csrf_tokens_compare_exactly() -> None:
    s = SessionStore(100, 100, 10, Clock()).create(WHO)
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok(None) and not s.csrf_ok("") and not s.csrf_ok(s.csrf[:-1]) and not s.csrf_ok(s.csrf + "x")


def test_the_limiter_counts_failures_per_address_within_the_window() -> None:
    clock = Clock(0.0)
    limiter = SignInLimiter(failures=2, window_s=60, clock=clock, max_clients=3)
    limiter.failed("10.0.0.1")
    assert not limiter.blocked("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1") and not limiter.blocked("10.0.0.2")
    clock.now += 61
    assert not limiter.blocked("10.0.0.1")
    for n in range(10):  # bounded memory: the oldest addresses are forgotten
        limiter.failed(f"10.0.1.{n}")
    assert len(limiter._seen) == 3


def test_the_cookie_is_found_among_others() -> None:
    headers = [(b"cookie", f"a=1; {COOKIE}=abc; b=2".encode())]
    assert cookie_value(headers) == "abc"
    assert cookie_value([(b"cookie", b"a=1")]) is None and cookie_value([]) is None
