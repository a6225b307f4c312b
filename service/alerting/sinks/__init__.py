"""Sinks (every alert document) and receivers (routed pages), built from registries.

Each module here defines one sink: its settings model, its implementation and a
builder, registered by name in :mod:`.registry`. The router builds them with
``SINKS.build(settings, context)`` / ``RECEIVERS.build(...)``.
"""

from __future__ import annotations

from .base import Outcome, RawSink, Sink, SinkError, SinkRejected
from .registry import RECEIVERS, SINKS, SinkContext, register_receiver, register_sink

__all__ = ["RECEIVERS", "SINKS", "Outcome", "RawSink", "Sink", "SinkContext", "SinkError", "SinkRejected",
           "register_receiver", "register_sink"]
