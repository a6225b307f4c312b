"""Standard input: newline-delimited events, read in a thread, handed on batch by batch.

A thread does the blocking reads (stdin may be a pipe, a file or a socket),
so the event loop never blocks on it. Each chunk's complete lines form one
batch, and the thread waits until the pipeline has acknowledged it before reading
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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import BinaryIO

from service.pipeline.core import IngestResult
from service.pipeline.source import Batch
from service.sources.base import InputSpec, LineSplitter, RawMessage
from service.sources.http import content_origin

log = logging.getLogger(__name__)

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


class StdinSource:
    """Standard input (or any readable stream) as a :class:`~service.pipeline.source.Source`.

    The reader thread hands each chunk's lines over and waits until the batch is acknowledged:
    stdin cannot be re-read, so the driver retries a refused batch until it is accepted.
    """

    name = "stdin"

    def __init__(self, spec: InputSpec, *, stream: BinaryIO | None = None, max_line: int = 1_048_576) -> None:
        self.spec = spec
        self._stream = stream
        self._max_line = max_line
        self.lines = 0
        """Lines acknowledged so far."""

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]:
        """Until the stream ends (``stop`` is not awaited: the reader may block on an idle pipe;
        the service cancels this input instead)."""
        source = self._stream if self._stream is not None else sys.stdin.buffer
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[list[bytes], threading.Event] | BaseException | None] = asyncio.Queue()
        # A daemon thread, not the default executor: a read blocked on an idle pipe must not hold up exit.
        threading.Thread(target=_read_loop, args=(source, loop, queue, self._max_line), name="stdin-reader",
                         daemon=True).start()
        while True:
            entry = await queue.get()
            if entry is None:
                log.info("stdin closed", extra={"lines": self.lines})
                return
            if isinstance(entry, BaseException):
                raise entry
            lines, accepted = entry
            yield Batch(lines_to_messages(lines), self.spec, self._acknowledge(len(lines), accepted))

    def _acknowledge(self, count: int, accepted: threading.Event) -> Callable[[IngestResult], Awaitable[None]]:
        async def ack(result: IngestResult) -> None:
            self.lines += count
            accepted.set()  # the reader thread reads on

        return ack


def _read_loop(stream: BinaryIO, loop: asyncio.AbstractEventLoop,
               queue: asyncio.Queue[tuple[list[bytes], threading.Event] | BaseException | None],
               max_line: int) -> None:
    """Runs in a thread: read, split, hand on and wait for the acknowledgement; None at the end."""
    try:
        splitter = LineSplitter(max_line)
        fd = stream.fileno()
        while True:
            chunk = os.read(fd, CHUNK)
            lines = [line for _, line in (splitter.feed(chunk) if chunk else splitter.flush())]
            if lines:
                accepted = threading.Event()
                loop.call_soon_threadsafe(queue.put_nowait, (lines, accepted))
                accepted.wait()
            if not chunk:
                break
    except BaseException as exc:  # report to the awaiting generator, whatever happened
        loop.call_soon_threadsafe(queue.put_nowait, exc)
        return
    loop.call_soon_threadsafe(queue.put_nowait, None)
