"""The input side of the pipeline core: a :class:`Source` yields :class:`Batch` es, :func:`drive`
runs each through a :class:`~service.pipeline.core.Pipeline` and acknowledges it.

A batch is acknowledged only once the pipeline has handed its alerts to the router and its
rejects to the dead letters: a follower then records its file position, the stdin reader
reads on, an HTTP request is answered, a replay notes which lines it has read. When the
pipeline fails, the batch decides (``retry``): re-run it with backoff (stdin and files
cannot re-read what they handed over) or give up (an HTTP client retries itself).

Adding an input: write a class with a ``name`` and an async ``batches(stop)`` generator
(see :mod:`service.sources.filetail`), then start ``drive(source, pipeline, stop)`` for it
in :mod:`service.app`. Kafka is the exception: its loop (:mod:`service.sources.kafka.runner`) overlaps
fetch, screen, detection and commits across batches, which this one-at-a-time driver does not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.pipeline.core import IngestResult
from service.sources.base import InputSpec, RawMessage

log = logging.getLogger(__name__)


async def _no_ack(result: IngestResult) -> None:
    return None


def _always_retry(error: Exception) -> bool:
    return True


@dataclass
class Batch:
    """Messages of one input read with one spec, with what to do once they are through."""

    messages: Sequence[RawMessage]
    spec: InputSpec
    ack: Callable[[IngestResult], Awaitable[None]] = _no_ack
    """Called once the pipeline accepted the batch (alerts with the router)."""
    retry: Callable[[Exception], bool] = _always_retry
    """Called when the pipeline failed: True to run the batch again (with backoff), False to drop it
    (the source reports the failure itself, e.g. an HTTP 503)."""


class Ingests(Protocol):
    """What drives a batch: :class:`~service.pipeline.core.Pipeline` (or a test's stand-in)."""

    async def ingest(self, source: str, messages: Sequence[RawMessage], spec: InputSpec) -> IngestResult: ...


class Source(Protocol):
    """An input: ``name`` labels its metrics, ``batches`` reads until ``stop`` (or the input ends)."""

    name: str

    def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]: ...


async def run_batch(pipeline: Ingests, name: str, batch: Batch, *, initial_delay_s: float = 0.2,
                    max_delay_s: float = 5.0) -> IngestResult | None:
    """One batch through ``pipeline``, retried while ``batch.retry`` says so; acknowledged once
    accepted. None: the batch was given up."""
    delay = initial_delay_s
    while True:
        try:
            result = await pipeline.ingest(name, batch.messages, batch.spec)
        except Exception as exc:
            if not batch.retry(exc):
                return None
            log.warning("batch not accepted; retrying", extra={
                "input": name, "error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            continue
        await batch.ack(result)
        return result


async def drive(source: Source, pipeline: Ingests, stop: asyncio.Event) -> None:
    """Run every batch of ``source`` through ``pipeline`` in order until the source ends."""
    batches = source.batches(stop)
    try:
        async for batch in batches:
            await run_batch(pipeline, source.name, batch)
    finally:
        await batches.aclose()  # type: ignore[attr-defined]
