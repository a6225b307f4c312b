"""The root of every exception raised from ``service/``.

``retriable`` is a class-level fact: True when the same call can succeed later
without a change of input or configuration (a disk that fills up, a node that
is down), False when it never can (bad configuration, a record a sink refuses).
Callers read ``exc.retriable`` on any :class:`ServiceError`; where the answer
depends on a response rather than on the kind of failure (an HTTP status:
429/5xx retriable, other 4xx not) the raiser picks the subclass that says so
(see ``service.alerting.sinks.base.sink_error``) instead of setting the flag
per instance. The one instance-level override left is the dev servers'
``StartupFailed`` (a lost port decides it, read from the server's output).
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """A service-layer failure. ``retriable``: may the same operation succeed if tried again later."""

    retriable: ClassVar[bool] = False


class RetriableError(ServiceError):
    """A service failure that may pass when tried again (a full or failing disk, a node that is down)."""

    retriable = True


__all__ = ["RetriableError", "ServiceError"]
