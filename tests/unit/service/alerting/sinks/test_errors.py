"""One rule decides whether a failed delivery is retried: ``retriable_status``, for every sink."""

from __future__ import annotations

import asyncio

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from service.alerting.sinks.base import SinkError, SinkRejected, retriable_status, sink_error
from service.alerting.sinks.webhook import WebhookReceiver

PAGE = {"action": "trigger", "dedup_key": "k", "summary": "s"}


def _deliver(status: int, pages: int = 2) -> tuple[int, list[str], BaseException | None]:
    async def run() -> tuple[int, list[str], BaseException | None]:
        receiver = WebhookReceiver("hook", "http://receiver.test/x", None, {}, 1.0)
        receiver._client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(status)))
        try:
            outcome = await receiver.deliver([dict(PAGE) for _ in range(pages)])
        finally:
            await receiver.stop()
        return outcome.done, [reason for _, reason in outcome.rejected], outcome.error

    return asyncio.run(run())


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=200, max_value=599))
def test_http_receivers_follow_the_shared_rule(status: int) -> None:
    done, rejected, error = _deliver(status)
    if status < 300:
        assert (done, rejected, error) == (2, [], None)
    elif retriable_status(status):
        assert done == 0 and rejected == [] and isinstance(error, SinkError) and error.retriable
    else:
        assert done == 2 and len(rejected) == 2 and error is None
    assert type(sink_error("x", status)) is (SinkError if retriable_status(status) else SinkRejected)


def test_every_5xx_is_retried_as_documented() -> None:
    """docs/alerting.md: 408/425/429/5xx = retry later. A 507 (the receiver's disk is full) was dead-lettered."""
    for status in (500, 501, 503, 505, 507, 599):
        done, rejected, error = _deliver(status)
        assert (done, rejected) == (0, []) and isinstance(error, SinkError), status
    for status in (400, 404, 410, 422):
        done, rejected, error = _deliver(status)
        assert done == 2 and len(rejected) == 2 and error is None, status


def test_a_refused_credential_keeps_the_pages_for_a_retry() -> None:
    """401/403 dead-lettered every page while a rotated key was being fixed; nobody got paged."""
    for status in (401, 403):
        done, rejected, error = _deliver(status)
        assert (done, rejected) == (0, []) and isinstance(error, SinkError) and error.retriable, status
