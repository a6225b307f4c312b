"""The Kafka source through the overlapped drive: a revocation while batches are at every stage
(submitting, detected and queued, handed out but not detected, being screened) commits exactly
what the router accepted, and what was not accepted is not detected (the next owner reads it)."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from tests.support.kafka import ci_records, kafka_runner
from tests.support.routers import FakeRouter
from tests.support.waits import until


async def test_a_revocation_with_batches_at_every_stage_commits_exactly_what_was_accepted(tmp_path):
    tp = TopicPartition("ci", 0)
    router = FakeRouter()
    router.gate.clear()
    runner, consumer = kafka_runner(tmp_path, router, {tp: ci_records(60)}, commit_interval_s=60,
                                    max_in_flight_batches=3)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    # the router holds the first batch, the next ones pile up until the partition is paused
    await until(lambda: router.offered == 1 and consumer.paused() == {tp})
    revoking = asyncio.create_task(consumer.listener.on_partitions_revoked([tp]))
    await until(lambda: tp in runner._leaving)  # the revocation waits for the router
    router.gate.set()
    await revoking
    committed = consumer.commits[-1][tp]
    offsets = sorted(alert.origin.offset for alert in router.accepted)
    assert offsets == list(range(committed))  # every record below the commit was accepted, none past it
    assert 0 < committed < 60
    stop.set()
    await task
