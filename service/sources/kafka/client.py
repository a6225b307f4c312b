"""Kafka client settings: what the consumer and the dead-letter producer are built with."""

from __future__ import annotations

from typing import Any

from service.config import KafkaSettings
from service.kafka_security import security_kwargs


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security settings shared by the consumer and the dead-letter producer."""
    return {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "client_id": settings.client_id,
        **security_kwargs(settings.security),
    }


def consumer_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Everything ``AIOKafkaConsumer`` needs; auto-commit is off, commits are ours."""
    return {
        **client_kwargs(settings),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "fetch_max_bytes": settings.fetch_max_bytes,
        "max_partition_fetch_bytes": settings.max_partition_fetch_bytes,
        "retry_backoff_ms": 250,
    }
