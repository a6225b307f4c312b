"""The root of every exception raised from ``detectors/``.

Callers of the pure layer catch :class:`DetectorError` to handle any detector
failure in one place; specific classes stay for callers that care which one.
Subclasses that callers also catch as ``ValueError`` keep that base too
(``class BadTimestamp(DetectorError, ValueError)``).

An error may carry where it happened: the rule file (``source``), the rule
(``rule_id``) and any other context (field name, event offset...). The
message (``str(exc)``) stays the message it was raised with; the location is
separate so each caller decides how to show it. Code that learns the location
later (the loader knows the file, the compiler only the rule) attaches it with
:meth:`DetectorError.at` while the exception propagates.
"""

from __future__ import annotations

from typing import Any


class DetectorError(Exception):
    """A detector-layer failure, with optional location (``source``, ``rule_id``) and ``context``."""

    def __init__(self, *args: object, source: str | None = None, rule_id: str | None = None,
                 **context: Any) -> None:
        super().__init__(*args)
        self.source = source
        self.rule_id = rule_id
        self.context: dict[str, Any] = dict(context)

    def at(self, *, source: str | None = None, rule_id: str | None = None, **context: Any) -> DetectorError:
        """Fill in location the raiser did not know (what is already set wins); returns ``self``."""
        if self.source is None:
            self.source = source
        if self.rule_id is None:
            self.rule_id = rule_id
        for key, value in context.items():
            self.context.setdefault(key, value)
        return self

    @property
    def location(self) -> str:
        """``source: rule <id>`` as far as known ("" when nothing is)."""
        parts = [p for p in (self.source, f"rule {self.rule_id}" if self.rule_id else None) if p]
        return ": ".join(parts)


__all__ = ["DetectorError"]
