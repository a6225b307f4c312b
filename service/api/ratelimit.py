"""Per-caller rate limits of event ingest: two token buckets (events/s, bytes/s) per principal.

A request is admitted while neither of its caller's buckets is in debt, then
charged in full (bytes before parsing, events once counted). So a request
bigger than the burst still passes, and the caller's next one waits until the
debt is paid back; the wait is the 429's ``Retry-After``. Buckets are keyed by
the principal's name: one per configured token (one shared ``anonymous``
bucket without tokens), so their number is bounded by the configuration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from service.config import IngestRateSettings


class Bucket:
    """``rate`` units a second, at most ``size`` saved up; ``level`` below zero is debt."""

    __slots__ = ("level", "rate", "size", "stamp")

    def __init__(self, rate: float, size: float, now: float) -> None:
        self.rate, self.size = rate, size
        self.level, self.stamp = size, now

    def refill(self, now: float) -> None:
        self.level = min(self.size, self.level + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def wait_s(self) -> float:
        """Seconds until the bucket is out of debt (0: admit now)."""
        return 0.0 if self.level >= 0 else -self.level / self.rate


class IngestLimiter:
    def __init__(self, settings: IngestRateSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def _bucket(self, name: str, kind: str, rate: float | None, now: float) -> Bucket | None:
        if rate is None:
            return None
        bucket = self._buckets.get((name, kind))
        if bucket is None:
            bucket = self._buckets[(name, kind)] = Bucket(rate, rate * self.settings.burst_s, now)
        bucket.refill(now)
        return bucket

    def admit(self, name: str, nbytes: int) -> int:
        """0 when ``name`` may send a request of ``nbytes`` now (the bytes are charged), else the
        whole seconds to wait (for ``Retry-After``)."""
        now = self._clock()
        events = self._bucket(name, "events", self.settings.events_per_s, now)
        data = self._bucket(name, "bytes", self.settings.bytes_per_s, now)
        wait = max((b.wait_s() for b in (events, data) if b is not None), default=0.0)
        if wait > 0:
            return max(1, math.ceil(wait))
        if data is not None:
            data.level -= nbytes
        return 0

    def charge_events(self, name: str, count: int) -> None:
        """Charge ``count`` events to ``name`` once the admitted body has been counted."""
        bucket = self._bucket(name, "events", self.settings.events_per_s, self._clock())
        if bucket is not None:
            bucket.level -= count
