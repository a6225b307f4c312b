"""When an aiokafka producer can never send again, and what replacing one leaves behind.

Shared by every producer that builds a new one in that case: the ``kafka`` alert sink
(``service/alerting/sinks/kafka.py``) and the keyed scope's producers of state records
(``service/keyed/stage1.py``, stage 1's and stage 2's). An idempotent producer whose producer id
is fenced or unknown, or that saw an out-of-order sequence, ends its background sender: every
record sent on it after that fails (or, sent after the sender ended, waits for ever). Only a new
producer, with a new producer id, sends again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from service import metrics

log = logging.getLogger(__name__)

DISCARD_TIMEOUT_S = 30.0
"""How long stopping a dropped producer may take (a dead broker connection must not hang the holder)."""

FATAL_ERRORS = frozenset({"ProducerFenced", "OutOfOrderSequenceNumber", "UnknownProducerId",
                          "InvalidProducerEpoch", "ProducerClosed"})
"""aiokafka errors after which the producer never sends again (its sender task has ended, or its
producer id is no longer valid). Matched by class name along the error's classes, so a subclass
counts and aiokafka need not be imported to classify."""


def is_fatal(exc: BaseException) -> bool:
    """True when ``exc`` says the producer that raised it (or failed a record with it) is done for good."""
    return any(cls.__name__ in FATAL_ERRORS for cls in type(exc).__mro__)


def sender_ended(producer: Any) -> bool:
    """True when aiokafka's background sender has stopped: records sent now would wait for ever."""
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return isinstance(task, asyncio.Future) and task.done()


def describe(exc: BaseException) -> str:
    """An aiokafka error for logs and ``last_error``: its class and message (aiokafka's carry no credential)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def note_replaced(producer: str, reason: str, **extra: Any) -> None:
    """Log and count that the producer ``producer`` (a bounded label: ``keyed``, ``keyed_chain``,
    ``sink:<name>``) is dropped for ``reason`` and a new one will be built."""
    metrics.KAFKA_PRODUCER_REPLACEMENTS.labels(producer).inc()
    log.warning("kafka producer cannot send any more; a new one is built",
                extra={"producer": producer, "error": reason, **extra})


class ProducerSlot:
    """One idempotent producer, built on first use and replaced once it can never send again.

    ``build`` makes an unstarted producer; ``prepare`` (optional) runs before each build (a topic
    check). Holders call :meth:`get` before sending and :meth:`failed` with what a send raised.
    """

    def __init__(self, label: str, build: Callable[[], Any], prepare: Callable[[], Awaitable[Any]] | None = None,
                 **log_extra: Any) -> None:
        self.label = label
        """The ``producer`` label of ``pipesentry_kafka_producer_replacements_total``."""
        self._build = build
        self._prepare = prepare
        self._extra = log_extra
        self.current: Any | None = None
        self._building = asyncio.Lock()
        """One build at a time: several tasks of a holder may send at once."""

    async def get(self) -> Any:
        """The producer, built and started when there is none (or the one there has a stopped sender)."""
        async with self._building:
            producer = self.current
            if producer is not None and sender_ended(producer):
                await self._discard(producer, "its sender stopped")
                producer = None
            if producer is None:
                if self._prepare is not None:
                    await self._prepare()
                producer = self._build()
                try:
                    await producer.start()
                except Exception:
                    await quiet_stop(producer)
                    raise
                self.current = producer
            return producer

    async def failed(self, producer: Any, exc: BaseException) -> None:
        """After ``producer`` failed with ``exc``: drop it if it can never send again (the caller re-raises)."""
        if is_fatal(exc) or sender_ended(producer):
            async with self._building:
                await self._discard(producer, describe(exc))

    async def _discard(self, producer: Any, reason: str) -> None:
        if self.current is not producer:
            return  # dropped already (another sender saw it first), or stopped
        self.current = None
        note_replaced(self.label, reason, **self._extra)
        await quiet_stop(producer)

    async def stop(self) -> None:
        producer, self.current = self.current, None
        if producer is not None:
            await producer.stop()


async def quiet_stop(producer: Any, timeout_s: float = DISCARD_TIMEOUT_S) -> None:
    """Stop a producer that failed (bounded; an error stopping it is only logged)."""
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except Exception as exc:
        log.warning("error while stopping a dropped kafka producer", extra={"error": describe(exc)})
