"""Shared per-field indexes: one exact-value dict and one Aho-Corasick automaton per field path.

A single pass of a field value through its automaton finds every rule atom
whose literal occurs in it; the hit's position confirms prefix/suffix atoms
without touching the string again, other atoms are verified by ``check``.
"""

from __future__ import annotations

from typing import Any

import ahocorasick

from detectors.sigma.atoms import Atom, Mode

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
