"""The native screen: clears raw JSON events that no rule of a route can match.

Most log events match no rule, yet the Python path decodes, flattens and scans
each one. The screen (``detectors._native``, built from ``detectors/native``)
walks the raw message once against a copy of the route's index and answers
whether the Python engine *could* match it. It errs one way only: when it
cannot decide exactly (regular expressions Rust may read otherwise than RE2,
non-ASCII values, fractional numbers, messages Python might reject), the
event takes the Python path.
The conformance suite checks that a cleared event never has a match.

Without the native module (no Rust toolchain at install time) :func:`build`
returns None and everything takes the Python path.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from detectors.sigma.atoms import Atom, RegexAtom, TextAtom
from detectors.sigma.index import FieldIndex, RuleIndex
from detectors.sigma.regex import dollar_before_newline

try:
    from detectors import _native  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised where the extension is not built
    _native = None

AVAILABLE = _native is not None


class Screen(Protocol):
    def scan(self, values: list[Any], fallbacks: list[int], time_fields: list[str], max_bytes: int,
             max_depth: int) -> tuple[list[int], list[float]]:
        """Positions needing the Python path, and the latest event time of each run cleared around them."""
        ...


def _keys(index: FieldIndex) -> list[tuple[str, Any]]:
    """Every substring key of a field index with its entry (short keys included)."""
    keys: list[tuple[str, Any]] = list(index.short.items())
    automaton = index.automaton
    if automaton is not None:
        keys.extend(automaton.items if isinstance(automaton.items, tuple) else automaton.items())
    return keys


class _Ids:
    """Dense local numbers for the atoms of one route (the native side sizes its tables by them)."""

    def __init__(self) -> None:
        self.local: dict[int, int] = {}

    def __call__(self, aids: Any) -> list[int]:
        local = self.local
        return [local.setdefault(aid, len(local)) for aid in aids]


def _field(index: FieldIndex, ids: _Ids) -> tuple[Any, ...]:
    exact = [(key, ids(plain), ids(verify)) for key, (plain, verify) in index.exact.items()]
    keys = [(key, ids(entry[1]), ids(entry[2]), ids(entry[3]), ids(entry[4])) for key, entry in _keys(index)]
    return exact, ids(index.every), keys


def _checked(index: FieldIndex) -> set[int]:
    """Atoms the scan confirms with their own check (the rest are decided by the key alone)."""
    out = set(index.every)
    for _, verify in index.exact.values():
        out.update(verify)
    for _, entry in _keys(index):
        out.update(entry[4])
    return out


REGEX = -1
"""Check kind of an RE2 regex, which the screen runs with Rust's ``regex`` (same syntax and,
on the ASCII values the screen reads, the same semantics); a pattern it refuses is assumed."""
ASSUME = -2
"""Check kind of everything else (Python ``re`` fallbacks, ...): counted as satisfied."""


_RUST_ONLY = ("\\<", "\\>", "\\b{", "\\B{", "&&", "--", "~~")
"""Syntax Rust's ``regex`` gives a meaning RE2 does not: word-boundary forms, and class set
operations (RE2 reads ``&&``, ``--``, ``~~`` in a class as characters)."""
_REPEAT = re.compile(r"\{\d+(?:,\d*)?\}")


def same_in_rust(source: str) -> bool:
    """Whether Rust's ``regex`` reads an RE2 pattern as RE2 does (on ASCII text).

    Refuses, rather than proves: nested classes (a union in Rust, characters in RE2),
    braces other than strict counted repetitions (RE2 reads ``x{,3}`` or ``x{ 2}`` as text),
    and the :data:`_RUST_ONLY` syntax. A refused pattern is assumed satisfied by the screen.
    """
    if any(token in source for token in _RUST_ONLY):
        return False
    index, in_class = 0, False
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            if char == "[":
                end = source.find(":]", index)
                if source[index + 1:index + 2] != ":" or end < 0:
                    return False
                index = end + 2
                continue
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            index += 2 if source[index + 1:index + 2] == "^" else 1
            if source[index:index + 1] == "]":  # a leading "]" is a character
                index += 1
            continue
        elif char == "{":
            repeat = _REPEAT.match(source, index)
            if repeat is None:
                return False
            index = repeat.end()
            continue
        index += 1
    return not in_class


def _check(aid: int, atom: Atom) -> tuple[int, int, str, bool, list[tuple[int, str]]]:
    """(local atom id, check kind, literal or regex, cased or dollar flag, glob parts)."""
    if type(atom) is TextAtom:
        return aid, int(atom.kind), atom.literal, atom.cased, list(atom.pattern.glob)
    if type(atom) is RegexAtom and atom.re2_source is not None and same_in_rust(atom.re2_source):
        return aid, REGEX, atom.re2_source, dollar_before_newline(atom.re2_source), []
    return aid, ASSUME, "", False, []


def export_plan(index: RuleIndex, atoms: list[Atom]) -> dict[str, Any]:
    """The screen's constructor arguments for one route's index."""
    ids = _Ids()
    indexes = [*index.fields.values(), *([index.keywords] if index.keywords is not None else [])]
    checked: set[int] = set()
    for field in indexes:
        checked |= _checked(field)
    plan: dict[str, Any] = {
        "fields": [(path, _field(field, ids)) for path, field in index.fields.items()],
        "keywords": _field(index.keywords, ids) if index.keywords is not None else None,
        "triggers": [(ids([aid])[0], list(positions)) for aid, positions in index.triggers.items()],
        "rest": [[ids(clause) for clause in clauses] for clauses in index.rest],
        # atoms tested directly on the event are not mirrored: their rules are always candidates
        "always": bool(index.always or index.direct_triggers),
    }
    plan["checks"] = [_check(ids.local[aid], atoms[aid]) for aid in sorted(checked)]
    plan["atom_count"] = len(ids.local)
    return plan


def build(index: RuleIndex, atoms: list[Atom]) -> Screen | None:
    """The native screen of one route's index, or None without the native module."""
    if _native is None:
        return None
    try:
        screen: Screen = _native.Screen(**export_plan(index, atoms))
    except ValueError:  # an index the native side cannot hold: that route is not screened
        return None
    return screen
