"""A string that a regular expression matches, built from Python's regex parse tree.

Covers the Sigma regex flavour (literals, ``.``, classes, anchors, quantifiers,
alternation, groups) plus the escapes SigmaHQ rules use (``\\d``, ``\\s``, ``\\w``,
``\\b``). Repetitions are kept short. Lookarounds and back references are
skipped: the result then may not match, which the differential test tolerates
(both implementations judge the same string).
"""

from __future__ import annotations

import random
import re
from typing import Any

try:
    import re._constants as C
    import re._parser as sre_parse
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as C  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

_CATEGORY_CHARS = {
    C.CATEGORY_DIGIT: "0123456789",
    C.CATEGORY_NOT_DIGIT: "aZ_-",
    C.CATEGORY_SPACE: " ",
    C.CATEGORY_NOT_SPACE: "aZ9_",
    C.CATEGORY_WORD: "aZ9_",
    C.CATEGORY_NOT_WORD: " -.",
}
_FALLBACK = "aZ9 _-./\\"


def sample_regex(pattern: str, flags: int, rng: random.Random) -> str:
    """A string expected to match ``pattern`` (``re.search`` semantics); ``""`` if unparsable."""
    try:
        tree = sre_parse.parse(pattern, flags)
    except (re.error, RecursionError, OverflowError):
        return ""
    text = _emit(tree, rng, depth=0)
    if flags & re.IGNORECASE:
        text = "".join(c.swapcase() if c.isascii() and rng.random() < 0.3 else c for c in text)
    return text


def _emit(items: Any, rng: random.Random, depth: int) -> str:
    if depth > 40:
        return ""
    return "".join(_emit_one(op, av, rng, depth) for op, av in items)


def _class_char(items: Any, rng: random.Random) -> str:
    negated = any(op == C.NEGATE for op, _ in items)
    if negated:
        excluded = set()
        for op, av in items:
            if op == C.LITERAL:
                excluded.add(chr(av))
            elif op == C.RANGE:
                excluded.update(chr(c) for c in range(av[0], min(av[1], av[0] + 2000) + 1))
            elif op == C.CATEGORY:
                excluded.update(_CATEGORY_CHARS.get(av, ""))
        for candidate in "qZ7 _-.:/,;=~@":
            if candidate not in excluded and candidate.lower() not in excluded:
                return candidate
        return "\x01"
    choices = []
    for op, av in items:
        if op == C.LITERAL:
            choices.append(chr(av))
        elif op == C.RANGE:
            choices.append(chr(rng.randint(av[0], av[1])))
        elif op == C.CATEGORY:
            choices.append(rng.choice(_CATEGORY_CHARS.get(av, "a")))
    return rng.choice(choices) if choices else "a"


def _emit_one(op: Any, av: Any, rng: random.Random, depth: int) -> str:
    if op == C.LITERAL:
        return chr(av)
    if op == C.NOT_LITERAL:
        return "q" if chr(av) != "q" else "z"
    if op == C.ANY:
        return rng.choice("aZ9_-")
    if op == C.IN:
        return _class_char(av, rng)
    if op == C.BRANCH:
        return _emit(rng.choice(av[1]), rng, depth + 1)
    if op == C.SUBPATTERN:
        return _emit(av[-1], rng, depth + 1)
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None)):
        low, high, item = av
        count = rng.randint(low, min(high, low + 2)) if low <= high else low
        count = min(count, 20_000)
        return "".join(_emit(item, rng, depth + 1) for _ in range(count))
    if op == C.ATOMIC_GROUP if hasattr(C, "ATOMIC_GROUP") else False:
        return _emit(av, rng, depth + 1)
    if op == C.CATEGORY:
        return rng.choice(_CATEGORY_CHARS.get(av, "a"))
    if op in (C.AT, C.ASSERT, C.ASSERT_NOT, C.GROUPREF, C.GROUPREF_EXISTS):
        return ""
    return ""
