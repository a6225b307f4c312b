"""What one compile made of each rule text, kept for the next compile (a hot reload) to reuse.

Plain data only, no pySigma object: pySigma's rule objects are mutated by filters, processing
pipelines and correlations, so they are never carried from one compile to the next. A text's
:class:`TextUnit` holds its parse errors and, per detection rule, the rule's metadata and the
outcome of compiling it: the atom recipes it interned (in order) and its condition IR over
*local* atom ids (positions in those recipes), so the next compile can intern them again into
its own atom table and get the same atoms, in the same order, as compiling the text would.
No pySigma import here: a service that restores its ruleset from the cache creates the memo
without loading pySigma's parser.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from detectors.model import RuleInfo
from detectors.sigma.conditions import Node
from detectors.sigma.errors import RuleError
from detectors.sigma.recipes import Recipe

TextKey = tuple[str, str, str]
"""A text's source, ruleset and the SHA-256 of its text."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """Compiling one rule: the recipes it interned (first use order) and its condition over local
    atom ids with the atom ids the compiler derived from it (all, and positive ones: see
    :class:`~detectors.sigma.compiled.CompiledRule`), or the error it failed with (after interning
    ``recipes``: a failed rule may leave atoms behind, and so must the replay)."""

    recipes: tuple[Recipe, ...]
    node: Node | None
    error: RuleError | None
    atom_ids: tuple[int, ...] = ()
    positives: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleUnit:
    """One detection rule document of a text."""

    ident: str
    info: RuleInfo | None
    info_error: RuleError | None
    """Why the rule's metadata was refused (then ``info`` is None)."""
    names: tuple[str, ...]
    """Its id and name, as a correlation may reference it."""
    outcome: Outcome | None
    """None: not compiled (it was a duplicate of an earlier rule's id)."""


@dataclass(frozen=True, slots=True)
class TextUnit:
    errors: tuple[RuleError, ...]
    """Parse errors of the text (they come first in a compile's errors, in text order)."""
    special: bool
    """The text holds a Sigma filter or a correlation rule: it is parsed again by every compile
    (filters change other rules, correlations reference other rules' pySigma objects)."""
    rules: tuple[RuleUnit, ...]


@dataclass
class CompileMemo:
    """Kept by the caller across compiles (``compile_ruleset(..., memo=)``); one compile uses it at
    a time (``lock``). ``context`` is what every unit depends on beyond its text (pipelines,
    options, limits, the filter texts); a compile with another context reuses nothing."""

    context: object = None
    units: dict[TextKey, TextUnit] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    """Counts of the last compile: ``texts``, ``parsed`` (texts parsed and compiled) and ``reused``."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    seed: Callable[[CompileMemo], None] | None = field(default=None, repr=False, compare=False)
    """Fills ``context`` and ``units`` before the next compile (it is called once, under ``lock``): a
    ruleset restored from the rules cache sets it to read the memo kept beside the cache entry, so the
    first reload after such a start reuses what the compile that wrote the entry made of each text."""

    def clear(self) -> None:
        self.context = None
        self.units = {}
