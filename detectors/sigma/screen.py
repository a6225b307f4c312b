"""The native screen: clears raw JSON events that no rule of a route can match.

Most log events match no rule, yet the Python path decodes, flattens and scans
each one. The screen (``detectors._native``, built from ``detectors/native``)
walks the raw message once against a copy of the route's index and answers
whether the Python engine *could* match it. It errs one way only: when it
cannot decide exactly (regular expressions Rust may read otherwise than RE2,
keys and values Python 3.11 may case-fold otherwise than Rust's newer Unicode
tables, messages Python might reject), the event takes the Python path.
The conformance suite checks that a cleared event never has a match.

Without the native module (no Rust toolchain at install time) :func:`build`
returns None and everything takes the Python path.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from detectors.sigma.atoms import Atom, ExistsAtom, FieldRefAtom, NullAtom, RegexAtom, TextAtom
from detectors.sigma.conditions import Node
from detectors.sigma.index import FieldIndex, RuleIndex
from detectors.sigma.regex import dollar_before_newline

try:
    from detectors import _native  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised where the extension is not built
    _native = None

AVAILABLE = _native is not None


class Screen(Protocol):
    def scan(self, values: list[Any], fallbacks: list[int], time_fields: list[str] | None, max_bytes: int,
             max_depth: int) -> tuple[list[int], list[float]]:
        """Positions needing the Python path, and the latest event time of each run cleared around them
        (NaN when ``time_fields`` is None; a message without a time field counts at its fallback, in ms)."""
        ...

    def scan_records(self, records: list[Any], time_fields: list[str] | None, max_bytes: int,
                     max_depth: int) -> tuple[list[int], list[float]]:
        """The same over Kafka records (``value`` bytes, ``timestamp`` in milliseconds)."""
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

    def one(self, aid: int) -> int:
        return self.local.setdefault(aid, len(self.local))


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


def _rust_regex(atom: Atom) -> bool:
    """Whether the screen runs this atom's regex itself (RE2-backed, and read alike by Rust)."""
    return type(atom) is RegexAtom and atom.re2_source is not None and same_in_rust(atom.re2_source)


def _check(aid: int, atom: Atom) -> tuple[int, int, str, bool, list[tuple[int, str]]]:
    """(local atom id, check kind, literal or regex, cased or dollar flag, glob parts)."""
    if type(atom) is TextAtom:
        return aid, int(atom.kind), atom.literal, atom.cased, list(atom.pattern.glob)
    if _rust_regex(atom):
        source: str = atom.re2_source  # type: ignore[attr-defined]
        return aid, REGEX, source, dollar_before_newline(source), []
    return aid, ASSUME, "", False, []


SPECIAL_KINDS = {NullAtom: 0, ExistsAtom: 1, FieldRefAtom: 2}
"""Atoms tested on the whole event that the screen evaluates exactly from the paths it saw."""

# operations of a condition program (postfix): an atom, a constant, not, and/or of the last n
ATOM, CONST, NOT, AND, OR = range(5)


class _Exact:
    """Condition programs of the rules the screen can evaluate exactly, and what they need:
    special atoms, and unindexed field atoms to check on every value of their field."""

    def __init__(self, atoms: list[Atom]) -> None:
        self.atoms = atoms
        self.special: list[int] = []
        self.every: dict[str, list[int]] = {}

    def atom(self, aid: int) -> bool:
        """Whether the screen can tell this atom's truth (or that it cannot, per event)."""
        atom = self.atoms[aid]
        kind = type(atom)
        if kind in SPECIAL_KINDS:
            if aid not in self.special:
                self.special.append(aid)
            return True
        if kind is TextAtom or kind is RegexAtom:
            if kind is RegexAtom and not _rust_regex(atom):
                return False  # decided by a key alone at best: not exactly
            if atom.keys:
                return True
            if atom.field is not None:
                every = self.every.setdefault(atom.field, [])
                if aid not in every:
                    every.append(aid)
                return True
        return False  # numeric, CIDR, keywords without a literal

    def program(self, node: Node | None) -> list[tuple[int, int]] | None:
        """The condition as a postfix program, or None if some atom is beyond the screen."""
        out: list[tuple[int, int]] = []
        return out if node is not None and self._emit(node, out) else None

    def _emit(self, node: Node, out: list[tuple[int, int]]) -> bool:
        op, arg = node
        if op == "atom":
            out.append((ATOM, arg))  # type: ignore[arg-type]
            return self.atom(arg)  # type: ignore[arg-type]
        if op == "const":
            out.append((CONST, int(bool(arg))))
            return True
        if op == "not":
            ok = self._emit(arg, out)  # type: ignore[arg-type]
            out.append((NOT, 0))
            return ok
        children: list[Node] = arg  # type: ignore[assignment]
        ok = all([self._emit(child, out) for child in children])
        out.append((AND if op == "and" else OR, len(children)))
        return ok


def _special(aid: int, atom: Atom) -> tuple[int, int, str, str, bool, bool, bool]:
    """(local id, kind, field, other field, starts, ends, wanted presence)."""
    kind = SPECIAL_KINDS[type(atom)]
    other = atom.other if isinstance(atom, FieldRefAtom) else ""
    starts = isinstance(atom, FieldRefAtom) and atom.starts
    ends = isinstance(atom, FieldRefAtom) and atom.ends
    want = isinstance(atom, ExistsAtom) and atom.want
    return aid, kind, atom.field or "", other, starts, ends, want


def export_plan(index: RuleIndex, atoms: list[Atom]) -> dict[str, Any]:
    """The screen's constructor arguments for one route's index.

    Rules whose every atom the screen can evaluate exactly carry their condition program:
    a candidate whose program is false is no candidate. Rules without a trigger are evaluated on
    every event that way, or, if one of them cannot be, the whole route goes to Python.
    """
    exact = _Exact(atoms)
    programs = [exact.program(rule.condition) for rule in index.rules]
    direct_ok = all(type(atoms[aid]) in SPECIAL_KINDS and exact.atom(aid) for aid in index.direct_triggers)
    always = not direct_ok or any(programs[position] is None for position in index.always)
    ids = _Ids()
    fields = {path: _field(field, ids) for path, field in index.fields.items()}
    for path, extra in exact.every.items():
        exact_keys, every, keys = fields.get(path, ([], [], []))
        fields[path] = (exact_keys, list(dict.fromkeys([*every, *ids(extra)])), keys)  # each check once
    checked: set[int] = {aid for extra in exact.every.values() for aid in extra}
    for field in [*index.fields.values(), *([index.keywords] if index.keywords is not None else [])]:
        checked |= _checked(field)
    plan: dict[str, Any] = {
        "fields": list(fields.items()),
        "keywords": _field(index.keywords, ids) if index.keywords is not None else None,
        "triggers": [(ids.one(aid), list(positions)) for aid, positions in index.triggers.items()],
        "rest": [[ids(clause) for clause in clauses] for clauses in index.rest],
        "always": always,
        "programs": [None if program is None else [(op, ids.one(arg) if op == ATOM else arg)
                                                   for op, arg in program] for program in programs],
        "untriggered": list(index.always),
        "special": [_special(ids.one(aid), atoms[aid]) for aid in exact.special],
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
