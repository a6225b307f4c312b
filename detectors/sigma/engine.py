"""The compiled ruleset: log-source routing, shared indexes and per-event evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sigma.correlations import SigmaCorrelationRule

from detectors.model import Event, LogSource, Match, RuleInfo
from detectors.sigma.atoms import MISS, Atom, View
from detectors.sigma.conditions import Predicate
from detectors.sigma.fields import flatten
from detectors.sigma.index import FieldIndex
from detectors.sigma.text import as_text

MAX_ROUTES = 256
"""Distinct event log sources whose routed index is cached (older ones are rebuilt on demand)."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    info: RuleInfo
    predicate: Predicate
    atom_ids: tuple[int, ...]
    positives: tuple[int, ...]
    trigger: tuple[frozenset[int], ...] | None
    """Clauses of atoms, each with a true atom whenever the rule matches; None: evaluate on every event."""


class _Context:
    """Per-event state: atom results found by the index (``hits``) plus lazily tested direct atoms."""

    __slots__ = ("atoms", "hits", "miss", "view")

    def __init__(self, view: View, hits: dict[int, Any], atoms: list[Atom]) -> None:
        self.view = view
        self.hits = hits
        self.atoms = atoms
        self.miss: set[int] = set()

    def slow(self, aid: int) -> bool:
        """Test a direct (unindexed) atom once per event."""
        if aid in self.miss:
            return False
        found = self.atoms[aid].test(self.view)
        if found is MISS:
            self.miss.add(aid)
            return False
        self.hits[aid] = found
        return True


class _LazyHits(dict[int, Any]):
    """Naive evaluation: every atom is tested on first use, nothing comes from an index."""

    def __init__(self, view: View, atoms: list[Atom]) -> None:
        super().__init__()
        self.view = view
        self.atoms = atoms
        self.miss: set[int] = set()

    def __contains__(self, aid: object) -> bool:
        if dict.__contains__(self, aid):
            return True
        if aid in self.miss or not isinstance(aid, int):
            return False
        found = self.atoms[aid].test(self.view)
        if found is MISS:
            self.miss.add(aid)
            return False
        self[aid] = found
        return True


def _match(rule: CompiledRule, ctx: _Context) -> Match:
    atoms = ctx.atoms
    fields: list[tuple[str, Any]] = []
    for aid in rule.positives:
        if aid in ctx.hits or (not atoms[aid].keys and ctx.slow(aid)):
            pair = (atoms[aid].display, ctx.hits[aid])
            if pair not in fields:
                fields.append(pair)
    return Match(rule=rule.info, fields=tuple(fields))


class Route:
    """The rules applying to one event log source, with their shared indexes."""

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

    def evaluate(self, event: Event, atoms: list[Atom]) -> list[Match]:
        flat = flatten(event)
        hits: dict[int, Any] = {}
        fields = self.fields
        for path, values in flat.items():
            index = fields.get(path)
            if index is None:
                continue
            for value in values:
                text = as_text(value)
                if text is not None:
                    index.scan(value, text, hits, atoms)
        view = View(flat)
        if self.keywords is not None:
            for text in view.strings():
                self.keywords.scan(text, text, hits, atoms)
        ctx = _Context(view, hits, atoms)
        for aid in self.direct_triggers:
            ctx.slow(aid)
        triggers = self.triggers
        marks: dict[int, int] = {}
        for aid in hits:
            entries = triggers.get(aid)
            if entries is not None:
                for position, bit in entries:
                    marks[position] = marks.get(position, 0) | bit
        need = self.need
        candidates = [p for p, mark in marks.items() if mark == need[p]]
        if self.always:
            candidates.extend(self.always)
        if not candidates:
            return []
        rules = self.rules
        out: list[Match] = []
        for position in sorted(candidates):
            rule = rules[position]
            if rule.predicate(ctx):
                out.append(_match(rule, ctx))
        return out


class Ruleset:
    """An immutable compiled set of Sigma rules; safe to share between threads.

    Routes (per event log source) are built lazily on first use and cached, so a
    cold start only pays for pySigma parsing and atom compilation.
    """

    def __init__(self, compiled: list[CompiledRule], atoms: list[Atom],
                 correlations: list[tuple[RuleInfo, SigmaCorrelationRule]],
                 filters: list[RuleInfo], counters: dict[str, int]) -> None:
        self._compiled = tuple(compiled)
        self._atoms = atoms
        self.rules: tuple[RuleInfo, ...] = tuple(rule.info for rule in compiled)
        self.correlations: tuple[tuple[RuleInfo, SigmaCorrelationRule], ...] = tuple(correlations)
        self.filters: tuple[RuleInfo, ...] = tuple(filters)
        self.counters = counters
        self._by_key: dict[str, RuleInfo] = {}
        for info in (*self.rules, *(info for info, _ in self.correlations)):
            self._by_key.setdefault(info.id, info)
        for info in (*self.rules, *(info for info, _ in self.correlations)):
            if info.name:
                self._by_key.setdefault(info.name, info)
        self._buckets = frozenset(rule.info.logsource for rule in compiled)
        self._routes: dict[tuple[str | None, ...] | None, Route] = {}

    def get(self, rule_id_or_name: str) -> RuleInfo | None:
        return self._by_key.get(rule_id_or_name)

    def _route(self, logsource: LogSource | None) -> Route:
        key = None if logsource is None else tuple(
            None if v is None else v.lower() for v in (logsource.product, logsource.category, logsource.service))
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            if logsource is None:
                chosen = list(self._compiled)
            else:
                covering = {ls for ls in self._buckets if ls.covers(logsource)}
                chosen = [r for r in self._compiled if r.info.logsource in covering]
            route = Route(chosen, self._atoms)
            self._routes[key] = route
        return route

    def evaluate(self, event: Event, logsource: LogSource | None = None) -> list[Match]:
        """Matches of every rule (covering ``logsource``, when given) on ``event``, in rule order."""
        if not isinstance(event, Mapping):
            return []
        return self._route(logsource).evaluate(event, self._atoms)

    def evaluate_naive(self, event: Event, logsource: LogSource | None = None) -> list[Match]:
        """Same result as :meth:`evaluate`, testing each rule in turn without any index."""
        if not isinstance(event, Mapping):
            return []
        view = View(flatten(event))
        ctx = _Context(view, _LazyHits(view, self._atoms), self._atoms)
        out: list[Match] = []
        for rule in self._compiled:
            if logsource is not None and not rule.info.logsource.covers(logsource):
                continue
            if rule.predicate(ctx):
                out.append(_match(rule, ctx))
        return out
