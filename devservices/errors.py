"""Errors of the dev-service scripts.

Two kinds matter to callers: a prerequisite is missing (the fix is to install or
fetch something, so the message says how), or a server was started but did not
become ready (the message points at its log file).
"""

from __future__ import annotations

from service.errors import ServiceError


class DevServiceError(ServiceError, RuntimeError):
    """Root of every dev-service failure."""


class PrerequisiteMissing(DevServiceError):
    """A binary, JDK or fetched jar set is absent; the message says how to get it."""


class StartupFailed(DevServiceError):
    """The server process exited or did not answer its readiness probe in time."""


class PortLost(StartupFailed):
    """The server lost a port to another process: starting again on new ports can succeed."""

    retriable = True
