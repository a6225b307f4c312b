"""Sink and receiver factories: configuration in, a started-later sink object out."""

from __future__ import annotations

from typing import Any

from .. import config as cfg
from ..store import AlertStore
from .base import Outcome, Sink, SinkError


def build_sink(settings: Any, store: AlertStore) -> Sink:
    match settings:
        case cfg.StdoutSink():
            from .stdout import StdoutSink
            return StdoutSink(settings.name, full=settings.full)
        case cfg.StoreSink():
            from .store import StoreSink
            return StoreSink(store, settings.name)
        case cfg.NullSink():
            from .null import NullSink
            return NullSink(settings.name)
        case cfg.ElasticsearchSink():
            from .elasticsearch import ElasticsearchSink
            return ElasticsearchSink(settings)
        case _:
            raise TypeError(f"unknown sink settings {type(settings).__name__}")


def build_receiver(settings: Any) -> Sink:
    match settings:
        case cfg.AlertmanagerReceiver():
            from .alertmanager import AlertmanagerReceiver
            return AlertmanagerReceiver(settings.name, settings.url, settings.timeout_s)
        case cfg.PagerDutyReceiver():
            from .pagerduty import PagerDutyReceiver
            return PagerDutyReceiver(settings.name, settings.url, settings.routing_key.get_secret_value(),
                                     settings.timeout_s)
        case cfg.OpsgenieReceiver():
            from .opsgenie import OpsgenieReceiver
            return OpsgenieReceiver(settings.name, settings.url, settings.api_key.get_secret_value(),
                                    settings.responders, settings.timeout_s)
        case cfg.SlackReceiver():
            from .slack import SlackReceiver
            return SlackReceiver(settings.name, settings.webhook_url.get_secret_value(), settings.timeout_s)
        case cfg.WebhookReceiver():
            from .webhook import WebhookReceiver
            secret = settings.secret.get_secret_value() if settings.secret else None
            return WebhookReceiver(settings.name, settings.url, secret, settings.headers, settings.timeout_s)
        case _:
            raise TypeError(f"unknown receiver settings {type(settings).__name__}")


__all__ = ["Outcome", "Sink", "SinkError", "build_receiver", "build_sink"]
