"""What every sink implements, and the retry/circuit-breaker policy around it.

A sink takes a batch of records (alert documents for record sinks, page
records for receivers) and reports how far it got: ``done`` records are
finished (delivered, or rejected for good and listed in ``rejected`` for the
dead-letter file); ``error`` says why it stopped early, and those records are
retried later, in order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from service.errors import RetriableError


class SinkError(RetriableError):
    """A delivery attempt failed; the records stay spooled and are retried later."""


class SinkRejected(SinkError):
    """The sink refused for good (a 4xx other than 408/425/429): retrying cannot help."""

    retriable = False


RETRIABLE_4XX = frozenset({401, 403, 408, 425, 429})
"""Client errors that mean "not now" rather than "never": timeout, too early, rate limited, and
401/403. A refused credential is the operator's to fix (a rotated key, a revoked token), and every
alert would be refused alike, so the alerts wait in the spool (the sink shows down and the failure
counter rises) instead of being dead-lettered one by one while nobody is paged."""


def retriable_status(status: int | None) -> bool:
    """The one rule for every sink: no status (transport error, timeout), 401/403/408/425/429 or any 5xx."""
    return status is None or status in RETRIABLE_4XX or status >= 500


def sink_error(message: str, status: int | None) -> SinkError:
    """The error class an HTTP outcome decides: :class:`SinkError` or :class:`SinkRejected`."""
    return SinkError(message) if retriable_status(status) else SinkRejected(message)


@dataclass(slots=True)
class Outcome:
    done: int
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    error: BaseException | None = None


class Sink(Protocol):
    name: str
    kind: str
    """``record`` (every alert document) or ``page`` (routed page records)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def deliver(self, records: list[dict[str, Any]]) -> Outcome: ...


@runtime_checkable
class RawSink(Sink, Protocol):
    """The fast path of a durable record sink: it spools its own encoding of each
    document (:meth:`encode`) and delivers those bytes as they are (:meth:`deliver_raw`),
    so the worker never decodes and re-encodes JSON. Sinks declare it by subclassing;
    the worker and router tell with ``isinstance``."""

    def encode(self, doc: dict[str, Any]) -> bytes: ...
    async def deliver_raw(self, payloads: list[bytes]) -> Outcome: ...


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**n))``."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; after ``reset_s`` one trial
    attempt is let through (half-open); a success closes it."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self.threshold = failures
        self.reset_s = reset_s
        self.failures = 0
        self.opened_at: float | None = None

    def allow(self, now: float) -> bool:
        return self.opened_at is None or now - self.opened_at >= self.reset_s

    def wait(self, now: float) -> float:
        return 0.0 if self.opened_at is None else max(0.0, self.opened_at + self.reset_s - now)

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = now

    @property
    def open(self) -> bool:
        return self.opened_at is not None
