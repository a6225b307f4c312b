"""Event values as text, and Sigma strings as match patterns.

Sigma compares values as case-insensitive strings. Every event scalar is turned
into one canonical text so that a rule value ``4`` matches the event values
``4``, ``4.0`` and ``"4"``, and ``true`` matches ``True`` and ``"TRUE"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sigma.types import Placeholder, SigmaString, SpecialChars

from detectors.sigma.errors import CompileError
from detectors.sigma.screen_abi import CheckKind, GlobPart


def as_text(value: Any) -> str | None:
    """Canonical text of an event scalar; None for null, mappings and lists."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return str(int(value)) if value.is_integer() else repr(value)
    return None


Part = str | SpecialChars


@dataclass(frozen=True, slots=True)
class Pattern:
    """A Sigma string reduced to its shape, literal pieces and (for globs) a regex source."""

    kind: CheckKind
    """The shape (decides how the index finds it): one of the text kinds of the screen's plan
    format (``EXACT`` to ``ANY``; never ``REGEX`` or ``ASSUME``), which owns the numbers."""
    literal: str
    """The whole literal (EXACT/PREFIX/SUFFIX/CONTAINS) or the longest literal piece (GLOB)."""
    regex: str = ""
    """Regex source matched in full against the value (GLOB only)."""
    glob: tuple[tuple[GlobPart, str], ...] = ()
    """The same GLOB as (LITERAL, text) / (STAR, "*") / (ONE, "?") parts, for the native screen."""


def string_parts(value: SigmaString) -> list[Part]:
    """Parts of a Sigma string with adjacent ``*`` merged; placeholders are an error."""
    parts: list[Part] = []
    for part in value.s:
        if isinstance(part, Placeholder):
            raise CompileError(f"unresolved placeholder %{part.name}% (no pipeline provides its values)")
        if part is SpecialChars.WILDCARD_MULTI and parts and parts[-1] is SpecialChars.WILDCARD_MULTI:
            continue
        if isinstance(part, str) and parts and isinstance(parts[-1], str):
            parts[-1] = parts[-1] + part
            continue
        parts.append(part)
    return parts


def pattern_of(parts: list[Part], fold: bool) -> Pattern:
    """Classify parts; ``fold`` lower-cases literals (case-insensitive matching)."""
    lits = [(p.lower() if fold else p) if isinstance(p, str) else p for p in parts]
    star = SpecialChars.WILDCARD_MULTI
    if not lits:
        return Pattern(CheckKind.EXACT, "")
    if all(isinstance(p, str) for p in lits):
        return Pattern(CheckKind.EXACT, "".join(p for p in lits if isinstance(p, str)))
    if all(p is star for p in lits):
        return Pattern(CheckKind.ANY, "")
    if len(lits) == 2 and isinstance(lits[0], str) and lits[1] is star:
        return Pattern(CheckKind.PREFIX, lits[0])
    if len(lits) == 2 and lits[0] is star and isinstance(lits[1], str):
        return Pattern(CheckKind.SUFFIX, lits[1])
    if len(lits) == 3 and lits[0] is star and isinstance(lits[1], str) and lits[2] is star:
        return Pattern(CheckKind.CONTAINS, lits[1])
    pieces = [p for p in lits if isinstance(p, str)]
    longest = max(pieces, key=len) if pieces else ""
    source = "".join(re.escape(p) if isinstance(p, str) else (".*" if p is star else ".") for p in lits)
    glob = tuple((GlobPart.LITERAL, p) if isinstance(p, str) else
                 ((GlobPart.STAR, "*") if p is star else (GlobPart.ONE, "?")) for p in lits)
    return Pattern(CheckKind.GLOB, longest, "(?s)" + source, glob)
