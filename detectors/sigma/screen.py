"""The native screen: clears raw JSON events that no rule of a route can match.

Most log events match no rule, yet the Python path decodes, flattens and scans
each one. The screen (``detectors._native``, built from ``detectors/native``)
walks the raw message once against a copy of the route's index and answers
whether the Python engine *could* match it; with ``decide`` it also decides, for every
event it does not clear, which rules match and which it cannot decide (the engine's
``evaluate_decided`` then makes the matches and tests only the undecided rules). It never
guesses: when it cannot decide exactly (regular expressions Rust may read otherwise than RE2,
keys and values Python 3.11 may case-fold otherwise than Rust's newer Unicode tables, messages
Python might reject), the rule, or the whole event, takes the Python path. The conformance
suite and ``bench/fuzz_screen.py`` check that a cleared event never has a match and that a
decision makes exactly the Python engine's matches.

The plan handed to the extension is the typed, versioned format of
:mod:`detectors.sigma.screen_abi`. Without the native module (no Rust toolchain at install
time) :func:`build` returns None and everything takes the Python path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from detectors.sigma.atoms import Atom, CidrAtom, ExistsAtom, FieldRefAtom, NullAtom, RegexAtom, TextAtom
from detectors.sigma.compiled import CompiledRule
from detectors.sigma.conditions import Node
from detectors.sigma.index import FieldIndex, RuleIndex
from detectors.sigma.regex import dollar_before_newline
from detectors.sigma.screen_abi import (
    ABI_VERSION,
    Check,
    CheckKind,
    ExactKey,
    FieldPlan,
    Instr,
    Op,
    Plan,
    Special,
    SpecialKind,
    StaleExtension,
    SubstringKey,
    Trigger,
    glob_parts,
)

try:
    from detectors import _native  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised where the extension is not built
    _native = None

AVAILABLE = _native is not None


Shown = tuple[tuple[str, Any], ...]
"""The fields a match shows (:attr:`detectors.model.Match.fields`): (display name, value) pairs."""

Decision = tuple[list[int], list[int]] | tuple[list[int], list[int], list[Shown | None]]
"""The rules of one picked event, by position in the route's rules (:attr:`Screen.rules`), both
ascending: those that match, and those the screen cannot decide (Python evaluates them). Every
other rule of the route does not match. The extension adds, per matched rule, the fields its
match shows as the Python engine would make them, or None (Python makes them); a decision of
two parts (an older extension, tests) has Python make them all."""

Decided = tuple[list[int], list[float], list[Decision | None]]
"""``Screen.decide``'s answer: picked positions, cleared runs' latest event times, and per picked
position its :data:`Decision` (None: the screen could not read the message as Python does)."""


class Screen(Protocol):
    rules: tuple[CompiledRule, ...]
    """The route's rules, in rule order (a :data:`Decision` names them by position)."""

    def scan(self, values: list[Any], fallbacks: list[int], time_fields: list[str] | None, max_bytes: int,
             max_depth: int) -> tuple[list[int], list[float]]:
        """Positions needing the Python path, and the latest event time of each run cleared around them
        (NaN when ``time_fields`` is None; a message without a time field counts at its fallback, in ms)."""
        ...

    def scan_records(self, records: list[Any], time_fields: list[str] | None, max_bytes: int,
                     max_depth: int) -> tuple[list[int], list[float]]:
        """The same over Kafka records (``value`` bytes, ``timestamp`` in milliseconds)."""
        ...

    def decide(self, values: list[Any], fallbacks: list[int], time_fields: list[str] | None, max_bytes: int,
               max_depth: int) -> Decided:
        """:meth:`scan`, and each picked message's rules decided (see :data:`Decided`)."""
        ...

    def decide_records(self, records: list[Any], time_fields: list[str] | None, max_bytes: int,
                       max_depth: int) -> Decided:
        """:meth:`decide` over Kafka records."""
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


def _field(index: FieldIndex, ids: _Ids) -> FieldPlan:
    exact = [ExactKey(key, ids(plain), ids(verify)) for key, (plain, verify) in index.exact.items()]
    keys = [SubstringKey(key, ids(entry[1]), ids(entry[2]), ids(entry[3]), ids(entry[4]))
            for key, entry in _keys(index)]
    return FieldPlan(exact, ids(index.every), keys)


def _checked(index: FieldIndex) -> set[int]:
    """Atoms the scan confirms with their own check (the rest are decided by the key alone)."""
    out = set(index.every)
    for _, verify in index.exact.values():
        out.update(verify)
    for _, entry in _keys(index):
        out.update(entry[4])
    return out


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


def _check(aid: int, atom: Atom) -> Check:
    """A text atom's check, an RE2 regex the screen runs with Rust's ``regex`` (same syntax and,
    on the ASCII values the screen reads, the same semantics), a ``|cidr`` network, or, for
    everything else (Python ``re`` fallbacks, ...), an assumption: counted as satisfied."""
    if type(atom) is TextAtom:
        return Check(aid, CheckKind(atom.kind), atom.literal, atom.cased, glob_parts(atom.pattern.glob))
    if _rust_regex(atom):
        source: str = atom.re2_source  # type: ignore[attr-defined]
        return Check(aid, CheckKind.REGEX, source, dollar_before_newline(source), [])
    if type(atom) is CidrAtom:
        v6 = atom.version == 6
        return Check(aid, CheckKind.CIDR, "" if v6 else f"{atom.prefix}/{atom.mask}", v6, [])
    return Check(aid, CheckKind.ASSUME, "", False, [])


SPECIAL_KINDS = {NullAtom: SpecialKind.NULL, ExistsAtom: SpecialKind.EXISTS, FieldRefAtom: SpecialKind.FIELD_REF}
"""Atoms tested on the whole event that the screen evaluates exactly from the paths it saw."""


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
        if kind is TextAtom or kind is RegexAtom or kind is CidrAtom:
            if kind is RegexAtom and not _rust_regex(atom):
                return False  # decided by a key alone at best: not exactly
            if atom.keys:
                return True
            if atom.field is not None:  # checked on every value of its field (cidr: always)
                every = self.every.setdefault(atom.field, [])
                if aid not in every:
                    every.append(aid)
                return True
        return False  # numeric, keywords without a literal

    def program(self, node: Node | None) -> list[Instr] | None:
        """The condition as a postfix program (global atom ids), or None if some atom is beyond
        the screen."""
        out: list[Instr] = []
        return out if node is not None and self._emit(node, out) else None

    def _emit(self, node: Node, out: list[Instr]) -> bool:
        op, arg = node
        if op == "atom":
            out.append(Instr(Op.ATOM, arg))  # type: ignore[arg-type]
            return self.atom(arg)  # type: ignore[arg-type]
        if op == "const":
            out.append(Instr(Op.CONST, int(bool(arg))))
            return True
        if op == "not":
            ok = self._emit(arg, out)  # type: ignore[arg-type]
            out.append(Instr(Op.NOT, 0))
            return ok
        children: list[Node] = arg  # type: ignore[assignment]
        ok = all([self._emit(child, out) for child in children])
        out.append(Instr(Op.AND if op == "and" else Op.OR, len(children)))
        return ok


def _special(aid: int, atom: Atom) -> Special:
    kind = SPECIAL_KINDS[type(atom)]
    other = atom.other if isinstance(atom, FieldRefAtom) else ""
    starts = isinstance(atom, FieldRefAtom) and atom.starts
    ends = isinstance(atom, FieldRefAtom) and atom.ends
    want = isinstance(atom, ExistsAtom) and atom.want
    return Special(aid, kind, atom.field or "", other, starts, ends, want)


def export_plan(index: RuleIndex, atoms: list[Atom], cased_fields: bool = False) -> Plan:
    """The screen's constructor arguments for one route's index (``cased_fields``: the ruleset's,
    which its atoms' field paths were compiled for).

    Rules whose every atom the screen can evaluate exactly carry their condition program: a
    candidate whose program is false is no candidate, one whose program is true matches. Rules
    without a trigger are evaluated on every event that way; those without a program, and the
    rules a trigger atom the screen never reports would bring, are left to Python on every
    event (``undecided``).
    """
    exact = _Exact(atoms)
    programs = [exact.program(rule.condition) for rule in index.rules]
    undecided: dict[int, None] = {}
    for aid in index.direct_triggers:  # reported: special atoms, and networks (checked on every value)
        if not ((type(atoms[aid]) in SPECIAL_KINDS or type(atoms[aid]) is CidrAtom) and exact.atom(aid)):
            undecided.update(dict.fromkeys(index.triggers[aid]))
    untriggered = [position for position in index.always if programs[position] is not None]
    undecided.update(dict.fromkeys(position for position in index.always if programs[position] is None))
    ids = _Ids()
    fields = {path: _field(field, ids) for path, field in index.fields.items()}
    for path, extra in exact.every.items():
        exact_keys, every, keys = fields.get(path, FieldPlan([], [], []))
        fields[path] = FieldPlan(exact_keys, list(dict.fromkeys([*every, *ids(extra)])), keys)  # each check once
    checked: set[int] = {aid for extra in exact.every.values() for aid in extra}
    for field in [*index.fields.values(), *([index.keywords] if index.keywords is not None else [])]:
        checked |= _checked(field)
    # the order of these calls numbers the atoms (ids): keep it
    keywords = _field(index.keywords, ids) if index.keywords is not None else None
    triggers = [Trigger(ids.one(aid), list(positions)) for aid, positions in index.triggers.items()]
    rest = [[ids(clause) for clause in clauses] for clauses in index.rest]
    local_programs = [None if program is None else [Instr(op, ids.one(arg) if op is Op.ATOM else arg)
                                                    for op, arg in program] for program in programs]
    special = [_special(ids.one(aid), atoms[aid]) for aid in exact.special]
    checks = [_check(ids.local[aid], atoms[aid]) for aid in sorted(checked)]
    local = ids.local  # numbered: a program names every atom of its rule
    shown = [None if program is None else [local[aid] for aid in rule.positives]
             for rule, program in zip(index.rules, programs, strict=True)]
    displays = [""] * len(local)
    for aid, number in local.items():
        displays[number] = atoms[aid].display
    return Plan(fields=list(fields.items()), keywords=keywords, checks=checks, triggers=triggers, rest=rest,
                undecided=sorted(undecided), programs=local_programs, untriggered=untriggered, special=special,
                displays=displays, shown=shown, atom_count=len(local), cased_fields=cased_fields)


class NativeScreen:
    """The native screen of one route and the route's rules, which its decisions name by position.

    ``scan``/``scan_records`` clear events; ``decide``/``decide_records`` also decide the rules of
    each picked event (see :class:`Screen`)."""

    __slots__ = ("decide", "decide_records", "rules", "scan", "scan_records")

    def __init__(self, native: Any, rules: Sequence[CompiledRule]) -> None:
        self.rules: tuple[CompiledRule, ...] = tuple(rules)
        """The route's rules in rule order: the positions of a decision index them."""
        self.scan = native.scan
        self.scan_records = native.scan_records
        self.decide = native.decide
        self.decide_records = native.decide_records


def build(index: RuleIndex, atoms: list[Atom], plan: Plan | None = None,
          cased_fields: bool = False) -> Screen | None:
    """The native screen of one route's index, or None without the native module (``plan``: the
    index's :func:`export_plan`, when known already: the compiled-ruleset cache keeps it;
    ``cased_fields``: the ruleset's).

    Raises :class:`~detectors.sigma.screen_abi.StaleExtension` when the extension was built for
    another plan format (the extension itself refuses such a plan with ``_native.AbiMismatch``):
    a stale build is rebuilt, never run, nor quietly left unscreened."""
    if _native is None:
        return None
    built_for = getattr(_native, "ABI_VERSION", None)
    if built_for != ABI_VERSION:
        raise StaleExtension(built_for)
    try:
        native = _native.Screen(**(plan if plan is not None else export_plan(index, atoms, cased_fields))._asdict())
    except _native.AbiMismatch:
        raise  # a stale build of the extension: rebuild it, never run a misread plan
    except ValueError:  # an index the native side cannot hold: that route is not screened
        return None
    screen: Screen = NativeScreen(native, index.rules)
    return screen
