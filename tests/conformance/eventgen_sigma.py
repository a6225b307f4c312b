"""Events derived from a Sigma rule's own detection: some should match, some should just miss.

Used by the differential test: both pipesentry and the SQLite oracle judge the
same events, so the generator does not have to be right about every event; it
has to exercise each rule's values, modifiers and negations. It works on
pySigma's parsed condition tree (modifiers already applied: ``contains`` is a
wildcard string, ``windash``/``base64offset`` an expansion, ``neq`` a NOT).

For each rule it produces, deterministically (seeded by the rule id):

- satisfying events: one per sampled way to make the condition true;
- filter hits: a satisfying event merged with a way to make the condition false
  (typically the rule's ``filter`` selection), which should not match;
- near misses: a satisfying event with one value altered slightly, extended at either
  end (anchoring of ``startswith``/``endswith``/exact values), or one field dropped;
- an empty event and one with every field of the rule set to ``""``.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaRule
from sigma.types import (
    Placeholder,
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
    SpecialChars,
)

from tests.conformance.regex_sample import sample_regex

MAX_ALTERNATIVES = 6
FILLERS: tuple[str, ...] = ("", "x", "ab c", "Q9_", "/tmp/", "0")
KEYWORD_FIELD = "_keyword"
"""Where a keyword (field-less) value is put: any field works for a keyword search."""


@dataclass(frozen=True, eq=False)
class Constraint:
    """One atom of the condition that must be true (``positive``) or false. Compared by identity."""

    field: str | None
    value: Any  # a pySigma value type
    positive: bool


Alternative = tuple[Constraint, ...]


def _cap(alts: list[Alternative], rng: random.Random) -> list[Alternative]:
    unique = list(dict.fromkeys(alts))
    if len(unique) <= MAX_ALTERNATIVES:
        return unique
    return [unique[0], *rng.sample(unique[1:], MAX_ALTERNATIVES - 1)]


def _product(groups: list[list[Alternative]], rng: random.Random) -> list[Alternative]:
    if any(not g for g in groups):
        return []
    total = 1
    for g in groups:
        total *= len(g)
    if total <= 4 * MAX_ALTERNATIVES:
        combos = list(itertools.product(*groups))
    else:
        combos = [tuple(g[0] for g in groups)]
        combos += [tuple(rng.choice(g) for g in groups) for _ in range(MAX_ALTERNATIVES)]
    return _cap([tuple(c for alt in combo for c in alt) for combo in combos], rng)


def satisfy(node: Any, want: bool, rng: random.Random) -> list[Alternative]:
    """Ways (sets of atom constraints) to make ``node`` evaluate to ``want``."""
    if isinstance(node, ConditionNOT):
        return satisfy(node.args[0], not want, rng)
    if isinstance(node, ConditionAND | ConditionOR):
        conjunctive = isinstance(node, ConditionAND) == want
        parts = [satisfy(arg, want, rng) for arg in node.args if arg is not None]
        if conjunctive:
            return _product(parts, rng)
        return _cap([alt for part in parts for alt in part], rng)
    if isinstance(node, ConditionFieldEqualsValueExpression | ConditionValueExpression):
        field = node.field if isinstance(node, ConditionFieldEqualsValueExpression) else None
        value = node.value
        if isinstance(value, SigmaExpansion):
            inner = ConditionOR([ConditionFieldEqualsValueExpression(field, v) if field is not None
                                 else ConditionValueExpression(v) for v in value.values])
            return satisfy(inner, want, rng)
        return [(Constraint(field, value, want),)]
    raise TypeError(f"unexpected condition node {type(node).__name__}")


# --- values -------------------------------------------------------------------------------------

def _flippable(c: str) -> bool:
    """Letters whose case flips one-to-one (not "ß" -> "SS", not Turkish dotted I)."""
    flipped = c.swapcase()
    return len(flipped) == 1 and flipped != c and flipped.swapcase() == c and flipped.lower() == c.lower()


def _vary_case(text: str, rng: random.Random) -> str:
    """Change letter case (ASCII and other scripts): Sigma matching is case-insensitive."""
    mode = rng.randrange(3)
    if mode == 0:
        return text
    if mode == 1:
        return "".join(c.swapcase() if _flippable(c) else c for c in text)
    return "".join(c.swapcase() if _flippable(c) and rng.random() < 0.5 else c for c in text)


def realize_string(value: SigmaString, rng: random.Random, *, strip_edges: bool = False) -> str:
    parts = list(value.iter_parts())
    if strip_edges:
        while parts and parts[0] == SpecialChars.WILDCARD_MULTI:
            parts.pop(0)
        while parts and parts[-1] == SpecialChars.WILDCARD_MULTI:
            parts.pop()
    out = []
    cased = isinstance(value, SigmaCasedString)
    for part in parts:
        if isinstance(part, str):
            out.append(part if cased else _vary_case(part, rng))
        elif part == SpecialChars.WILDCARD_MULTI:
            out.append(rng.choice(FILLERS))
        elif part == SpecialChars.WILDCARD_SINGLE:
            out.append(rng.choice("aZ7_"))
        elif isinstance(part, Placeholder):
            out.append(f"placeholder-{part.name}")
    return "".join(out)


def _combine_strings(values: list[SigmaString], regexes: list[SigmaRegularExpression],
                     rng: random.Random) -> str:
    """One string satisfying several wildcard patterns at once (``contains|all``, start+end)."""
    if len(values) == 1 and not regexes:
        return realize_string(values[0], rng)
    head = [v for v in values if not v.startswith(SpecialChars.WILDCARD_MULTI)]
    tail = [v for v in values if not v.endswith(SpecialChars.WILDCARD_MULTI) and v not in head]
    middle = [v for v in values if v not in head and v not in tail]
    pieces = [realize_string(v, rng, strip_edges=True) for v in head[:1]]
    pieces += [realize_string(v, rng, strip_edges=True) for v in middle + head[1:] + tail[1:]]
    pieces += [sample_regex(r.regexp.original, _flags(r), rng) for r in regexes]
    pieces += [realize_string(v, rng, strip_edges=True) for v in tail[:1]]
    return rng.choice((" ", "", "\\")).join(pieces)


def _flags(regex: SigmaRegularExpression) -> int:
    flags = 0
    if SigmaRegularExpressionFlag.IGNORECASE in regex.flags:
        flags |= re.IGNORECASE
    if SigmaRegularExpressionFlag.DOTALL in regex.flags:
        flags |= re.DOTALL
    if SigmaRegularExpressionFlag.MULTILINE in regex.flags:
        flags |= re.MULTILINE
    return flags


def _number(value: SigmaCompareExpression) -> int | float:
    n = value.number.number
    ops = SigmaCompareExpression.CompareOperators
    return {ops.LT: n - 1, ops.LTE: n, ops.GT: n + 1, ops.GTE: n, ops.NEQ: n + 7}[value.op]


def _address(value: SigmaCIDRExpression, rng: random.Random) -> str:
    net = value.network
    offset = rng.randrange(net.num_addresses) if net.num_addresses > 1 else 0
    return str(ipaddress.ip_address(int(net.network_address) + offset))


def field_value(values: list[Any], rng: random.Random) -> Any:
    """A value satisfying every positive constraint on one field (best effort)."""
    strings = [v for v in values if isinstance(v, SigmaString)]
    regexes = [v for v in values if isinstance(v, SigmaRegularExpression)]
    for v in values:
        if isinstance(v, SigmaBool):
            return v.boolean
        if isinstance(v, SigmaCompareExpression):
            return _number(v)
        if isinstance(v, SigmaNumber):
            return v.number
        if isinstance(v, SigmaCIDRExpression):
            return _address(v, rng)
    if strings or regexes:
        if not strings and len(regexes) == 1:
            return sample_regex(regexes[0].regexp.original, _flags(regexes[0]), rng)
        return _combine_strings(strings, regexes, rng)
    if any(isinstance(v, SigmaNull) for v in values):
        return None
    return "present"


def build_event(alt: Alternative, rng: random.Random) -> dict[str, Any]:
    """An event that satisfies the positive constraints of ``alt`` and, where easy, the negative ones."""
    positive: dict[str, list[Any]] = {}
    refs: list[tuple[str, SigmaFieldReference]] = []
    must_exist: set[str] = set()
    absent: set[str] = set()
    for c in alt:
        field = c.field if c.field is not None else KEYWORD_FIELD
        v = c.value
        if c.positive:
            if isinstance(v, SigmaExists):
                (must_exist if v.boolean else absent).add(field)
            elif isinstance(v, SigmaFieldReference):
                refs.append((field, v))
            else:
                positive.setdefault(field, []).append(v)
        elif isinstance(v, SigmaNull) or (isinstance(v, SigmaExists) and not v.boolean):
            must_exist.add(field)  # "not null" / "not missing": the field needs some value
        elif isinstance(v, SigmaExists) and v.boolean:
            absent.add(field)
    event: dict[str, Any] = {}
    for field, values in positive.items():
        event[field] = field_value(values, rng)
    for field in must_exist:
        if field not in event or event[field] is None:
            event[field] = "present"
    for field, ref in refs:
        base = event.get(ref.field)
        if base is None:
            base = event[ref.field] = "refvalue"
        text = str(base)
        event[field] = (text + "tail" if ref.starts_with else "head" + text if ref.ends_with else base)
    for field in absent:
        event.pop(field, None)
    return event


def _corrupt(value: Any, rng: random.Random) -> Any:
    """A slightly different value: one character changed, or a number off by one."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if not isinstance(value, str) or not value:
        return "changed"
    positions = [i for i, c in enumerate(value) if c.isalnum()]
    if not positions:
        return value[:-1]
    i = rng.choice(positions)
    c = value[i]
    repl = "x" if c.lower() != "x" else "y"
    if c.isdigit():
        repl = "7" if c != "7" else "3"
    return value[:i] + repl + value[i + 1:]


def _stringify_numbers(event: dict[str, Any]) -> dict[str, Any] | None:
    """Numbers as JSON strings: "All values are treated as case-insensitive strings"."""
    if not any(type(v) in (int, float) for v in event.values()):
        return None
    return {k: (str(v) if type(v) in (int, float) else v) for k, v in event.items()}


def _numberize(event: dict[str, Any]) -> dict[str, Any] | None:
    """Digit-only strings as JSON numbers (a rule's quoted '4688' against an integer field)."""
    if not any(isinstance(v, str) and v.isdigit() and v.isascii() and len(v) < 16 and (v == "0" or v[0] != "0")
               for v in event.values()):
        return None
    return {k: (int(v) if isinstance(v, str) and v.isdigit() and v.isascii() and len(v) < 16
                and (v == "0" or v[0] != "0") else v) for k, v in event.items()}


def _nest(event: dict[str, Any]) -> dict[str, Any] | None:
    """Dotted field names as nested objects (``a.b: x`` -> ``{"a": {"b": x}}``)."""
    if not any("." in k for k in event) or any(not k or ".." in k or k.startswith(".") or k.endswith(".")
                                               for k in event):
        return None
    out: dict[str, Any] = {}
    for key, value in event.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                return None  # "a" and "a.b" both present: no nested form
            node = child
        if leaf in node:
            return None
        node[leaf] = value
    return out


def _fields(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, ConditionFieldEqualsValueExpression):
        out.add(node.field)
        if isinstance(node.value, SigmaFieldReference):
            out.add(node.value.field)
    for arg in getattr(node, "args", ()) or ():
        if arg is not None:
            _fields(arg, out)
    return out


def rule_events(rule: SigmaRule, max_events: int = 44) -> list[dict[str, Any]]:
    """Deterministic candidate events for ``rule`` (deduplicated, at most ``max_events``)."""
    rng = random.Random(str(rule.id or rule.title))
    events: list[dict[str, Any]] = []
    for condition in rule.detection.parsed_condition:
        tree = condition.parsed
        positives = satisfy(tree, True, rng)
        negatives = satisfy(tree, False, rng)
        pos_events = [build_event(alt, rng) for alt in positives]
        events += pos_events
        for alt, neg in zip(positives, itertools.cycle(negatives or [()]), strict=False):
            events.append(build_event(alt + neg, rng))
        for event in pos_events[:3]:
            keys = sorted(event)
            for key in rng.sample(keys, min(2, len(keys))):
                events.append({k: (_corrupt(v, rng) if k == key else v) for k, v in event.items()})
            if keys:
                dropped = rng.choice(keys)
                events.append({k: v for k, v in event.items() if k != dropped})
            texts = [k for k in keys if isinstance(event[k], str) and event[k]]
            if texts:  # anchoring: text after an endswith/exact value, before a startswith/exact one
                key = rng.choice(texts)
                events.append({**event, key: event[key] + rng.choice((" -k netsvcs", "x", ".bak", "\\"))})
                events.append({**event, key: rng.choice(("C:\\x ", "x", "/", " ")) + event[key]})
        all_fields = sorted(_fields(tree, set()))
        if any(isinstance(leaf.value, SigmaRegularExpression) for leaf in iter_leaves(tree)):
            for event in pos_events[:2]:  # a trailing newline, as in multi-line logs (PCRE "$" semantics)
                events.append({k: (v + "\n" if isinstance(v, str) else v) for k, v in event.items()})
        for event in pos_events[:2]:
            variants = (_stringify_numbers(event), _numberize(event), _nest(event),
                        {**dict.fromkeys(all_fields), **event})  # absent fields as JSON null
            events += [v for v in variants if v is not None]
        events.append({})
        events.append(dict.fromkeys(all_fields, ""))
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        unique.setdefault(repr(sorted(event.items(), key=lambda kv: kv[0])), event)
    return list(unique.values())[:max_events]


def rule_fields(rule: SigmaRule) -> list[str]:
    fields: set[str] = set()
    for condition in rule.detection.parsed_condition:
        _fields(condition.parsed, fields)
    return sorted(fields)


def iter_leaves(node: Any) -> Iterable[Any]:
    if isinstance(node, ConditionFieldEqualsValueExpression | ConditionValueExpression):
        yield node
    for arg in getattr(node, "args", ()) or ():
        if arg is not None:
            yield from iter_leaves(arg)
