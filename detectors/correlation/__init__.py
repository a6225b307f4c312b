"""Sigma correlation rules evaluated over a stream of events, in event time.

``compile_correlations(ruleset)`` builds a :class:`CorrelationEngine` from the
correlation rules of a compiled Sigma ruleset; ``engine.process(event, matches, ts)``
returns correlation alerts. :class:`CorrelatingEvaluator` bundles base-rule
evaluation, ``generate: false`` suppression and correlation for callers that
just want "the matches of this event". Pure: no I/O, no clock.
"""

from detectors.correlation.compile import compile_correlations
from detectors.correlation.condition import Condition, condition_from_mapping
from detectors.correlation.engine import SKIP_REASONS, CorrelationEngine, Limits
from detectors.correlation.spec import CorrelationSpec
from detectors.correlation.stream import CorrelatingEvaluator, correlate_stream

__all__ = [
    "SKIP_REASONS",
    "Condition",
    "CorrelatingEvaluator",
    "CorrelationEngine",
    "CorrelationSpec",
    "Limits",
    "compile_correlations",
    "condition_from_mapping",
    "correlate_stream",
]
