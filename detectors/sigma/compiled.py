"""A compiled rule and the per-event evaluation context its predicate reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from detectors.model import Match, RuleInfo, new_match
from detectors.sigma.atoms import MISS, Atom, View
from detectors.sigma.conditions import Node, Predicate, positive_atoms, to_predicate, trigger


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


def compiled_rule(info: RuleInfo, node: Node, order: int, atoms: Sequence[Atom]) -> CompiledRule:
    """A rule from its condition IR over ``atoms`` (what the compiler and the ruleset cache share)."""

    def indexed(aid: int) -> bool:
        return bool(atoms[aid].keys)
    positives = positive_atoms(node)
    return CompiledRule(
        info=info,
        predicate=to_predicate(node, indexed),
        atom_ids=tuple(dict.fromkeys(positives + positive_atoms(node, positive=False))),
        positives=tuple(positives),
        trigger=trigger(node, indexed),
        order=order,
        condition=node,
    )


RuleParts = tuple[RuleInfo, Node, int, tuple[int, ...], tuple[int, ...], "tuple[frozenset[int], ...] | None"]
"""What :func:`restored_rule` needs: info, condition, order, atom ids, positives, trigger (plain data)."""


def rule_parts(rule: CompiledRule) -> RuleParts:
    """The plain data a compiled rule is made of (see :func:`restored_rule`)."""
    assert rule.condition is not None, "a compiled rule keeps its condition"
    return (rule.info, rule.condition, rule.order, rule.atom_ids, rule.positives, rule.trigger)


class LazyPredicate:
    """A rule's predicate made from its condition on first use (a restored ruleset holds thousands
    of rules of which an event stream may evaluate few). The made predicate then replaces this
    object in its rule (``rule``), so later evaluations call it directly."""

    __slots__ = ("atoms", "made", "node", "rule")

    def __init__(self, node: Node, atoms: Sequence[Atom]) -> None:
        self.node = node
        self.atoms = atoms
        self.made: Predicate | None = None
        self.rule: CompiledRule | None = None

    def __call__(self, ctx: Any) -> bool:
        made = self.made
        if made is None:
            atoms = self.atoms
            made = self.made = to_predicate(self.node, lambda aid: bool(atoms[aid].keys))
            rule, self.rule = self.rule, None
            if rule is not None:
                object.__setattr__(rule, "predicate", made)  # a frozen dataclass: set once, to the same meaning
        return made(ctx)


def restored_rule(parts: RuleParts, atoms: Sequence[Atom]) -> CompiledRule:
    """The rule :func:`compiled_rule` made, from :func:`rule_parts` (its predicate made on first use)."""
    info, node, order, atom_ids, positives, trigger_ = parts
    lazy = LazyPredicate(node, atoms)
    rule = CompiledRule(info=info, predicate=lazy, atom_ids=atom_ids, positives=positives,
                        trigger=trigger_, order=order, condition=node)
    lazy.rule = rule
    return rule


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
    hits = ctx.hits
    miss = ctx.miss
    naive = ctx.naive
    fields: list[tuple[str, Any]] = []
    for aid in rule.positives:
        found = hits.get(aid, MISS)
        if found is MISS:
            if (not naive and atoms[aid].keys) or aid in miss:
                continue
            found = atoms[aid].test(ctx.view)  # Context.slow, inlined (its hits and misses kept alike)
            if found is MISS:
                miss.add(aid)
                continue
            hits[aid] = found
        pair = (atoms[aid].display, found)
        if pair not in fields:
            fields.append(pair)
    return new_match(rule.info, tuple(fields))
