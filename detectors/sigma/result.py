"""What compiling (or restoring) a ruleset returns; no pySigma here, so a cached start never imports it."""

from __future__ import annotations

from dataclasses import dataclass, field

from detectors.sigma.engine import Ruleset
from detectors.sigma.errors import RuleError


@dataclass
class LoadResult:
    """A compiled ruleset and the errors met while building it."""

    ruleset: Ruleset
    errors: list[RuleError] = field(default_factory=list)
    restored: bool = False
    """Read back from a snapshot (the compiled-ruleset cache), not compiled: loading made next to no
    garbage, so the caller may skip a full collection after it."""
