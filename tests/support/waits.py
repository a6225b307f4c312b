"""Waiting on a condition instead of sleeping: the one poll loop of the suite and the benches.

A test that waits for something (an alert, a commit, a metric) polls it here with a deadline;
it never sleeps a fixed time and asserts afterwards, which is slow where it passes and flaky on
a loaded machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol


class Alive(Protocol):
    def alive(self) -> bool: ...

    def log(self) -> str: ...


async def until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
                process: Alive | None = None) -> None:
    """Poll ``predicate`` (a plain or async callable) until it is truthy, else fail naming ``what``.

    With ``process`` (a child ``pipesentry run``), its exit also fails the wait, with its log: a dead
    process would otherwise only show up as a timeout. The poll interval grows from 10 ms to 100 ms
    so a short wait stays short and a long one (a broker round trip) does not spin.
    """
    deadline = time.monotonic() + timeout
    interval = 0.01
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if process is not None and not process.alive():
            raise AssertionError(f"pipesentry run exited while waiting for {what}:\n{process.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{process.log()}" if process else ""))
        await asyncio.sleep(interval)
        interval = min(interval * 2, 0.1)
