"""One call per event for the CLI and the service: base matches, suppression, correlations.

``CorrelatingEvaluator.evaluate`` returns what should become alerts for this
call: the event's base-rule matches minus the rules a correlation suppresses
(``generate: false``), followed by the correlation alerts that became due.
Because deferred windows and reordering release alerts later, a correlation
match may concern earlier events: its ``details`` carry the window and the
contributing event references.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from detectors.correlation.engine import CorrelationEngine
from detectors.event import DEFAULT_TIME_FIELDS, event_time
from detectors.model import Event, LogSource, Match

K = TypeVar("K")


class EvaluatingRuleset(Protocol):
    def evaluate(self, event: Event, logsource: LogSource | None = None) -> list[Match]: ...


class CorrelatingEvaluator:
    """A ruleset and its correlation engine, driven as one time-ordered stream."""

    def __init__(self, ruleset: EvaluatingRuleset, engine: CorrelationEngine) -> None:
        self.ruleset = ruleset
        self.engine = engine

    def evaluate(self, event: Event, logsource: LogSource | None, ts: float | None,
                 ref: Any = None) -> list[Match]:
        base = self.ruleset.evaluate(event, logsource)
        correlated = self.engine.process(event, base, ts, ref)
        suppressed = self.engine.suppressed_rule_ids
        if suppressed:
            base = [match for match in base if match.rule.id not in suppressed]
        return base + correlated if correlated else base

    def advance(self, ts: float) -> list[Match]:
        """Event time reached ``ts`` without events (service heartbeat)."""
        return self.engine.advance(ts)

    def flush(self) -> list[Match]:
        """End of a finite input (``pipesentry eval``)."""
        return self.engine.flush()


def correlate_stream(evaluator: CorrelatingEvaluator, events: Iterable[tuple[K, Event]],
                     logsource: LogSource | None = None,
                     time_fields: Sequence[str] = DEFAULT_TIME_FIELDS) -> Iterator[tuple[K, Match]]:
    """A finite, time-ordered input (``pipesentry eval``): ``(key, match)`` for every alert.

    ``key`` (e.g. a line number; JSON-serialisable) is the event's reference in
    correlation evidence and is yielded with the matches of the call that
    produced them; alerts decided at the end of the input come with the last key.
    Event time is read from ``time_fields`` (see :func:`event_time`).
    """
    last: K | None = None
    for key, event in events:
        last = key
        for match in evaluator.evaluate(event, logsource, event_time(event, time_fields), ref=key):
            yield key, match
    if last is not None:
        for match in evaluator.flush():
            yield last, match
