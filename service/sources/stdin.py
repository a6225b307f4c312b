"""Standard input: newline-delimited events, read in a thread, handed on batch by batch.

A thread does the blocking reads (stdin may be a pipe, a file or a socket),
so the event loop never blocks on it. Each chunk's complete lines form one
batch, and the thread waits until the pipeline has accepted it before reading
more: a slow router slows the producer down instead of filling memory.
Origin keys hash the line, so re-feeding the same input yields the same
alert ids.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import BinaryIO

from service.sources.base import LineSplitter, RawMessage
from service.sources.http import content_origin

log = logging.getLogger(__name__)

Ingest = Callable[[Sequence[RawMessage]], Awaitable[object]]
CHUNK = 1 << 16


def stdin_wanted(enabled: bool | str, stream: BinaryIO | None = None) -> bool:
    """``auto`` reads stdin only when it is not a terminal (and exists)."""
    if enabled is True or enabled is False:
        return enabled
    stream = stream if stream is not None else getattr(sys.stdin, "buffer", None)
    if stream is None:
        return False
    try:
        return not os.isatty(stream.fileno())
    except (OSError, ValueError):
        return False


def lines_to_messages(lines: Sequence[bytes], input_name: str = "stdin") -> list[RawMessage]:
    now = time.time()
    return [RawMessage(line, partial(content_origin, input_name, line), now) for line in lines]


def _read_loop(stream: BinaryIO, loop: asyncio.AbstractEventLoop, ingest: Ingest, max_line: int) -> int:
    """Runs in a thread: read, split, hand on (waiting for acceptance); returns lines read."""
    splitter = LineSplitter(max_line)
    fd = stream.fileno()
    total = 0
    while True:
        chunk = os.read(fd, CHUNK)
        lines = [line for _, line in (splitter.feed(chunk) if chunk else splitter.flush())]
        if lines:
            total += len(lines)
            future = asyncio.run_coroutine_threadsafe(_ingest(ingest, lines), loop)
            future.result()
        if not chunk:
            return total


async def _ingest(ingest: Ingest, lines: Sequence[bytes]) -> None:
    delay = 0.2
    while True:
        try:
            await ingest(lines_to_messages(lines))
            return
        except Exception as exc:  # keep the batch until it is accepted: stdin cannot be re-read
            log.warning("stdin batch not accepted; retrying", extra={"error": f"{type(exc).__name__}: {exc}",
                                                                    "retry_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def read_stdin(ingest: Ingest, *, stream: BinaryIO | None = None, max_line: int = 1_048_576) -> int:
    """Read ``stream`` (default: stdin) to its end; returns the number of lines handed on."""
    source = stream if stream is not None else sys.stdin.buffer
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def reader() -> None:
        try:
            result = _read_loop(source, loop, ingest, max_line)
        except BaseException as exc:  # report to the awaiting task, whatever happened
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    # A daemon thread, not the default executor: a read blocked on an idle pipe must not hold up exit.
    threading.Thread(target=reader, name="stdin-reader", daemon=True).start()
    total = await done
    log.info("stdin closed", extra={"lines": total})
    return total


def _settle(future: asyncio.Future[int], result: int | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result or 0)
