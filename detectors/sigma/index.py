"""Shared indexes: per field path one exact-value dict and one Aho-Corasick automaton.

A single pass of a field value through its automaton finds every rule atom
whose literal occurs in it; the hit's position confirms prefix/suffix atoms
without touching the string again, other atoms are verified by ``check``.
"""

from __future__ import annotations

from typing import Any

import ahocorasick

from detectors.sigma.atoms import Atom, Mode, View
from detectors.sigma.compiled import CompiledRule, Context
from detectors.sigma.fields import Flat
from detectors.sigma.text import as_text

_EXACT_MODES = (Mode.EXACT, Mode.EXACT_VERIFY)


class FieldIndex:
    """Index of the atoms testing one field (or, for keyword atoms, every string)."""

    __slots__ = ("_pending", "automaton", "exact")

    def __init__(self) -> None:
        self.exact: dict[str, list[tuple[int, bool]]] = {}
        self._pending: dict[str, list[tuple[int, Mode]]] = {}
        self.automaton: Any = None

    def add(self, aid: int, key: str, mode: Mode) -> None:
        if mode in _EXACT_MODES:
            self.exact.setdefault(key, []).append((aid, mode is Mode.EXACT_VERIFY))
        else:
            self._pending.setdefault(key, []).append((aid, mode))

    def finish(self) -> None:
        if not self._pending:
            return
        automaton = ahocorasick.Automaton()
        for key, entries in self._pending.items():
            automaton.add_word(key, (len(key) - 1, tuple(entries)))
        automaton.make_automaton()
        self.automaton = automaton
        self._pending = {}

    def scan(self, value: Any, text: str, hits: dict[int, Any], atoms: list[Atom]) -> None:
        """Record in ``hits`` every indexed atom that ``value`` (as ``text``) satisfies."""
        folded = text.lower()
        exact = self.exact.get(folded)
        if exact is not None:
            for aid, verify in exact:
                if aid not in hits and (not verify or atoms[aid].check(text, folded)):
                    hits[aid] = value
        automaton = self.automaton
        if automaton is None:
            return
        last = len(folded) - 1
        failed: set[int] | None = None
        for end, (klast, entries) in automaton.iter(folded):
            for aid, mode in entries:
                if aid in hits:
                    continue
                if mode is Mode.ANYWHERE:
                    hits[aid] = value
                elif mode is Mode.PREFIX:
                    if end == klast:
                        hits[aid] = value
                elif mode is Mode.SUFFIX:
                    if end == last:
                        hits[aid] = value
                elif failed is None or aid not in failed:
                    if atoms[aid].check(text, folded):
                        hits[aid] = value
                    elif failed is None:
                        failed = {aid}
                    else:
                        failed.add(aid)


class RuleIndex:
    """Shared field indexes and trigger tables over a list of rules (one log-source bucket, or all)."""

    __slots__ = ("always", "direct_triggers", "fields", "keywords", "need", "rules", "triggers")

    def __init__(self, rules: list[CompiledRule], atoms: list[Atom]) -> None:
        self.rules = rules
        self.fields: dict[str, FieldIndex] = {}
        self.keywords: FieldIndex | None = None
        triggers: dict[int, list[tuple[int, int]]] = {}
        always: list[int] = []
        direct: list[int] = []
        need: list[int] = []
        seen: set[int] = set()
        for position, rule in enumerate(rules):
            need.append((1 << len(rule.trigger)) - 1 if rule.trigger is not None else 0)
            if rule.trigger is None:
                always.append(position)
            else:
                for bit, clause in enumerate(rule.trigger):
                    for aid in clause:
                        if aid not in triggers:
                            triggers[aid] = []
                            if not atoms[aid].keys:
                                direct.append(aid)
                        triggers[aid].append((position, 1 << bit))
            for aid in rule.atom_ids:
                atom = atoms[aid]
                if aid in seen or not atom.keys:
                    continue
                seen.add(aid)
                if atom.field is None:
                    if self.keywords is None:
                        self.keywords = FieldIndex()
                    target = self.keywords
                else:
                    target = self.fields.setdefault(atom.field, FieldIndex())
                for key, mode in atom.keys:
                    target.add(aid, key, mode)
        for index in self.fields.values():
            index.finish()
        if self.keywords is not None:
            self.keywords.finish()
        self.triggers = {aid: tuple(positions) for aid, positions in triggers.items()}
        self.need = tuple(need)
        self.always = tuple(always)
        self.direct_triggers = tuple(direct)

    def scan(self, flat: Flat, view: View, hits: dict[int, Any], atoms: list[Atom]) -> None:
        """Record in ``hits`` every indexed atom of these rules that the event satisfies."""
        fields = self.fields
        for path, values in flat.items():
            index = fields.get(path)
            if index is None:
                continue
            for value in values:
                text = as_text(value)
                if text is not None:
                    index.scan(value, text, hits, atoms)
        if self.keywords is not None:
            keywords = self.keywords
            for text in view.strings():
                keywords.scan(text, text, hits, atoms)

    def candidates(self, ctx: Context, out: list[CompiledRule]) -> None:
        """Append the rules whose every trigger clause has a true atom (plus the always-candidates)."""
        for aid in self.direct_triggers:
            ctx.slow(aid)
        triggers = self.triggers
        marks: dict[int, int] = {}
        for aid in ctx.hits:
            entries = triggers.get(aid)
            if entries is not None:
                for position, bit in entries:
                    marks[position] = marks.get(position, 0) | bit
        need = self.need
        rules = self.rules
        out.extend(rules[p] for p, mark in marks.items() if mark == need[p])
        out.extend(rules[p] for p in self.always)
