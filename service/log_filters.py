"""Logging filters that keep the service's log readable: repeats summarised, routine lines demoted.

* :class:`RepeatFilter` lets the first ``burst`` records of one message (same logger, level and
  message template) through per ``interval_s``; the rest of that interval is counted and, when
  the message comes back after the interval, one line ``suppressed K similar messages`` (with the
  logger and the template) is written before it. A Kafka client that cannot reach its brokers
  logs the same error several times a second; this keeps one or two lines of it per interval.
* :class:`DemoteSuccessfulRequests` logs an HTTP client's successful (2xx) request lines at DEBUG
  instead of INFO: with ``library_level: INFO`` a sink delivering every second would otherwise
  fill the log with routine lines and hide the failures.

Both are plain :class:`logging.Filter` objects installed by :func:`service.logs.configure_logging`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SUMMARY_MARK = "_pipesentry_summary"
"""Attribute set on a summary record so the filter that made it lets it through."""

THROTTLED_LOGGERS = ("aiokafka", "kafka")
"""Loggers whose repeated messages are summarised by default."""

MAX_TRACKED = 1000
"""Distinct messages tracked at once; past it the oldest windows are forgotten (bounded memory)."""


@dataclass
class _Window:
    started: float
    passed: int = 0
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Summarises repeats of one message from ``prefixes`` loggers (all loggers when empty)."""

    def __init__(self, emit: Callable[[logging.LogRecord], object], *, burst: int = 3, interval_s: float = 60.0,
                 prefixes: tuple[str, ...] = THROTTLED_LOGGERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._emit = emit
        self._burst = burst
        self._interval = interval_s
        self._prefixes = prefixes
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def _applies(self, name: str) -> bool:
        return not self._prefixes or any(name == p or name.startswith(p + ".") for p in self._prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, SUMMARY_MARK, False) or not self._applies(record.name):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        summary = 0
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.started >= self._interval:
                summary = window.suppressed if window is not None else 0
                if window is None and len(self._windows) >= MAX_TRACKED:
                    self._forget(now)
                window = self._windows[key] = _Window(now)
            if window.passed >= self._burst:
                window.suppressed += 1
                return False
            window.passed += 1
        if summary:
            self._emit(self._summary(record, summary))
        return True

    def _forget(self, now: float) -> None:
        """Drop ended windows (their counts are lost: bounded memory wins); if none ended, the oldest half."""
        ended = [k for k, w in self._windows.items() if now - w.started >= self._interval]
        if not ended:
            ended = sorted(self._windows, key=lambda k: self._windows[k].started)[: len(self._windows) // 2]
        for k in ended:
            del self._windows[k]

    def _summary(self, record: logging.LogRecord, count: int) -> logging.LogRecord:
        summary = logging.LogRecord(record.name, record.levelno, record.pathname, record.lineno,
                                    "suppressed %d similar messages", (count,), None)
        summary.__dict__.update({SUMMARY_MARK: True, "suppressed": count, "template": str(record.msg),
                                 "interval_s": self._interval})
        return summary


_STATUS = re.compile(r'"HTTP/[\d.]+ (\d{3})')


class DemoteSuccessfulRequests(logging.Filter):
    """httpx's ``HTTP Request: POST <url> "HTTP/1.1 200 OK"`` lines at DEBUG when the status is 2xx.

    Installed on the client's logger: a demoted record goes on only if that logger is enabled
    for DEBUG; failures keep their level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        try:
            match = _STATUS.search(record.getMessage())
        except Exception:
            return True
        if match is None or not match.group(1).startswith("2"):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
