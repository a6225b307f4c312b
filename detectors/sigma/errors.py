"""Result and error types of the Sigma compiler (the boundary other parts code against)."""

from __future__ import annotations

from dataclasses import dataclass

from detectors.errors import DetectorError


@dataclass(frozen=True, slots=True)
class RuleText:
    """One rule file's text: ``source`` names it in errors and in ``RuleInfo.source``."""

    source: str
    text: str
    ruleset: str = ""


@dataclass(frozen=True, slots=True)
class RuleError:
    """Why one rule (or a whole text, when ``rule_id`` is None) could not be compiled."""

    source: str
    rule_id: str | None
    title: str | None
    reason: str
    other_source: str | None = None
    """For a duplicate rule id: the file that defines the id too (the one whose rule was kept)."""


class CompileError(DetectorError):
    """Raised inside the compiler for one rule; turned into a :class:`RuleError` by the caller."""
