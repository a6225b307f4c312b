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
from typing import Any

from service import metrics

log = logging.getLogger(__name__)

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
