"""Kafka client settings: what the consumer and the dead-letter producer are built with."""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from service.config import KafkaSettings


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security settings shared by the consumer and the dead-letter producer."""
    sec = settings.security
    kwargs: dict[str, Any] = {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "client_id": settings.client_id,
        "security_protocol": sec.protocol,
    }
    if sec.protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(
            cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None,
            certfile=str(sec.ssl_certfile) if sec.ssl_certfile else None,
            keyfile=str(sec.ssl_keyfile) if sec.ssl_keyfile else None,
            password=sec.ssl_key_password.get_secret_value() if sec.ssl_key_password else None,
        )
        context.check_hostname = sec.ssl_check_hostname
        kwargs["ssl_context"] = context
    if sec.protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = sec.sasl_mechanism
        kwargs["sasl_plain_username"] = sec.sasl_username
        kwargs["sasl_plain_password"] = sec.sasl_password.get_secret_value() if sec.sasl_password else None
    return kwargs


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
