"""Property test: the indexed ``evaluate`` equals ``evaluate_naive`` on generated rules and events."""

from __future__ import annotations

import random
from typing import Any

from detectors.model import LogSource
from detectors.sigma import RuleText, compile_ruleset
from tests.support.sigma import rule_yaml

FIELDS = ["A", "B", "c.d", "E"]
CHARS = "abAB-/ .x"
MODIFIERS = ["", "|contains", "|startswith", "|endswith", "|cased", "|contains|cased", "|re", "|re|i",
             "|contains|all", "|windash|contains", "|neq", "|gt", "|exists", "|cidr", "|base64offset|contains"]
LOGSOURCES = [{"product": "p1"}, {"product": "p1", "category": "c1"}, {"product": "p2", "service": "s"}]


def word(rng: random.Random) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(1, 4)))


def pattern(rng: random.Random) -> str:
    text = word(rng)
    if rng.random() < 0.3:
        text = text[: rng.randint(0, len(text))] + rng.choice(["*", "?", "\\*"]) + word(rng)
    return text


def item(rng: random.Random) -> tuple[str, Any]:
    field = rng.choice(FIELDS)
    mod = rng.choice(MODIFIERS)
    if mod == "|exists":
        return field + mod, rng.random() < 0.7
    if mod == "|gt":
        return field + mod, rng.randint(0, 20)
    if mod == "|cidr":
        return field + mod, rng.choice(["10.0.0.0/8", "fe80::/16"])
    if mod.startswith("|re"):
        return field + mod, rng.choice(["^a", "b$", "a.b", "[ab]{2}", "x|/", "(a)\\1"])
    if mod in ("|contains|all", "") and rng.random() < 0.5:
        return field + mod, [pattern(rng) for _ in range(rng.randint(2, 3))]
    if rng.random() < 0.1:
        return field, None
    if rng.random() < 0.1:
        return field, rng.randint(0, 5)
    return field + mod, pattern(rng) if mod in ("", "|cased") else word(rng)


def detection(rng: random.Random) -> dict[str, Any]:
    names = [f"sel{i}" for i in range(rng.randint(1, 3))]
    det: dict[str, Any] = {}
    for name in names:
        if rng.random() < 0.15:
            det[name] = [word(rng) for _ in range(rng.randint(1, 2))]  # keywords
        elif rng.random() < 0.2:
            det[name] = [dict([item(rng)]), dict([item(rng)])]
        else:
            det[name] = dict(item(rng) for _ in range(rng.randint(1, 3)))

    def expr(depth: int) -> str:
        roll = rng.random()
        if depth > 2 or roll < 0.4:
            return rng.choice(names)
        if roll < 0.55:
            return f"not {expr(depth + 1)}"
        if roll < 0.65:
            return rng.choice(["1 of sel*", "all of sel*", "1 of them"])
        return f"({expr(depth + 1)} {rng.choice(['and', 'or'])} {expr(depth + 1)})"
    det["condition"] = expr(0)
    return det


def value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.12:
        return rng.randint(0, 25)
    if roll < 0.16:
        return rng.choice(["10.1.2.3", "fe80::1", "192.168.0.1"])
    if roll < 0.22:
        return [word(rng) for _ in range(2)]
    return "".join(rng.choice(CHARS + "ABab") for _ in range(rng.randint(0, 8)))


def event(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in rng.sample(FIELDS, rng.randint(0, len(FIELDS))):
        if field == "c.d" and rng.random() < 0.5:
            out["c"] = {"d": value(rng)}
        else:
            out[field if rng.random() < 0.8 else field.lower()] = value(rng)
    return out


def test_evaluate_equals_naive() -> None:
    rng = random.Random(20240501)
    texts = [RuleText(f"gen{i}.yml", rule_yaml(detection(rng), logsource=rng.choice(LOGSOURCES)))
             for i in range(150)]
    result = compile_ruleset(texts)
    ruleset = result.ruleset
    assert len(ruleset.rules) > 120, result.errors[:3]
    sources = [None, LogSource("p1"), LogSource("p1", "c1"), LogSource("p2", None, "s"), LogSource("p3")]
    matched = 0
    for _ in range(200):
        ev = event(rng)
        for source in sources:
            fast = [(m.rule.id, m.fields) for m in ruleset.evaluate(ev, source)]
            slow = [(m.rule.id, m.fields) for m in ruleset.evaluate_naive(ev, source)]
            assert fast == slow, (ev, source)
            matched += len(fast)
    assert matched > 300  # the generator must produce real matches, not only empty results
