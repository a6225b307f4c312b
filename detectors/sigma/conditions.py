"""Rule conditions: pySigma's condition tree -> a small boolean IR -> closures.

The IR also yields, per rule, its *trigger*: a set of atoms at least one of
which is true whenever the rule matches (None when the rule can match with
every atom false, e.g. ``not filter``). Only rules with a true trigger atom are
evaluated, which is what lets the engine skip almost every rule per event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Node = tuple[str, object]
"""``("atom", aid)``, ``("and", [nodes])``, ``("or", [nodes])``, ``("not", node)``, ``("const", bool)``."""

TRUE: Node = ("const", True)
FALSE: Node = ("const", False)


class Context(Protocol):
    hits: dict[int, object]

    def slow(self, aid: int) -> bool: ...


Predicate = Callable[[Context], bool]


def make_and(children: list[Node]) -> Node:
    flat: list[Node] = []
    for child in children:
        if child == TRUE:
            continue
        if child == FALSE:
            return FALSE
        flat.extend(child[1] if child[0] == "and" else [child])  # type: ignore[arg-type]
    if not flat:
        return TRUE
    return flat[0] if len(flat) == 1 else ("and", flat)


def make_or(children: list[Node]) -> Node:
    flat: list[Node] = []
    for child in children:
        if child == FALSE:
            continue
        if child == TRUE:
            return TRUE
        flat.extend(child[1] if child[0] == "or" else [child])  # type: ignore[arg-type]
    if not flat:
        return FALSE
    return flat[0] if len(flat) == 1 else ("or", flat)


def make_not(child: Node) -> Node:
    if child[0] == "const":
        return ("const", not child[1])
    if child[0] == "not":
        return child[1]  # type: ignore[return-value]
    return ("not", child)


def to_predicate(node: Node, indexed: Callable[[int], bool]) -> Predicate:
    """Closure evaluating ``node``; atoms found by the index are a dict lookup only."""
    op, arg = node
    if op == "atom":
        aid: int = arg  # type: ignore[assignment]
        if indexed(aid):
            return lambda c: aid in c.hits

        def atom(c: Context) -> bool:
            return aid in c.hits or c.slow(aid)
        return atom
    if op == "const":
        value = bool(arg)
        return lambda c: value
    if op == "not":
        inner = to_predicate(arg, indexed)  # type: ignore[arg-type]
        return lambda c: not inner(c)
    children: list[Node] = arg  # type: ignore[assignment]
    if len(children) > 2 and all(c[0] == "atom" and indexed(c[1]) for c in children):  # type: ignore[arg-type]
        members = frozenset(c[1] for c in children)
        if op == "or":
            return lambda c: not c.hits.keys().isdisjoint(members)
        if op == "and":
            return lambda c: c.hits.keys() >= members
    parts = [to_predicate(child, indexed) for child in children]
    if op == "and":
        if len(parts) == 2:
            a, b = parts
            return lambda c: a(c) and b(c)

        def all_of(c: Context) -> bool:
            for part in parts:  # noqa: SIM110 - a plain loop is faster than all() on a generator
                if not part(c):
                    return False
            return True
        return all_of
    if op == "or":
        if len(parts) == 2:
            a, b = parts
            return lambda c: a(c) or b(c)

        def any_of(c: Context) -> bool:
            for part in parts:  # noqa: SIM110 - a plain loop is faster than any() on a generator
                if part(c):
                    return True
            return False
        return any_of
    raise TypeError(f"unknown condition node {op!r}")


def positive_atoms(node: Node, positive: bool = True) -> list[int]:
    """Atoms under an even number of negations, in rule order, without repeats."""
    found: dict[int, None] = {}
    _collect(node, positive, found)
    return list(found)


def _collect(node: Node, positive: bool, found: dict[int, None]) -> None:
    op, arg = node
    if op == "atom":
        if positive:
            found.setdefault(arg)  # type: ignore[call-overload]
    elif op == "not":
        _collect(arg, not positive, found)  # type: ignore[arg-type]
    elif op in ("and", "or"):
        for child in arg:  # type: ignore[attr-defined]
            _collect(child, positive, found)


def trigger(node: Node, indexed: Callable[[int], bool]) -> tuple[frozenset[int], ...] | None:
    """Clauses of atoms such that, whenever ``node`` is true, every clause has a true atom.

    None means no such clause exists (the node can be true with all atoms false).
    The clauses kept are those found by the index alone; if there is none, the
    single cheapest clause is kept (its direct atoms are then tested per event).
    """
    clauses = _clauses(node)
    if clauses is None:
        return None
    if any(not clause for clause in clauses):
        return (frozenset(),)  # never true
    fully = tuple(c for c in clauses if all(indexed(a) for a in c))
    if fully:
        return fully
    return (min(clauses, key=lambda c: _cost(c, indexed)),)


def _clauses(node: Node) -> list[frozenset[int]] | None:
    op, arg = node
    if op == "atom":
        return [frozenset((arg,))]  # type: ignore[arg-type]
    if op == "const":
        return None if arg else [frozenset()]
    if op == "not":
        return None
    subs = [_clauses(child) for child in arg]  # type: ignore[attr-defined]
    if op == "and":
        out: list[frozenset[int]] = []
        for sub in subs:
            for clause in sub or ():
                if clause not in out:
                    out.append(clause)
        return out or None
    if any(sub is None for sub in subs):
        return None
    # OR: one clause of each alternative, united, is necessary; take each one's smallest.
    return [frozenset().union(*(min(sub, key=len) for sub in subs if sub is not None))]


def _cost(atoms: frozenset[int], indexed: Callable[[int], bool]) -> tuple[int, int]:
    """Prefer clauses found by the index, then smaller ones."""
    return (sum(1 for a in atoms if not indexed(a)), len(atoms))
