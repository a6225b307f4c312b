"""The compiled form of one correlation rule: everything the engine needs, resolved.

Built from pySigma's ``SigmaCorrelationRule`` by :mod:`detectors.correlation.compile`;
references are resolved to rule ids, aliases to the physical field each
referenced rule's events carry, and the timespan to seconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from detectors.correlation.condition import Condition
from detectors.correlation.windows import (
    AvgWindow,
    CountWindow,
    DistinctWindow,
    FrequencyWindow,
    OrderedWindow,
    PercentileWindow,
    SumWindow,
    TemporalWindow,
    Window,
)
from detectors.model import RuleInfo

TYPES: tuple[str, ...] = (
    "event_count", "value_count", "temporal", "temporal_ordered",
    "value_sum", "value_avg", "value_percentile", "value_median",
)
VALUE_TYPES = frozenset({"value_count", "value_sum", "value_avg", "value_percentile", "value_median"})
NUMERIC_TYPES = frozenset({"value_sum", "value_avg", "value_percentile", "value_median"})
SLOT_TYPES = frozenset({"temporal", "temporal_ordered"})
"""Types that count each matching rule separately (one event matching two rules counts twice)."""


@dataclass(frozen=True, slots=True)
class Slot:
    """How one referenced rule feeds the correlation: its id and its physical field names."""

    rule_id: str
    correlation: bool
    group_fields: tuple[str, ...]
    value_fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CorrelationSpec:
    info: RuleInfo
    type: str
    slots: tuple[Slot, ...]
    group_by: tuple[str, ...]
    """Group-by names as written in the rule (aliases included): the alert's field names."""
    value_field: tuple[str, ...]
    span: float
    timespan: str
    condition: Condition
    percentile: float | None
    """For value_percentile / value_median; None for value_percentile means frequency mode."""
    generate: bool

    @property
    def deferred(self) -> bool:
        """Decided when the window closes (upper bounds, equality, value shares), not per event."""
        return not self.condition.immediate or self.frequency_mode

    @property
    def frequency_mode(self) -> bool:
        return self.type == "value_percentile" and self.percentile is None

    def new_window(self) -> Window:
        match self.type:
            case "event_count":
                return CountWindow()
            case "value_count":
                return DistinctWindow()
            case "temporal":
                return TemporalWindow()
            case "temporal_ordered":
                return OrderedWindow()
            case "value_sum":
                return SumWindow()
            case "value_avg":
                return AvgWindow()
            case "value_percentile" if self.percentile is None:
                return FrequencyWindow()
            case "value_percentile" | "value_median":
                return PercentileWindow(self.percentile if self.percentile is not None else 50.0)
            case _:
                raise TypeError(f"unknown correlation type {self.type!r}")

    def fingerprint(self) -> str:
        """Changes whenever the meaning of stored window state would change (used by restore)."""
        doc = {
            "type": self.type,
            "slots": [[s.rule_id, list(s.group_fields), list(s.value_fields)] for s in self.slots],
            "span": self.span,
            "condition": self.condition.as_dict(),
            "percentile": self.percentile,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
