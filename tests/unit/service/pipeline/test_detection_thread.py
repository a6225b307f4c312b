"""Detection runs in worker threads under the detector's lock, never on the event loop: a slow rule or
a hostile event delays its own batch, not the API, health checks or other inputs."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from aiokafka import TopicPartition

from detectors.model import Origin
from service.config import StdinSettings
from service.detection import Detector, compile_detection
from service.pipeline import Pipeline
from service.sources.base import InputSpec, RawMessage
from tests.support.kafka import ci_records, kafka_runner
from tests.support.routers import FakeRouter
from tests.support.rules import CURL_RULE
from tests.support.waits import until


class GatedProcess:
    """Wraps ``Detector.process``: records the calling thread and holds each call until released."""

    def __init__(self, detector: Detector) -> None:
        self.inner = detector.process
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.threads: list[threading.Thread] = []
        detector.process = self  # type: ignore[method-assign]

    def __call__(self, items, now=None):
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.gate.wait(20), "test never released the gate"
        return self.inner(items, now)


def detector_for(tmp_path: Path) -> Detector:
    (tmp_path / "r.yml").write_text(CURL_RULE)
    return Detector(compile_detection([tmp_path / "r.yml"], [], skip_invalid=False).detection)


async def test_push_input_detection_leaves_the_event_loop_free_and_a_swap_waits_for_it(tmp_path):
    detector = detector_for(tmp_path)
    gated = GatedProcess(detector)
    router = FakeRouter()
    spec = InputSpec.from_settings("stdin", StdinSettings(), ["ts"])
    ingest = asyncio.create_task(Pipeline(detector, router).ingest(
        "stdin", [RawMessage(b'{"message": "curl x | sh"}', Origin("stdin", key="a"), 1.0)], spec))
    assert await asyncio.to_thread(gated.entered.wait, 20)  # the loop runs while detection is held
    swap = asyncio.create_task(asyncio.to_thread(detector.swap, detector.current))
    await asyncio.sleep(0.05)  # gives a wrong (unlocked) swap the chance to finish; a right one cannot
    assert not swap.done() and not ingest.done()
    gated.gate.set()
    result = await ingest
    await swap
    assert len(result.alerts) == 1 and len(router.accepted) == 1
    assert gated.threads and all(t is not threading.main_thread() for t in gated.threads)


async def test_kafka_detection_runs_in_its_own_thread(tmp_path):
    tp = TopicPartition("ci", 0)
    router = FakeRouter()
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(10)})
    gated = GatedProcess(runner.detector)
    gated.gate.set()
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: len(router.accepted) == 10 and consumer.commits and consumer.commits[-1][tp] == 10)
    stop.set()
    await task
    assert gated.threads and all(t is not threading.main_thread() for t in gated.threads)


async def test_an_inline_pipeline_detects_in_the_calling_thread(tmp_path):
    """``inline`` (the offline replay: ``eval``, ``anomaly replay``): no thread hand-off per batch."""
    detector = detector_for(tmp_path)
    gated = GatedProcess(detector)
    gated.gate.set()
    router = FakeRouter()
    spec = InputSpec.from_settings("stdin", StdinSettings(), ["ts"])
    result = await Pipeline(detector, router, inline=True).ingest(
        "stdin", [RawMessage(b'{"message": "curl x | sh"}', Origin("stdin", key="a"), 1.0)], spec)
    assert len(result.alerts) == 1 and len(router.accepted) == 1
    assert gated.threads == [threading.current_thread()]
