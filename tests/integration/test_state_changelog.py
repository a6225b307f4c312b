"""The state changelog (``state.snapshots: kafka``) on a real broker: the topic it creates is
compacted, snapshots of any size round-trip through it (in chunks under the message size), the
latest save wins, and a store of another process reads them. A partition's state following it to
another instance through the changelog: tests/integration/test_kafka_keyed_faults.py."""

from __future__ import annotations

import secrets

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from service.config import KafkaSettings
from service.state_changelog import ChangelogStore
from service.state_store import StateStore
from tests.support.instances import unique_topic

pytestmark = pytest.mark.integration


async def test_snapshots_round_trip_through_a_compacted_topic(kafka_server, tmp_path):
    topic = unique_topic("changelog")
    kafka = KafkaSettings(bootstrap_servers=[kafka_server.bootstrap], topics={"auth": {}}, group_id="g")
    big = {"offset": 5, "detectors": {"correlation": {"keys": [secrets.token_hex(16) for _ in range(30_000)]}}}
    writer = ChangelogStore(StateStore(tmp_path / "a"), kafka, topic, 2, chunk_bytes=64 * 1024)
    try:
        await writer.save_async("kafka:auth:0", "partition", {"offset": 1})
        await writer.save_async("kafka:auth:0", "partition", big)  # ~1 MB: 16 chunks
        await writer.save_async("kafka:auth:1", "partition", {"offset": 9})
    finally:
        await writer.stop()
    reader = ChangelogStore(StateStore(tmp_path / "b"), kafka, topic, 2)
    try:
        assert await reader.load_async("kafka:auth:0", "partition") == big
        assert await reader.load_async("kafka:auth:1", "partition") == {"offset": 9}
        assert await reader.load_async("kafka:auth:2", "partition") is None
    finally:
        await reader.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=[kafka_server.bootstrap])
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for entry in described[0].resources[0][4]}
    assert configs["cleanup.policy"] == "compact"
