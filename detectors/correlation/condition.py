"""Correlation conditions: a conjunction of comparisons against the aggregated value.

The specification allows one comparison (``gte: 100``) or a range written as
several comparisons in the same mapping (``gt: 100`` and ``lte: 200``, joined
by AND). pySigma 1.5 parses only the single form; :func:`condition_from_mapping`
accepts both so a range can be compiled when the raw mapping is available.

A condition is *immediate* when it can only become true by adding events to a
window (``gt``/``gte`` alone): it is decided at every event. Anything with an
upper bound or an exact value (``lt``, ``lte``, ``eq``, ``neq``) is *deferred*:
it can only be decided once the window can receive no more events, that is
when the watermark passes the window's end.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from detectors.errors import DetectorError

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "eq": operator.eq,
    "neq": operator.ne,
}
"""Operator name -> comparison (aggregated value, threshold)."""

IMMEDIATE_OPERATORS = frozenset({"gt", "gte"})


class ConditionError(DetectorError, ValueError):
    """The condition mapping is not a valid correlation condition."""


@dataclass(frozen=True, slots=True)
class Condition:
    """``terms`` are ``(operator, threshold)`` pairs that must all hold."""

    terms: tuple[tuple[str, float], ...]
    check: Callable[[float], bool] = field(init=False, repr=False, compare=False)
    """``holds`` compiled into one closure (the engine calls it for every event)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "check", _compile(self.terms))

    @property
    def immediate(self) -> bool:
        return all(op in IMMEDIATE_OPERATORS for op, _ in self.terms)

    def holds(self, value: float) -> bool:
        """All terms hold; NaN (an average of nothing) satisfies no condition, not even ``neq``."""
        return self.check(value)

    def as_dict(self) -> dict[str, float]:
        return {op: _plain(threshold) for op, threshold in self.terms}

    def describe(self) -> str:
        return " and ".join(f"{op} {_plain(threshold)}" for op, threshold in self.terms)


def _compile(terms: tuple[tuple[str, float], ...]) -> Callable[[float], bool]:
    if len(terms) == 1:
        op, threshold = terms[0]
        match op:
            case "gt":
                return lambda v: v > threshold
            case "gte":
                return lambda v: v >= threshold
            case "lt":
                return lambda v: v < threshold
            case "lte":
                return lambda v: v <= threshold
            case "eq":
                return lambda v: v == threshold
            case "neq":
                return lambda v: v == v and v != threshold  # v == v is False for NaN
            case _:
                raise ConditionError(f"unknown condition operator {op!r}")
    checks = [_compile((term,)) for term in terms]
    return lambda v: all(check(v) for check in checks)


def _plain(value: float) -> float:
    """Integral thresholds print and serialise as ints (``gte 100``, not ``gte 100.0``)."""
    return int(value) if float(value).is_integer() else value


def condition_from_mapping(mapping: Mapping[str, Any]) -> Condition:
    """Parse ``{gte: 100}`` or a range ``{gt: 100, lte: 200}``; ``field``/``percentile`` are ignored here."""
    terms: list[tuple[str, float]] = []
    for key, raw in mapping.items():
        if key in ("field", "percentile"):
            continue
        if key not in OPERATORS:
            raise ConditionError(f"unknown condition operator {key!r} (expected one of {', '.join(OPERATORS)})")
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ConditionError(f"condition {key}: {raw!r} is not a number")
        try:
            threshold = float(raw)
        except ValueError:
            raise ConditionError(f"condition {key}: {raw!r} is not a number") from None
        if not math.isfinite(threshold):
            raise ConditionError(f"condition {key}: {raw!r} is not a finite number")
        terms.append((key, threshold))
    if not terms:
        raise ConditionError("condition has no comparison (gt, gte, lt, lte, eq or neq)")
    return Condition(tuple(terms))
