"""The input side of the pipeline core: a :class:`Source` yields :class:`Batch` es, :func:`drive`
runs each through a :class:`~service.pipeline.core.Pipeline` and acknowledges it.

A batch is acknowledged only once the pipeline has handed its alerts to the router and its
rejects to the dead letters: a follower then records its file position, the stdin reader
reads on, an HTTP request is answered, a replay notes which lines it has read, the Kafka
input marks the batch's offsets for commit. When the pipeline fails, the batch decides
(``retry``): try again with backoff (stdin and files cannot re-read what they handed over,
Kafka's offsets must not pass it) or give up (an HTTP client retries itself; Kafka at the end
of a shutdown that ran out of time).

``drive(..., depth=1)`` runs one batch at a time. A larger ``depth`` overlaps them: the next
batch is screened, decoded and detected while earlier ones are submitted, by one submitter
that acknowledges in order, with at most ``depth`` batches between detection and
acknowledgement. A refused batch is then submitted again, never detected again (the detectors
have moved on to later batches); when one is given up, the batches queued behind it are not
acknowledged either (an acknowledgement may cover everything before it, as a Kafka offset does).

Adding an input: write a class with a ``name`` and an async ``batches(stop)`` generator
(see :mod:`service.sources.filetail`), then start ``drive(source, pipeline, stop)`` for it
in :mod:`service.app`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from service.pipeline.core import Content, IngestResult
from service.sources.base import InputSpec, RawMessage

log = logging.getLogger(__name__)


async def _no_ack(result: IngestResult) -> None:
    return None


def _always_retry(error: Exception) -> bool:
    return True


@dataclass
class Batch:
    """Messages of one input read with one spec (or a :class:`~service.pipeline.core.Content` that
    decodes itself), with what to do once they are through."""

    messages: Sequence[RawMessage]
    spec: InputSpec | None
    ack: Callable[[IngestResult], Awaitable[None]] = _no_ack
    """Called once the pipeline accepted the batch (alerts with the router)."""
    retry: Callable[[Exception], bool] = _always_retry
    """Called when the pipeline failed: True to try again (with backoff), False to give up
    (the source reports the failure itself, e.g. an HTTP 503)."""
    content: Content | None = None
    """The batch decodes itself (``messages`` and ``spec`` unused; e.g. :class:`~service.pipeline.core.MixedSpecs`:
    messages of several log sources in one batch)."""


class Ingests(Protocol):
    """What drives a batch: :class:`~service.pipeline.core.Pipeline` (or a test's stand-in)."""

    async def ingest(self, source: str, messages: Sequence[RawMessage], spec: InputSpec) -> IngestResult: ...


@runtime_checkable
class Steps(Ingests, Protocol):
    """What drives overlapped batches: the core's two steps (see :class:`~service.pipeline.core.Pipeline`)."""

    async def detect(self, source: str, messages: Sequence[RawMessage], spec: InputSpec | None,
                     content: Content | None = None) -> IngestResult: ...

    async def submit(self, source: str, result: IngestResult) -> None: ...


class Source(Protocol):
    """An input: ``name`` labels its metrics, ``batches`` reads until ``stop`` (or the input ends)."""

    name: str

    def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]: ...


class _Backoff:
    def __init__(self, initial_s: float, max_s: float) -> None:
        self.delay = initial_s
        self.max_s = max_s

    async def wait(self, name: str, exc: Exception) -> None:
        log.warning("batch not accepted; retrying", extra={
            "input": name, "error": f"{type(exc).__name__}: {exc}", "retry_in_s": self.delay})
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.max_s)


async def run_batch(pipeline: Ingests, name: str, batch: Batch, *, initial_delay_s: float = 0.2,
                    max_delay_s: float = 5.0) -> IngestResult | None:
    """One batch through ``pipeline``, retried while ``batch.retry`` says so; acknowledged once
    accepted. None: the batch was given up."""
    assert batch.spec is not None or batch.content is not None, "a batch has a spec or a content"
    backoff = _Backoff(initial_delay_s, max_delay_s)
    while True:
        try:
            if batch.content is not None:  # decodes itself: the core's two steps, one after the other
                assert isinstance(pipeline, Steps), "a batch with a content needs the pipeline's steps"
                result = await pipeline.detect(name, batch.messages, batch.spec, batch.content)
                await pipeline.submit(name, result)
            else:
                assert batch.spec is not None
                result = await pipeline.ingest(name, batch.messages, batch.spec)
        except Exception as exc:
            if not batch.retry(exc):
                return None
            await backoff.wait(name, exc)
            continue
        await batch.ack(result)
        return result


async def drive(source: Source, pipeline: Ingests, stop: asyncio.Event, *, depth: int = 1) -> None:
    """Run every batch of ``source`` through ``pipeline`` in order until the source ends, with
    up to ``depth`` batches between detection and acknowledgement (``pipeline`` then has the
    core's :class:`Steps`)."""
    batches = source.batches(stop)
    try:
        if depth <= 1:
            async for batch in batches:
                await run_batch(pipeline, source.name, batch)
        else:
            assert isinstance(pipeline, Steps), "overlapped batches need the pipeline's steps"
            await _overlapped(source.name, batches, pipeline, depth)
    finally:
        await batches.aclose()  # type: ignore[attr-defined]


async def _overlapped(name: str, batches: AsyncIterator[Batch], pipeline: Steps, depth: int) -> None:
    """Detect batches in order while one submitter hands earlier ones on and acknowledges them in order."""
    queue: asyncio.Queue[tuple[Batch, IngestResult] | None] = asyncio.Queue()
    slots = asyncio.Semaphore(depth)

    async def submitter() -> None:
        while (entry := await queue.get()) is not None:
            batch, result = entry
            if await _submit(pipeline, name, batch, result):
                await batch.ack(result)
            else:  # given up: the batches queued behind it are not acknowledged either
                while not queue.empty():
                    if queue.get_nowait() is None:
                        return
                    slots.release()
            slots.release()

    task = asyncio.create_task(submitter(), name=f"{name}-submitter")
    try:
        async for batch in batches:
            acquired = asyncio.ensure_future(slots.acquire())
            await asyncio.wait((acquired, task), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                acquired.cancel()
                task.result()  # a crash surfaces here
            result = await pipeline.detect(name, batch.messages, batch.spec, batch.content)
            queue.put_nowait((batch, result))
        queue.put_nowait(None)
        await task  # the last batches are acknowledged before the source closes
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _submit(pipeline: Steps, name: str, batch: Batch, result: IngestResult) -> bool:
    """Submit until accepted (True) or ``batch.retry`` gives up (False)."""
    backoff = _Backoff(0.1, 5.0)
    while True:
        try:
            await pipeline.submit(name, result)
            return True
        except Exception as exc:
            if not batch.retry(exc):
                return False
            await backoff.wait(name, exc)
