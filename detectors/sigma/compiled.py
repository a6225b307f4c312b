"""A compiled rule and the per-event evaluation context its predicate reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.model import Match, RuleInfo
from detectors.sigma.atoms import MISS, Atom, View
from detectors.sigma.conditions import Node, Predicate, to_predicate


@dataclass(frozen=True, slots=True)
class CompiledRule:
    info: RuleInfo
    predicate: Predicate
    """Reads index hits for indexed atoms (used by ``evaluate``)."""
    atom_ids: tuple[int, ...]
    positives: tuple[int, ...]
    trigger: tuple[frozenset[int], ...] | None
    """Clauses of atoms, each with a true atom whenever the rule matches; None: evaluate on every event."""
    order: int = 0
    """Position in the ruleset (matches are reported in this order)."""
    condition: Node | None = None
    """The boolean IR the predicates were made from (the native screen evaluates it for rules
    without a trigger)."""
    _naive: list[Predicate] = field(default_factory=list, repr=False, compare=False)

    def naive(self, ctx: Any) -> bool:
        """The condition testing every atom directly (``evaluate_naive``); its predicate is made
        on first use: only the tests and benchmarks' reference evaluator needs it."""
        if not self._naive:
            assert self.condition is not None, "a compiled rule keeps its condition"
            self._naive.append(to_predicate(self.condition, lambda aid: False))
        return self._naive[0](ctx)


class Context:
    """Per-event state: atom results found by the index (``hits``) plus lazily tested direct atoms."""

    __slots__ = ("atoms", "hits", "miss", "naive", "view")

    def __init__(self, view: View, hits: dict[int, Any], atoms: list[Atom], naive: bool = False) -> None:
        self.naive = naive
        self.view = view
        self.hits = hits
        self.atoms = atoms
        self.miss: set[int] = set()

    def slow(self, aid: int) -> bool:
        """Test a direct (unindexed) atom once per event (a route may have indexed it: see hits first)."""
        if aid in self.hits:
            return True
        if aid in self.miss:
            return False
        found = self.atoms[aid].test(self.view)
        if found is MISS:
            self.miss.add(aid)
            return False
        self.hits[aid] = found
        return True


def make_match(rule: CompiledRule, ctx: Context) -> Match:
    atoms = ctx.atoms
    fields: list[tuple[str, Any]] = []
    for aid in rule.positives:
        if aid in ctx.hits or ((ctx.naive or not atoms[aid].keys) and ctx.slow(aid)):
            pair = (atoms[aid].display, ctx.hits[aid])
            if pair not in fields:
                fields.append(pair)
    return Match(rule=rule.info, fields=tuple(fields))
