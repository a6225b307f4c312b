"""The alert router seen from an input: something with ``submit(alerts)`` that accepts or refuses.

One fake serves every unit test that drives the pipeline core or the Kafka runner without the real
router (``service/alerting/router.py`` has its own tests). :class:`RecordingRouter` is different on
purpose: it wraps the *real* router (spool, store, sinks) and only adds a list of what it accepted,
for tests that need durability and the stdout/store sinks to be real.
"""

from __future__ import annotations

import asyncio
from typing import Any


class FakeRouter:
    """Keeps what it accepted; refuses like a full spool when told to.

    ``failures``: the first N submissions raise (a transient refusal the caller retries);
    ``fail``: every submission raises while it is set; ``gate``: cleared, submissions wait on it
    (a slow router), and ``offered`` counts the submissions begun (a batch reached the router).
    """

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.fail = False
        self.accepted: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.offered = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def submit(self, alerts: Any) -> None:
        self.offered += 1
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("spool full")
        if self.failures:
            self.failures -= 1
            raise RuntimeError("not now")
        self.accepted.extend(alerts)


class RecordingRouter:
    """The real alert router plus a list of every alert it accepted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.alerts: list[Any] = []

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def submit(self, alerts: Any) -> None:
        await self.inner.submit(alerts)
        self.alerts.extend(alerts)
