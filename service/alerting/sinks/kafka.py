"""Kafka record sink: every alert document to a topic, keyed by the alert id.

For durable fan-out (other consumers, another site) and for running the detection stages apart
(docs/scaling.md). The producer is idempotent with ``acks=all``: a record the broker acknowledged
is on every in-sync replica, and the producer's own retries neither duplicate nor reorder it.
Delivery is at least once, like every sink: a batch that was partly acknowledged before an error
is sent again from its first unacknowledged record, so a consumer may see an alert twice, always
under the same key (a compacted topic keeps one). Records the producer is still retrying from an
earlier attempt (an idempotent producer retries until the brokers answer) are waited for, not
queued again, so an outage does not add one copy per retry. An alert updated later (a suppression count)
is sent again under the same key, after the original.

The value is the alert document as the other record sinks get it (redacted unless ``redact:
false``). Spooled form (:meth:`KafkaSink.encode`): the JSON-quoted alert id, a newline, the
document; delivery splits it without decoding the document.

Errors: a record the broker can never take (larger than ``max_message_bytes`` or the topic's
``max.message.bytes``, a corrupt record) is dead-lettered; everything else (broker down, not
enough replicas, a timeout, a refused credential or ACL, an unknown topic) keeps the batch spooled
and is retried with backoff, in order.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson
from pydantic import Field, model_validator

from service.kafka_producers import describe, is_fatal, note_replaced, sender_ended
from service.kafka_security import KafkaSecurity, security_kwargs

from .base import Outcome, RawSink, SinkError
from .registry import SinkContext, register_sink
from .settings import SinkSettings

log = logging.getLogger(__name__)

TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
"""Kafka's legal topic names."""


class KafkaSinkSettings(SinkSettings):
    type: Literal["kafka"] = "kafka"
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["localhost:9092"], min_length=1)
    topic: str = Field(default="pipesentry-alerts", pattern=TOPIC_PATTERN)
    """Create it yourself (replication >= 3, ``min.insync.replicas`` 2; ``cleanup.policy: compact``
    keeps one record per alert id)."""
    client_id: str = "pipesentry-alerts"
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    """TLS and SASL, the same keys as ``kafka.security`` of the Kafka input."""
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    """``snappy``, ``lz4`` and ``zstd`` need their Python packages (checked at start-up)."""
    max_message_bytes: int = Field(default=1_048_576, ge=1024)
    """The largest record the producer sends; a larger alert is dead-lettered."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    """How long the producer waits for the broker (metadata, acknowledgements) before a record fails."""
    linger_s: float = Field(default=0.0, ge=0, le=10)

    @model_validator(mode="after")
    def _codec_available(self) -> KafkaSinkSettings:
        if self.compression not in ("none", "gzip"):
            from aiokafka import codec

            if not getattr(codec, f"has_{self.compression}")():
                package = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}[self.compression]
                raise ValueError(f"compression {self.compression!r} needs the {package} package, which is not "
                                 f"installed (gzip needs nothing)")
        return self


REJECTED_ERRORS = frozenset({"MessageSizeTooLargeError", "RecordTooLargeError", "RecordListTooLargeError",
                             "CorruptRecordException", "UnsupportedForMessageFormatError"})
"""aiokafka errors that say "this record, never": dead-lettered. Every other error is retriable
here, non-retriable kinds included (a topic authorization failure, an invalid topic): every alert
would fail alike until an operator fixes the configuration, so they wait in the spool."""


def _rejects(exc: BaseException) -> bool:
    return any(cls.__name__ in REJECTED_ERRORS for cls in type(exc).__mro__)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def split(payload: bytes) -> tuple[bytes, bytes]:
    """``(key, value)`` of a spooled record (see :meth:`KafkaSink.encode`); ValueError if malformed."""
    head, sep, value = payload.partition(b"\n")
    if not sep:
        raise ValueError("no key line")
    key = orjson.loads(head)
    if not isinstance(key, str) or not key:
        raise ValueError("the key line is not an alert id")
    return key.encode(), value


class KafkaSink(RawSink):
    kind = "record"
    ack_margin_s = 5.0
    """Waited beyond ``request_timeout_s`` for acknowledgements, so the producer's own expiry reports first."""

    def __init__(self, settings: KafkaSinkSettings, producer_factory: Callable[..., Any] | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self._factory = producer_factory
        self.producer: Any = None
        self._unanswered: dict[bytes, asyncio.Future[Any]] = {}
        """Spooled records of the last delivery still waiting for their acknowledgement. The idempotent
        producer retries them until the brokers answer (it never expires them), so the next delivery
        of the same records waits for these instead of sending each once more per retry."""

    def producer_kwargs(self) -> dict[str, Any]:
        """Everything the producer is built with; a TLS file that holds no usable key or certificate is a
        ValueError naming the sink."""
        s = self.settings
        try:
            security = security_kwargs(s.security)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"{s.name}: the TLS files of security cannot be loaded: "
                             f"{getattr(exc, 'reason', None) or type(exc).__name__}") from None
        return {
            "bootstrap_servers": list(s.bootstrap_servers), "client_id": s.client_id, **security,
            "acks": "all", "enable_idempotence": True,
            "compression_type": None if s.compression == "none" else s.compression,
            "max_request_size": s.max_message_bytes, "request_timeout_ms": int(s.request_timeout_s * 1000),
            "linger_ms": 5, "retry_backoff_ms": 250,
        }

    async def start(self) -> None:
        """Build the producer and try to connect; a broker that is down only delays delivery (the
        alerts spool meanwhile), a TLS file that cannot be used fails the start."""
        kwargs = self.producer_kwargs()
        try:
            await self._connect(kwargs)
        except SinkError as exc:
            log.warning("kafka sink cannot reach the brokers yet; alerts are spooled",
                        extra={"sink": self.name, "error": str(exc)})

    async def _connect(self, kwargs: dict[str, Any] | None = None) -> Any:
        if self.producer is not None:
            return self.producer
        factory = self._factory
        if factory is None:
            from aiokafka import AIOKafkaProducer

            factory = AIOKafkaProducer
        producer = factory(**(kwargs if kwargs is not None else self.producer_kwargs()))
        try:
            await asyncio.wait_for(producer.start(), self.settings.request_timeout_s)
        except Exception as exc:
            try:
                await producer.stop()
            except Exception:
                log.debug("error while stopping a producer that did not start", exc_info=True)
            raise SinkError(f"{self.name}: cannot connect: {describe(exc)}") from None
        self.producer = producer
        return producer

    async def _discard(self, reason: str) -> None:
        """Drop a producer that cannot send any more (:mod:`service.kafka_producers`); the next delivery
        builds a new one (the spooled records are sent again by it: their ids keep re-deliveries
        recognisable downstream)."""
        note_replaced(f"sink:{self.name}", reason, sink=self.name)
        await self.stop()

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        self._unanswered = {}
        if producer is not None:
            try:  # flushes what was sent and not yet acknowledged: bounded, as a delivery is
                await asyncio.wait_for(producer.stop(), self.settings.request_timeout_s + self.ack_margin_s)
            except Exception as exc:
                log.warning("kafka sink: error while stopping the producer",
                            extra={"sink": self.name, "error": describe(exc)})

    def encode(self, doc: dict[str, Any]) -> bytes:
        return orjson.dumps(str(doc["event"]["id"])) + b"\n" + orjson.dumps(doc)

    async def deliver(self, records: list[dict[str, Any]]) -> Outcome:
        return await self.deliver_raw([self.encode(doc) for doc in records])

    async def deliver_raw(self, payloads: list[bytes]) -> Outcome:
        """Send every record, then wait for the acknowledgements (at most ``request_timeout_s`` plus a
        margin); done = the records before the first one that failed retriably."""
        if self.producer is not None and sender_ended(self.producer):
            await self._discard("its sender stopped")
        try:
            producer = await self._connect()
        except SinkError as exc:
            return Outcome(done=0, error=exc)
        s = self.settings
        deadline = time.monotonic() + s.request_timeout_s + self.ack_margin_s
        rejected: dict[int, str] = {}
        failed: tuple[int, str] | None = None
        pending: dict[int, asyncio.Future[Any]] = {}
        fatal = False
        unanswered, self._unanswered = self._unanswered, {}
        for i, payload in enumerate(payloads):
            try:
                key, value = split(payload)
            except ValueError as exc:
                rejected[i] = f"unreadable spooled record: {exc}"
                continue
            if len(key) + len(value) > s.max_message_bytes:
                rejected[i] = f"alert of {len(value)} bytes is larger than max_message_bytes {s.max_message_bytes}"
                continue
            carried = unanswered.pop(payload, None)
            if carried is not None and not (carried.done() and carried.exception() is not None):
                pending[i] = carried  # sent before, acknowledged since or still on its way
                continue
            try:
                pending[i] = await asyncio.wait_for(producer.send(s.topic, value=value, key=key),
                                                    max(0.001, deadline - time.monotonic()))
            except Exception as exc:
                if _rejects(exc):
                    rejected[i] = describe(exc)
                    continue
                failed = (i, describe(exc))
                fatal = fatal or is_fatal(exc)
                break
        for future in pending.values():
            future.add_done_callback(_retrieved)  # an outcome nobody waits for is not an "unretrieved" error
        if pending:
            await asyncio.wait(pending.values(), timeout=max(0.001, deadline - time.monotonic()))
        for i, future in sorted(pending.items()):
            if failed is not None and i >= failed[0]:
                break
            if not future.done():
                failed = (i, f"not acknowledged within {s.request_timeout_s + self.ack_margin_s:g} s")
                break
            error = future.exception()
            if error is None:
                continue
            if _rejects(error):
                rejected[i] = describe(error)
            else:
                failed = (i, describe(error))
                fatal = fatal or is_fatal(error)
                break
        done = failed[0] if failed is not None else len(payloads)
        self._unanswered = {payloads[i]: f for i, f in pending.items() if i >= done and not f.done()}
        if fatal:
            await self._discard(failed[1] if failed is not None else "fatal error")
        out = Outcome(done=done, rejected=[(self._doc(payloads[i]), reason)
                                           for i, reason in sorted(rejected.items()) if i < done])
        if failed is not None:
            out.error = SinkError(f"{self.name}: {failed[1]}")
        return out

    @staticmethod
    def _doc(payload: bytes) -> dict[str, Any]:
        try:
            doc = orjson.loads(split(payload)[1])
            if isinstance(doc, dict):
                return doc
        except ValueError:
            pass
        return {"raw": payload.decode("utf-8", "replace")}


def build(settings: KafkaSinkSettings, context: SinkContext) -> KafkaSink:
    return KafkaSink(settings)


register_sink("kafka", KafkaSinkSettings, build)
