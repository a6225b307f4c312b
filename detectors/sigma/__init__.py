"""Sigma rule compiler and evaluation engine (pure: no I/O, no clock).

``compile_ruleset`` turns rule texts into an immutable :class:`Ruleset` whose
``evaluate`` routes an event by log source and finds candidate rules through
shared per-field indexes; see ``docs/semantics.md`` for the matching rules.

``compile_ruleset`` is imported on first use: it brings pySigma's parser, which a ruleset
restored from the compiled-ruleset cache does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detectors.sigma.engine import Ruleset
from detectors.sigma.errors import RuleError, RuleText
from detectors.sigma.result import LoadResult

if TYPE_CHECKING:
    from detectors.sigma.compiler import compile_ruleset

__all__ = ["LoadResult", "RuleError", "RuleText", "Ruleset", "compile_ruleset"]


def __getattr__(name: str) -> Any:
    if name == "compile_ruleset":
        from detectors.sigma.compiler import compile_ruleset

        return compile_ruleset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
