"""Building blocks of the routing decisions: field lookup, globs, token bucket, breaker, backoff."""

from __future__ import annotations

import random

from service.alerting.matching import glob_any
from service.alerting.routes import TokenBucket
from service.alerting.sinks.base import Backoff, CircuitBreaker
from service.alerting.sinks.pagerduty import PagerDutyReceiver
from service.alerting.sinks.webhook import signature


def test_glob_any() -> None:
    assert glob_any(["attack.t1059*"], ["attack.execution", "attack.t1059.004"])
    assert glob_any(["Rule-A"], ["rule-a"])
    assert not glob_any(["attack.t1059"], ["attack.t1059.004"])
    assert not glob_any([], ["x"])


def test_token_bucket() -> None:
    bucket = TokenBucket(rate_per_min=60, burst=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.5)
    assert bucket.take(1.6)  # one token a second
    assert not bucket.take(1.7)


def test_circuit_breaker_opens_and_half_opens() -> None:
    cb = CircuitBreaker(failures=2, reset_s=10)
    cb.failure(0.0)
    assert cb.allow(0.0) and not cb.open
    cb.failure(1.0)
    assert cb.open and not cb.allow(5.0) and cb.wait(5.0) == 6.0
    assert cb.allow(11.0)
    cb.success()
    assert not cb.open and cb.wait(12.0) == 0.0


def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(0.5, 4.0, random.Random(1))
    delays = [b.next() for _ in range(8)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(d <= 4.0 for d in delays) and delays[-1] >= 2.0
    b.reset()
    assert b.next() <= 0.5


def test_webhook_signature_covers_timestamp_and_body() -> None:
    sig = signature("k", "100", b'{"a":1}')
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert sig != signature("k", "101", b'{"a":1}') and sig != signature("k", "100", b'{"a":2}')


def test_pagerduty_resolve_is_minimal() -> None:
    pd = PagerDutyReceiver("pd", "http://x/v2/enqueue", "key", 1.0)
    req = pd.render({"action": "resolve", "dedup_key": "d" * 300})
    assert req.json == {"routing_key": "key", "event_action": "resolve", "dedup_key": "d" * 255}


def test_group_cap_resolves_the_oldest_group() -> None:
    from service.alerting.config import GroupingSettings
    from service.alerting.grouping import Grouper
    from tests.support.alerts import alert, rule

    g = Grouper(GroupingSettings(max_groups=2), "http://x")
    pages = [g.add("r", alert(i, r=rule(f"rule-{i}")), 0.0) for i in range(3)]
    assert all(p is not None and p["action"] == "trigger" for p in pages)
    assert len(g) == 2
    out = g.tick(1.0)
    assert [(p["action"], p["rule"]["id"]) for p in out] == [("resolve", "rule-0")]


async def test_stdout_summary_and_full_lines() -> None:
    import io

    import orjson

    from service.alerting.sinks.stdout import StdoutSink
    from tests.support.alerts import alert

    doc = alert(1).to_document()
    out = io.BytesIO()
    await StdoutSink(stream=out).deliver([doc])
    await StdoutSink(full=True, stream=out).deliver([doc])
    short, full = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert short["alert_id"] == doc["event"]["id"] and short["matched"] == {"cmd": "curl | sh"}
    assert short["attack"] == [] and "event" not in short
    assert full == doc
