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


def to_predicate(node: Node) -> Predicate:
    op, arg = node
    if op == "atom":
        aid = arg

        def atom(c: Context) -> bool:
            return aid in c.hits or c.slow(aid)  # type: ignore[arg-type]
        return atom
    if op == "const":
        value = bool(arg)
        return lambda c: value
    if op == "not":
        inner = to_predicate(arg)  # type: ignore[arg-type]
        return lambda c: not inner(c)
    parts = [to_predicate(child) for child in arg]  # type: ignore[attr-defined]
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


def positive_atoms(node: Node, positive: bool = True, out: list[int] | None = None) -> list[int]:
    """Atoms under an even number of negations, in rule order, without repeats."""
    found: list[int] = [] if out is None else out
    op, arg = node
    if op == "atom":
        if positive and arg not in found:
            found.append(arg)  # type: ignore[arg-type]
    elif op == "not":
        positive_atoms(arg, not positive, found)  # type: ignore[arg-type]
    elif op in ("and", "or"):
        for child in arg:  # type: ignore[attr-defined]
            positive_atoms(child, positive, found)
    return found


def trigger(node: Node, indexed: Callable[[int], bool]) -> frozenset[int] | None:
    """Atoms one of which must be true for ``node`` to be true; None when no such set exists."""
    op, arg = node
    if op == "atom":
        return frozenset((arg,))  # type: ignore[arg-type]
    if op == "const":
        return None if arg else frozenset()
    if op == "not":
        return None
    subs = [trigger(child, indexed) for child in arg]  # type: ignore[attr-defined]
    if op == "or":
        if any(s is None for s in subs):
            return None
        return frozenset().union(*[s for s in subs if s is not None])
    best: frozenset[int] | None = None
    for s in subs:
        if s is None:
            continue
        if best is None or _cost(s, indexed) < _cost(best, indexed):
            best = s
    return best


def _cost(atoms: frozenset[int], indexed: Callable[[int], bool]) -> tuple[int, int]:
    """Prefer triggers found by the index, then smaller ones."""
    return (sum(1 for a in atoms if not indexed(a)), len(atoms))
