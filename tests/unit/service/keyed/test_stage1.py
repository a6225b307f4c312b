"""Stage 1 of ``state.scope: keyed``: records sent and acknowledged before the batch's alerts,
once per batch; watermarks from the input partitions' progress."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from detectors.model import LogSource, Origin
from service import metrics
from service.config import KafkaSettings, StateSettings
from service.decoders import build_decoder
from service.detection import Detector, compile_detection
from service.keyed import records
from service.keyed.stage1 import InputView, StateRecordProducer
from service.pipeline.core import Pipeline
from service.sources.base import InputSpec, RawMessage
from tests.conftest import PROJECT_RULES
from tests.support.routers import FakeRouter

RULES = [PROJECT_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
         PROJECT_RULES / "correlations" / "ssh_brute_force.yml"]
T0 = 1_764_113_000.0


class FakeProducer:
    """aiokafka's producer as stage 1 uses it; ``fail`` makes the next acknowledgements fail."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.sent: list[tuple[str, bytes, bytes | None, int | None]] = []
        self.fail = 0
        self.events: list[str] | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            future.set_exception(RuntimeError("not enough replicas"))
        else:
            self.sent.append((topic, value, key, partition))
            if self.events is not None:
                self.events.append("record")
            future.set_result(None)
        return future

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}


def producer(clock: list[float] | None = None) -> StateRecordProducer:
    now = clock if clock is not None else [T0]
    return StateRecordProducer(KafkaSettings(bootstrap_servers=["x:9092"], topics={"auth": {}}),
                               StateSettings(scope="keyed", keyed_topic="internal"), "host:1",
                               producer_factory=FakeProducer, clock=lambda: now[0])


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
    fake = stage._producer
    assert isinstance(fake, FakeProducer)
    assert fake.kwargs["enable_idempotence"] is True and fake.kwargs["acks"] == "all"
    batch = [record(host, offset) for offset, host in enumerate("abcabcdefa")]
    await stage.send(batch, {("auth", 0): T0 + 10})
    # one message per internal partition the batch's keys hash to (Kafka's partitioner), its records in order
    assert all(topic == "internal" and key is None for topic, _, key, _ in fake.sent)
    partitions = [p for _, _, _, p in fake.sent]
    assert len(partitions) == len(set(partitions))
    for _, value, _, partition in fake.sent:
        expected = [r for r in batch if records.partition_for(r.key(), 3) == partition]
        assert records.unpack(value) == [records.decode(r.encode()) for r in expected]
    assert sorted(len(records.unpack(v)) for _, v, _, _ in fake.sent) != [1] * len(batch)


async def test_a_batch_over_the_pack_bound_makes_more_messages_in_order():
    stage = producer()
    stage._pack_bytes = 400
    await stage.start()
    batch = [record("a", offset) for offset in range(20)]  # one key: one partition
    await stage.send(batch, {})
    sent = stage._producer.sent  # type: ignore[union-attr]
    assert len(sent) > 1 and len({p for _, _, _, p in sent}) == 1
    assert all(len(value) <= 400 for _, value, _, _ in sent)
    assert [r for _, value, _, _ in sent for r in records.unpack(value)] == [records.decode(r.encode()) for r in batch]


async def test_a_failed_acknowledgement_raises_and_does_not_count_progress():
    stage = producer()
    await stage.start()
    fake = stage._producer
    assert isinstance(fake, FakeProducer)
    fake.fail = 1
    with pytest.raises(RuntimeError):
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
    assert len(stage._producer.sent) == 1  # type: ignore[union-attr]


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
    sent = stage._producer.sent  # type: ignore[union-attr]
    assert sorted(p for _, _, _, p in sent) == [0, 1, 2]  # to every internal partition
    assert {orjson.loads(v)["k"] for _, v, _, _ in sent} == {"w"}


async def test_stage2s_chain_marks_are_its_releases_never_moved_by_the_wall_clock_nor_idle():
    clock = [T0]
    chain = StateRecordProducer(KafkaSettings(bootstrap_servers=["x:9092"], topics={"auth": {}}),
                                StateSettings(scope="keyed", keyed_topic="internal"), "host:1",
                                producer_factory=FakeProducer, clock=lambda: clock[0], chain=True)
    await chain.start()
    await chain.send([], {("internal", 0): T0 - 50})
    clock[0] = T0 + 30
    view = InputView(owned={("internal", 0), ("internal", 1)}, caught_up={("internal", 0), ("internal", 1)},
                     counts={"internal": 2})
    mark = chain.watermark(view, clock[0])
    assert mark.progress == (("internal", 0, T0 - 50),)  # what it released, however long ago
    assert mark.idle == ()  # a partition that released nothing yet holds the chained lanes back


async def _view(view: InputView) -> InputView:
    return view


async def test_records_are_acknowledged_before_alerts_and_sent_once_when_the_router_retries():
    outcome = compile_detection([PROJECT_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
                                 PROJECT_RULES / "correlations" / "ssh_brute_force.yml"], [], skip_invalid=False)
    assert outcome.detection is not None
    detector = Detector(outcome.detection, scope="keyed")
    stage = producer()
    await stage.start()
    fake = stage._producer
    assert isinstance(fake, FakeProducer)
    order: list[str] = []
    fake.events = order

    class Router(FakeRouter):
        async def submit(self, alerts: Any) -> None:
            order.append("alerts")
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
    assert order == ["record", "alerts", "alerts"]  # the record first, and only once
    pipeline.close()


def _any_alert(origin: Origin) -> Any:
    from detectors.alert import build_alert
    from detectors.model import Match, RuleInfo

    return build_alert(Match(RuleInfo(id="r", title="t")), {}, origin, event_time=T0, now=T0)


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
