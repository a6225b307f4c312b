"""Deterministic disk-fault injection for the spool and store tests.

:class:`DiskFaults` patches the spool's write points (and ``os.replace`` for the
cursor) so a test turns ENOSPC/EIO on and off at one named point; nothing
else on the machine sees a fault.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from typing import Any

import pytest

from service import metrics


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until ``cond()`` holds (polling the event loop), or fail with ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class DiskFaults:
    """Fail chosen write points with ``OSError(err)`` while ``active`` names them.

    Points: ``write`` (segment data), ``fsync``, ``cursor`` (the cursor's
    ``os.replace``), ``open`` (a new segment or cursor file), ``dead_letter``.
    """

    POINTS = ("write", "fsync", "cursor", "open", "dead_letter")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, err: int = errno.ENOSPC) -> None:
        from service.alerting import spool as spool_mod
        from service.alerting import worker as worker_mod

        self.active: set[str] = set()
        self.err = err
        self.hits: dict[str, int] = {}
        real_replace = os.replace

        def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
            if str(dst).endswith("cursor"):
                self._check("cursor")
            real_replace(src, dst, *a, **kw)

        monkeypatch.setattr(os, "replace", replace)
        for point, attr, mod in (("write", "_write", spool_mod), ("fsync", "_fsync", spool_mod),
                                 ("open", "_open", spool_mod), ("dead_letter", "_append_lines", worker_mod)):
            if hasattr(mod, attr):
                real = getattr(mod, attr)
                monkeypatch.setattr(mod, attr, self._wrap(point, real))

    def _wrap(self, point: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **kw: Any) -> Any:
            self._check(point)
            return real(*a, **kw)

        return wrapped

    def _check(self, point: str) -> None:
        if point in self.active:
            self.hits[point] = self.hits.get(point, 0) + 1
            raise OSError(self.err, os.strerror(self.err))
