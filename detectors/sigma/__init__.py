"""Sigma rule compiler and evaluation engine (pure: no I/O, no clock).

``compile_ruleset`` turns rule texts into an immutable :class:`Ruleset` whose
``evaluate`` routes an event by log source and finds candidate rules through
shared per-field indexes; see ``docs/semantics.md`` for the matching rules.
"""

from detectors.sigma.compiler import LoadResult, compile_ruleset
from detectors.sigma.engine import Ruleset
from detectors.sigma.errors import RuleError, RuleText

__all__ = ["LoadResult", "RuleError", "RuleText", "Ruleset", "compile_ruleset"]
