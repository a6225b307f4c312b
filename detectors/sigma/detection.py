"""Turn a (pipeline-processed) pySigma rule's detection into IR nodes over shared atoms."""

from __future__ import annotations

from typing import Any, Protocol

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from sigma.types import (
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
)

from detectors.sigma.atoms import (
    Atom,
)
from detectors.sigma.conditions import Node, make_and, make_not, make_or
from detectors.sigma.errors import CompileError
from detectors.sigma.recipes import Recipe, make_atom
from detectors.sigma.regex import DEFAULT_TIMEOUT_MS
from detectors.sigma.text import Part, as_text, pattern_of, string_parts

_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: "i",
    SigmaRegularExpressionFlag.MULTILINE: "m",
    SigmaRegularExpressionFlag.DOTALL: "s",
}
_OPS = {"LT": "lt", "LTE": "lte", "GT": "gt", "GTE": "gte", "NEQ": "neq"}
MAX_VALUE_LENGTH = 65536
"""Longest rule value accepted (longer ones are almost certainly broken input)."""


class Interner(Protocol):
    """What turns an atom's recipe into its IR leaf: the :class:`AtomTable`, or a recorder of what a
    rule interns (:mod:`detectors.sigma.incremental`)."""

    def field(self, name: str) -> str: ...

    def intern(self, key: tuple[Any, ...], display: str) -> Node: ...


class AtomTable:
    """All atoms of a ruleset; identical atoms (same field and test) are shared between rules."""

    def __init__(self, counters: dict[str, int], regex_timeout_ms: float = DEFAULT_TIMEOUT_MS,
                 cased_fields: bool = False) -> None:
        self.atoms: list[Atom] = []
        self.recipes: list[Recipe] = []
        """The recipe of each atom, by atom id."""
        self._ids: dict[tuple[Any, ...], int] = {}
        self.counters = counters
        self.regex_timeout_ms = regex_timeout_ms
        """Time budget of one evaluation of a regex RE2 cannot run (see :mod:`detectors.sigma.regex`)."""
        self.cased_fields = cased_fields
        """Field names as the rule spells them (``rules.field_names: sensitive``), else lower-cased:
        an atom's field is the key of :func:`detectors.event.flatten`'s view in the same mode."""

    def field(self, name: str) -> str:
        """The atom field of a rule's field name."""
        return name if self.cased_fields else name.lower()

    def intern(self, key: tuple[Any, ...], display: str) -> Node:
        aid = self._ids.get(key)
        if aid is None:
            atom = make_atom(key, display, self.counters, self.regex_timeout_ms)
            aid = len(self.atoms)
            self.atoms.append(atom)
            self.recipes.append((key, display))
            self._ids[key] = aid
        return ("atom", aid)


def rule_node(rule: SigmaRule, table: Interner) -> Node:
    """IR of the whole rule: the OR of its conditions (a list of conditions means any of them)."""
    nodes = []
    for condition in rule.detection.parsed_condition:
        try:
            tree = condition.parsed
        except SigmaError as exc:
            raise CompileError(f"condition {condition.condition!r}: {exc}") from exc
        nodes.append(_node(tree, table))
    if not nodes:
        raise CompileError("rule has no condition")
    return make_or(nodes)


def _node(tree: Any, table: Interner) -> Node:
    match tree:
        case None:
            return ("const", False)
        case ConditionAND():
            return make_and([_node(arg, table) for arg in tree.args])
        case ConditionOR():
            return make_or([_node(arg, table) for arg in tree.args])
        case ConditionNOT():
            return make_not(_node(tree.args[0], table))
        case ConditionFieldEqualsValueExpression():
            return _value(tree.field, tree.value, table)
        case ConditionValueExpression():
            return _keyword(tree.value, table)
        case _:
            raise CompileError(f"unsupported condition element {type(tree).__name__}")


def _text_atom(field: str | None, display: str, parts: list[Part], cased: bool, table: Interner) -> Node:
    pattern = pattern_of(parts, fold=not cased)
    if len(pattern.literal) > MAX_VALUE_LENGTH:
        raise CompileError(f"value of field {display!r} is longer than {MAX_VALUE_LENGTH} characters")
    return table.intern(("text", field, pattern, cased), display)


def _keyword(value: Any, table: Interner) -> Node:
    """Keyword search: the value is looked for inside every string of the event."""
    if isinstance(value, SigmaExpansion):
        return make_or([_keyword(v, table) for v in value.values])
    if isinstance(value, SigmaRegularExpression):
        return _regex(None, "", value, table)
    if isinstance(value, SigmaString):
        parts: list[Part] = [SpecialChars.WILDCARD_MULTI, *string_parts(value), SpecialChars.WILDCARD_MULTI]
        return _text_atom(None, "", string_parts_merge(parts), isinstance(value, SigmaCasedString), table)
    if isinstance(value, SigmaBool | SigmaNumber):
        text = ("true" if value.boolean else "false") if isinstance(value, SigmaBool) else as_text(value.number)
        star = SpecialChars.WILDCARD_MULTI
        return _text_atom(None, "", [star, text or "", star], False, table)
    raise CompileError(f"unsupported keyword value of type {type(value).__name__}")


def string_parts_merge(parts: list[Part]) -> list[Part]:
    merged: list[Part] = []
    for part in parts:
        if part is SpecialChars.WILDCARD_MULTI and merged and merged[-1] is SpecialChars.WILDCARD_MULTI:
            continue
        merged.append(part)
    return merged


def _regex(field: str | None, display: str, value: SigmaRegularExpression, table: Interner) -> Node:
    if value.regexp.contains_placeholder():
        raise CompileError("unresolved placeholder in regular expression")
    flags = "".join(sorted(_FLAGS[f] for f in value.flags))
    source = (f"(?{flags})" if flags else "") + str(value.regexp)
    return table.intern(("re", field, source), display)


def _value(display: str, value: Any, table: Interner) -> Node:
    field = table.field(display)
    match value:
        case SigmaExpansion():
            return make_or([_value(display, v, table) for v in value.values])
        case SigmaString():
            return _text_atom(field, display, string_parts(value), isinstance(value, SigmaCasedString), table)
        case SigmaTimestampPart():
            part, number = value.timestamp_part, value.number
            return table.intern(("cmp", field, "eq", number, part), display)
        case SigmaBool():
            return _text_atom(field, display, ["true" if value.boolean else "false"], False, table)
        case SigmaNumber():
            return _text_atom(field, display, [as_text(value.number) or ""], False, table)
        case SigmaNull():
            return table.intern(("null", field), display)
        case SigmaExists():
            want = bool(value.exists)
            return table.intern(("exists", field, want), display)
        case SigmaRegularExpression():
            return _regex(field, display, value, table)
        case SigmaCIDRExpression():
            network = value.network
            return table.intern(("cidr", field, str(network)), display)
        case SigmaCompareExpression():
            op = _OPS[value.op.name]
            bound = value.number
            cpart = bound.timestamp_part if isinstance(bound, SigmaTimestampPart) else None
            return table.intern(("cmp", field, op, bound.number, cpart), display)
        case SigmaFieldReference():
            other = table.field(value.field)
            starts, ends = value.starts_with, value.ends_with
            return table.intern(("ref", field, other, starts, ends), display)
        case _:
            raise CompileError(f"unsupported value of type {type(value).__name__} for field {display!r}")
