"""``drive(depth > 1)``: the next batch is detected while earlier ones are submitted, batches are
acknowledged in order, a refused batch is submitted again (never detected again), and a batch
given up takes the batches queued behind it with it. Against a stand-in pipeline with the
core's two steps; the Kafka source runs the real core through it in test_sources.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from service.config import StdinSettings
from service.pipeline import Batch, IngestResult, drive
from service.sources.base import InputSpec, RawMessage
from tests.support.waits import until

SPEC = InputSpec.from_settings("file", StdinSettings(), ["@timestamp"])


class Steps:
    """Records every detection and submission; submissions wait for ``open`` and fail ``failures`` times."""

    def __init__(self, failures: int = 0) -> None:
        self.detected: list[int] = []
        self.submitted: list[int] = []
        self.open = asyncio.Event()
        self.open.set()
        self.failures = failures
        self.submitting: asyncio.Event = asyncio.Event()

    async def ingest(self, source: str, messages: Sequence[RawMessage], spec: object) -> IngestResult:
        raise AssertionError("an overlapped drive uses the steps")

    async def detect(self, source: str, messages: Sequence[RawMessage], spec: object,
                     content: object = None) -> IngestResult:
        self.detected.append(len(messages))
        return IngestResult(len(messages))

    async def submit(self, source: str, result: IngestResult) -> None:
        self.submitting.set()
        await self.open.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("router down")
        self.submitted.append(result.accepted)


class Numbered:
    """Yields batches of 1..count messages (the size names the batch); records acknowledgements."""

    name = "numbered"

    def __init__(self, count: int, give_up: frozenset[int] = frozenset()) -> None:
        self.count = count
        self.give_up = give_up
        self.acked: list[int] = []
        self.handed_out = 0

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]:
        for size in range(1, self.count + 1):
            messages = [RawMessage(b"{}", None, 0.0)] * size  # type: ignore[arg-type]
            self.handed_out = size
            yield Batch(messages, SPEC, self._ack, lambda exc, size=size: size not in self.give_up)

    async def _ack(self, result: IngestResult) -> None:
        self.acked.append(result.accepted)


async def test_later_batches_are_detected_while_one_is_submitted_and_acknowledged_in_order():
    steps, source = Steps(), Numbered(5)
    steps.open.clear()
    task = asyncio.create_task(drive(source, steps, asyncio.Event(), depth=3))
    await until(lambda: steps.detected == [1, 2, 3])  # batch 1 waits for the router, 2 and 3 are detected
    await until(lambda: source.handed_out == 4)
    assert steps.detected == [1, 2, 3] and source.acked == []  # depth 3: batch 4 waits for a slot
    steps.open.set()
    await task
    assert steps.detected == steps.submitted == source.acked == [1, 2, 3, 4, 5]


async def test_a_refused_batch_is_submitted_again_not_detected_again():
    steps, source = Steps(failures=2), Numbered(3)
    await drive(source, steps, asyncio.Event(), depth=2)
    assert steps.detected == [1, 2, 3] and source.acked == [1, 2, 3]


async def test_a_batch_given_up_is_not_acknowledged_nor_those_queued_behind_it():
    steps, source = Steps(failures=1), Numbered(4, give_up=frozenset({1}))
    steps.open.clear()
    task = asyncio.create_task(drive(source, steps, asyncio.Event(), depth=3))
    await until(lambda: steps.detected == [1, 2, 3])
    steps.open.set()
    await task
    assert source.acked == [4]  # 2 and 3 were queued behind the given-up batch 1; 4 came after


async def test_depth_one_runs_one_batch_at_a_time_through_ingest():
    seen: list[int] = []

    class Ingest:
        async def ingest(self, source: str, messages: Sequence[RawMessage], spec: object) -> IngestResult:
            seen.append(len(messages))
            return IngestResult(len(messages))

    source = Numbered(3)
    await drive(source, Ingest(), asyncio.Event())
    assert seen == source.acked == [1, 2, 3]
