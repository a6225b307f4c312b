"""``state.keyed_role`` against a real broker: a stage-1-only instance reads the input topic, a
stage-2-only instance reads only the internal topic, and together they fire the brute force that is
spread over the input partitions, with the id ``pipesentry eval`` gives (docs/scaling.md)."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.test_kafka_keyed import (
    INPUTS,
    _ts,
    brute_force,
    correlation_ids,
    produce_spread,
    read_all,
    reference_ids,
    settings_for,
)
from tests.support.instances import InProcess, unique_topic
from tests.support.waits import until

pytestmark = pytest.mark.integration


def roles_settled(stage1: InProcess, stage2: InProcess) -> bool:
    """Stage 1 owns every input partition, stage 2 both internal ones; neither runs the other's consumer."""
    s1, s2 = stage1.service, stage2.service
    if s1.kafka is None or s1.keyed is None or s2.keyed is None:
        return False
    return len(s1.kafka.assigned) == INPUTS and len(s2.keyed.source.assigned) == 2


async def test_a_stage_one_and_a_stage_two_instance_fire_the_spread_brute_force(kafka_server, tmp_path, capsys):
    events = brute_force()
    expected = await reference_ids(tmp_path, events, capsys)
    topic, internal = unique_topic("auth-roles"), unique_topic("keyed-roles")
    kafka_server.create_topic(topic, INPUTS)
    kafka_server.create_topic(internal, 2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    keyed = {"scope": "keyed", "keyed_topic": internal, "keyed_watermark_interval_s": 0.2}
    stage1 = InProcess(settings_for(tmp_path, "s1", kafka_server.bootstrap, topic, group, keyed_role="stage1", **keyed))
    stage2 = InProcess(settings_for(tmp_path, "s2", kafka_server.bootstrap, topic, group, keyed_role="stage2", **keyed))
    async with stage1, stage2:
        assert stage2.service.kafka is None  # no input consumer at all
        await until(lambda: roles_settled(stage1, stage2), 90, "4 input partitions on stage 1, 2 internal on stage 2")
        assert stage1.service.keyed is not None and not stage1.service.keyed.source.assigned  # never subscribed
        await until(lambda: all(stage2.service.readiness().values()), 30, "the stage-2-only instance ready")
        await produce_spread(kafka_server.bootstrap, topic, events)
        await until(lambda: bool(correlation_ids(stage2)), 90, "the correlation alert from stage 2")
        keyed2 = stage2.service.keyed
        last = max(_ts(e) for e in events)
        await until(lambda: all((keyed2.detector.watermark((tp.topic, tp.partition)) or 0) >= last + 10
                                for tp in keyed2.source.assigned), 60, "every record released")
        assert read_all(stage1, len(events))  # stage 1 read every input event
    assert correlation_ids(stage2) == sorted(expected)
    assert correlation_ids(stage1) == []
