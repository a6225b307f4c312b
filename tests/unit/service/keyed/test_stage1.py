"""Stage 1 of ``state.scope: keyed``: records sent and acknowledged before the batch's alerts,
once per batch; watermarks from the input partitions' progress."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka.errors import (
    NotEnoughReplicasError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from detectors.model import LogSource, Origin
from service import metrics
from service.config import KafkaSettings, StateSettings
from service.decoders import build_decoder
from service.detection import Detector, compile_detection
from service.keyed import records
from service.keyed.records import level_row
from service.keyed.stage1 import InputView, StateRecordProducer
from service.pipeline.core import Pipeline
from service.sources.base import InputSpec, RawMessage
from tests.conftest import PROJECT_RULES
from tests.support.kafka import FakeProducer, ProducerFactory
from tests.support.routers import FakeRouter
from tests.support.waits import until

RULES = [PROJECT_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
         PROJECT_RULES / "correlations" / "ssh_brute_force.yml"]
T0 = 1_764_113_000.0


def producer(clock: list[float] | None = None, chain: bool = False,
             factory: ProducerFactory | None = None) -> StateRecordProducer:
    """Stage 1's producer (stage 2's with ``chain``) over the shared fake producers (a new one per build)."""
    now = clock if clock is not None else [T0]
    return StateRecordProducer(KafkaSettings(bootstrap_servers=["x:9092"], topics={"auth": {}}),
                               StateSettings(scope="keyed", keyed_topic="internal"), "host:1",
                               producer_factory=factory or ProducerFactory(), clock=lambda: now[0], chain=chain)


def fake(stage: StateRecordProducer) -> FakeProducer:
    built = stage.slot.current
    assert isinstance(built, FakeProducer)
    return built


def replacements(label: str) -> float:
    return metrics.REGISTRY.get_sample_value("pipesentry_kafka_producer_replacements_total",
                                             {"producer": label}) or 0.0


def delivered(built: FakeProducer) -> list[Any]:
    """Every record the fake producer was sent, unpacked."""
    return [r for _, value, _ in built.sent for r in records.unpack(value)]


def spec() -> Any:
    outcome = compile_detection(RULES, [], skip_invalid=False)
    assert outcome.detection is not None and outcome.detection.correlation is not None
    return outcome.detection.correlation.specs[0]


def record(host: str, offset: int) -> records.StateRecord:
    s = spec()
    built = records.build(s, [s.slots[0].rule_id], {"hostname": host}, T0 + offset, records.Origin("auth", 0, offset))
    assert built is not None
    return built


async def test_the_producer_is_idempotent_with_acks_all_and_packs_a_batch_per_key_partition():
    stage = producer()
    await stage.start()
    sent = fake(stage)
    assert sent.kwargs["enable_idempotence"] is True and sent.kwargs["acks"] == "all"
    batch = [record(host, offset) for offset, host in enumerate("abcabcdefa")]
    await stage.send(batch, {("auth", 0): T0 + 10})
    # one message per internal partition the batch's keys hash to (Kafka's partitioner), its records in order
    assert all(topic == "internal" and key is None for topic, _, key in sent.sent)
    assert len(sent.routed) == len(set(sent.routed))
    for (_, value, _), partition in zip(sent.sent, sent.routed, strict=True):
        expected = [r for r in batch if records.partition_for(r.key(), 3) == partition]
        assert records.unpack(value) == [records.decode(r.encode()) for r in expected]
    assert sorted(len(records.unpack(v)) for _, v, _ in sent.sent) != [1] * len(batch)


async def test_a_batch_over_the_pack_bound_makes_more_messages_in_order():
    stage = producer()
    stage._pack_bytes = 400
    await stage.start()
    batch = [record("a", offset) for offset in range(20)]  # one key: one partition
    await stage.send(batch, {})
    sent = fake(stage)
    assert len(sent.sent) > 1 and len(set(sent.routed)) == 1
    assert all(len(value) <= 400 for _, value, _ in sent.sent)
    assert delivered(sent) == [records.decode(r.encode()) for r in batch]


async def test_a_failed_acknowledgement_raises_and_does_not_count_progress():
    stage = producer()
    await stage.start()
    fake(stage).failures = [NotEnoughReplicasError()]
    with pytest.raises(NotEnoughReplicasError):
        await stage.send([record("a", 1)], {("auth", 0): T0 + 1})
    view = InputView(owned={("auth", 0)}, counts={"auth": 1})
    assert stage.watermark(view, T0).progress == ()  # nothing acknowledged: no promise


async def test_an_oversize_record_is_skipped_and_counted():
    stage = producer()
    await stage.start()
    skipped = metrics.EVENTS_SKIPPED.labels("correlation", "oversize_state_record")
    before = skipped._value.get()
    await stage.send([record("h" * records.MAX_RECORD_BYTES, 1), record("b", 2)], {})
    assert skipped._value.get() - before == 1
    assert len(fake(stage).sent) == 1


async def test_watermark_rows_busy_quiet_idle_unread_and_revoked_partitions():
    clock = [T0]
    stage = producer(clock)
    await stage.start()
    await stage.send([], {("auth", 0): T0 - 50, ("auth", 1): T0 - 40, ("auth", 4): T0 - 10})
    clock[0] = T0 + 30
    view = InputView(owned={("auth", 0), ("auth", 1), ("auth", 2), ("auth", 3)}, busy={("auth", 0)},
                     caught_up={("auth", 1), ("auth", 2)}, counts={"auth": 5})
    mark = stage.watermark(view, clock[0])
    assert mark.progress == (("auth", 0, T0 - 50),  # records left to read: its own records move it
                             ("auth", 1, T0 - 10))  # quiet: moved on by the wall time since
    assert mark.idle == (("auth", 2),)  # read to the end without a record; ("auth", 3) is still being read
    assert mark.topics == (("auth", 5),)
    assert ("auth", 4) not in stage._progress  # revoked: its next owner speaks for it
    assert await stage.send_watermark() is False  # no view yet: nothing owned, nothing promised
    stage.view = lambda: _view(view)
    assert await stage.send_watermark()
    sent = fake(stage)
    assert sorted(p for p in sent.routed if p is not None) == [0, 1, 2]  # to every internal partition
    assert {orjson.loads(v)["k"] for _, v, _ in sent.sent} == {"w"}


async def test_stage2s_chain_marks_are_its_releases_never_moved_by_the_wall_clock_nor_idle():
    clock = [T0]
    chain = producer(clock, chain=True)
    await chain.start()
    await chain.send([], {("internal", 0): T0 - 50})
    clock[0] = T0 + 30
    view = InputView(owned={("internal", 0), ("internal", 1)}, caught_up={("internal", 0), ("internal", 1)},
                     counts={"internal": 2})
    mark = chain.watermark(view, clock[0])
    assert mark.progress == (("internal", 0, T0 - 50),)  # what it released, however long ago
    assert mark.idle == ()  # a partition that released nothing yet holds the chained lanes back


async def test_stage2s_level_marks_go_as_chain_rows_and_only_for_the_internal_partitions_it_owns():
    clock = [T0]
    chain = producer(clock, chain=True)
    await chain.start()
    await chain.send([], {("internal", 0): T0 - 10, level_row("internal", 0, 1): T0 - 20,
                          level_row("internal", 1, 1): T0 - 5, ("internal", 1): T0 - 5})
    view = InputView(owned={("internal", 0)}, counts={"internal": 2})
    mark = chain.watermark(view, T0 + 30)
    assert mark.progress == (("internal", 0, T0 - 10),) and mark.chain == ((0, 1, T0 - 20),)
    # partition 1 was revoked: neither its level-0 nor its level-1 mark is sent any more
    view.owned.add(("internal", 1))
    assert chain.watermark(view, T0 + 31).chain == ((0, 1, T0 - 20),)


async def _view(view: InputView) -> InputView:
    return view


async def test_records_are_acknowledged_before_alerts_and_sent_once_when_the_router_retries():
    outcome = compile_detection([PROJECT_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
                                 PROJECT_RULES / "correlations" / "ssh_brute_force.yml"], [], skip_invalid=False)
    assert outcome.detection is not None
    detector = Detector(outcome.detection, scope="keyed")
    stage = producer()
    await stage.start()
    sent = fake(stage)
    order: list[str] = []

    class Router(FakeRouter):
        async def submit(self, alerts: Any) -> None:
            order.append(f"alerts after {len(sent.sent)} record(s)")
            await super().submit(alerts)

    router = Router(failures=1)
    pipeline = Pipeline(detector, router, screen=False, state_records=stage)
    spec_ = InputSpec("kafka:auth", build_decoder("json", {}), LogSource(product="linux", service="auth"), ("ts",))
    event = {"ts": T0, "hostname": "h1", "app_name": "sshd",
             "message": "Failed password for invalid user admin from 203.0.113.77 port 51000 ssh2"}
    messages = [RawMessage(orjson.dumps(event), ("auth", 0, 7), T0)]
    result = await pipeline.detect("kafka", messages, spec_)
    assert len(result.records) == 1 and result.progress == {("auth", 0): T0}
    result.alerts.append(_any_alert(Origin("kafka", "auth", 0, 7)))
    with pytest.raises(RuntimeError, match="not now"):
        await pipeline.submit("kafka", result)  # the router refuses once
    await pipeline.submit("kafka", result)
    assert order == ["alerts after 1 record(s)"] * 2  # the record first, and only once
    pipeline.close()


def _any_alert(origin: Origin) -> Any:
    from detectors.alert import build_alert
    from detectors.model import Match, RuleInfo

    return build_alert(Match(RuleInfo(id="r", title="t")), {}, origin, event_time=T0, now=T0)


@pytest.mark.parametrize("error", [OutOfOrderSequenceNumber(), ProducerFenced(), UnknownProducerId()])
async def test_a_producer_that_can_never_send_again_is_replaced_and_the_retry_sends_the_whole_batch(
        error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    factory = ProducerFactory()
    stage = producer(factory=factory)
    await stage.start()
    first = factory.current
    batch = [record(host, offset) for offset, host in enumerate("abcdef")]
    first.failures = [None, error]  # one message acknowledged, the next fails: the producer id is gone
    before = replacements("keyed")
    with pytest.raises(type(error)):
        await stage.send(batch, {("auth", 0): T0 + 5})  # raises: the submit is retried, nothing committed
    assert first.stopped == 1 and replacements("keyed") - before == 1
    assert any(r.getMessage() == "kafka producer cannot send any more; a new one is built"
               and getattr(r, "producer", None) == "keyed" for r in caplog.records)
    view = InputView(owned={("auth", 0)}, caught_up={("auth", 0)}, counts={"auth": 1})
    assert stage.watermark(view, T0).progress == () and stage.watermark(view, T0).idle == ()  # no promise yet
    await stage.send(batch, {("auth", 0): T0 + 5})  # the retry: every record, on a new producer
    assert len(factory.built) == 2 and factory.current.started == 1
    expected = sorted(r.origin.offset for r in batch)
    assert sorted(r.origin.offset for r in delivered(factory.current)) == expected
    assert stage.watermark(view, T0).progress == (("auth", 0, T0 + 5),)


async def test_a_producer_whose_sender_stopped_is_replaced_before_records_wait_on_it() -> None:
    factory = ProducerFactory()
    stage = producer(factory=factory)
    await stage.start()
    factory.current.end_sender(ProducerFenced())
    before = replacements("keyed")
    await stage.send([record("a", 1)], {("auth", 0): T0 + 1})
    assert len(factory.built) == 2 and factory.built[0].sent == [] and factory.built[0].stopped == 1
    assert len(delivered(factory.current)) == 1 and replacements("keyed") - before == 1


async def test_a_sender_that_ends_under_a_send_fails_it_and_the_producer_is_replaced() -> None:
    factory = ProducerFactory()
    stage = producer(factory=factory)
    await stage.start()
    first = factory.current
    first.hold = True  # the broker does not answer; then the sender dies with what it held
    sending = asyncio.create_task(stage.send([record("a", 1), record("b", 2)], {("auth", 0): T0 + 2}))
    await until(lambda: len(first.held) > 0)
    first.end_sender(RuntimeError("Unexpected error during batch delivery"))  # not a fatal class by name
    with pytest.raises(RuntimeError):
        await sending
    assert first.stopped == 1 and stage.slot.current is None
    await stage.send([record("a", 1), record("b", 2)], {("auth", 0): T0 + 2})
    assert len(delivered(factory.current)) == 2


async def test_a_retriable_failure_keeps_the_producer() -> None:
    factory = ProducerFactory()
    stage = producer(factory=factory)
    await stage.start()
    factory.current.failures = [NotEnoughReplicasError()]
    with pytest.raises(NotEnoughReplicasError):
        await stage.send([record("a", 1)], {("auth", 0): T0 + 1})
    await stage.send([record("a", 1)], {("auth", 0): T0 + 1})
    assert len(factory.built) == 1 and factory.current.stopped == 0


async def test_the_watermark_timer_replaces_a_fenced_producer_and_stage2s_counts_apart() -> None:
    clock = [T0]
    factory = ProducerFactory()
    chain = producer(clock, chain=True, factory=factory)
    await chain.start()
    await chain.send([], {("internal", 0): T0})
    chain.view = lambda: _view(InputView(owned={("internal", 0)}, counts={"internal": 1}))
    factory.current.failures = [ProducerFenced()]
    before = replacements("keyed_chain")
    with pytest.raises(ProducerFenced):
        await chain.send_watermark()
    assert replacements("keyed_chain") - before == 1 and chain.slot.current is None
    assert await chain.send_watermark()  # rebuilt by the timer itself: quiet inputs still need marks
    assert len(factory.built) == 2 and sorted(p for p in factory.current.routed if p is not None) == [0, 1, 2]
    await chain.stop()
    assert await chain.send_watermark() is False  # stopped: nothing is rebuilt


async def test_a_batch_not_acknowledged_holds_its_partitions_marks_and_is_never_idle() -> None:
    """A retried submit must not find its records overtaken by a mark the wall clock moved on."""
    clock = [T0]
    factory = ProducerFactory()
    stage = producer(clock, factory=factory)
    await stage.start()
    await stage.send([record("a", 1)], {("auth", 0): T0})
    factory.current.failures = [NotEnoughReplicasError(), NotEnoughReplicasError()]
    with pytest.raises(NotEnoughReplicasError):
        await stage.send([record("a", 2)], {("auth", 0): T0 + 2})
    with pytest.raises(NotEnoughReplicasError):
        await stage.send([record("b", 3)], {("auth", 1): T0 + 3})  # its first batch
    clock[0] = T0 + 60
    view = InputView(owned={("auth", 0), ("auth", 1)}, caught_up={("auth", 0), ("auth", 1)}, counts={"auth": 2})
    mark = stage.watermark(view, clock[0])
    assert mark.progress == (("auth", 0, T0),) and mark.idle == ()
    await stage.send([record("a", 2)], {("auth", 0): T0 + 2})
    await stage.send([record("b", 3)], {("auth", 1): T0 + 3})
    mark = stage.watermark(view, clock[0])
    assert mark.progress == (("auth", 0, T0 + 2), ("auth", 1, T0 + 3))  # acknowledged now: moved on from here
    clock[0] += 10
    assert stage.watermark(view, clock[0]).progress == (("auth", 0, T0 + 12), ("auth", 1, T0 + 13))


def test_the_remembered_partition_of_a_record_is_always_its_keys():
    """The cache of partitions is keyed by id and group, not by the Kafka key: groups that compare
    equal but make different keys (``True`` and ``1``) keep their own keys' partitions."""
    groups = [("a",), ("A",), ("a", "b"), (True,), (1,), (1.5,), ("1",), (None,), (False,), (0,), ()]
    for count in (2, 3, 5, 12):
        sender = producer()
        for group in groups * 2:
            for record in (records.StateRecord("c1", ("r",), T0, records.Origin("auth", 0, 0), {}, group),
                           records.AnomalyRecord("c1", T0, records.Origin("auth", 0, 0), {}, group=group)):
                assert sender._partition(record, count) == records.partition_for(record.key(), count)
    assert any(records.partition_for(b'c1|[true]', n) != records.partition_for(b'c1|[1]', n) for n in (2, 3, 5, 12))
