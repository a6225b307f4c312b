"""How the service puts ``state.scope: keyed`` together: stage 1's producer for the input source,
stage 2's detector and its own :class:`~service.sources.kafka.KafkaSource` over the internal topic."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from service.config import DecoderSettings, Settings, TopicSettings
from service.detection import Detector
from service.errors import ServiceError
from service.keyed import records
from service.keyed.stage1 import StateRecordProducer
from service.keyed.stage2 import KeyedDetector
from service.partition_state import default_instance_id
from service.sources.kafka import KafkaSource


class KeyedConfigError(ServiceError, ValueError):
    pass


@dataclass
class KeyedStages:
    producer: StateRecordProducer
    detector: KeyedDetector
    source: KafkaSource
    role: str = "both"
    """``state.keyed_role``: ``both``, ``stage1`` (no stage-2 consumer) or ``stage2`` (no input consumer)."""

    @property
    def stage1(self) -> bool:
        """This instance consumes the input topics and produces state records and watermarks."""
        return self.role in ("both", "stage1")

    @property
    def stage2(self) -> bool:
        """This instance runs stage 2's consumer of the internal topic."""
        return self.role in ("both", "stage2")

    async def run_stage2(self, stop: asyncio.Event) -> None:
        """Stage 2's consumer, once the internal topic exists (see :meth:`StateRecordProducer.prepare`)."""
        if await self.producer.prepare(stop):
            chain = self.source.state_records  # stage 2's producer: chained records and their marks
            marks = asyncio.create_task(chain.run_watermarks(stop)) if chain is not None else None
            try:
                await self.source.run(stop)
            finally:
                if marks is not None:
                    marks.cancel()
                    await asyncio.gather(marks, return_exceptions=True)


def build_keyed(settings: Settings, detector: Detector, router: Any, store: Any) -> KeyedStages:
    """Stage 1's producer and stage 2's detector and source; ``detector`` (stage 1) hands its
    rule swaps on to stage 2's. Raises :class:`KeyedConfigError` for a topic set-up that would loop."""
    kafka = settings.kafka
    state = settings.state
    if kafka is None:
        raise KeyedConfigError("state.scope keyed needs the kafka input")
    topic = state.keyed_topic
    if topic in kafka.topics or (kafka.topic_pattern and re.match(kafka.topic_pattern, topic)):
        raise KeyedConfigError(f"state.keyed_topic {topic!r} must not be one of the consumed input topics")
    if topic == kafka.dead_letter_topic:
        raise KeyedConfigError("state.keyed_topic must not be the dead-letter topic")
    instance = default_instance_id()
    producer = StateRecordProducer(kafka, state, instance)
    stage2 = KeyedDetector(detector.current, lateness_s=settings.correlation.allowed_lateness, rekey=True)
    detector.follow(stage2)
    # records come several to a message, one per line (service/keyed/records.py)
    internal = kafka.model_copy(update={"topics": {topic: TopicSettings(decoder=DecoderSettings(type=records.DECODER))}, "topic_pattern": None,
                                        "group_id": kafka.group_id + state.keyed_group_suffix})
    events = settings.events.model_copy(update={"screen": False})
    source = KafkaSource(internal, events, stage2, router, state_store=store,
                         snapshot_interval_s=state.snapshot_interval_s, instance_id=instance, consumer="keyed",
                         state_records=StateRecordProducer(kafka, state, instance, chain=True))
    return KeyedStages(producer, stage2, source, state.keyed_role)
