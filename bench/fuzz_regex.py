"""Differential fuzzing of ``|re`` handling against RE2 (and Python ``re`` on a common subset).

Generates regex patterns from a small grammar (POSIX classes, escapes, flags, Unicode
classes, alternations, repeats, anchors, case-insensitive scopes), samples values each
pattern matches (plus mutations of them), and checks, for every value:

- ``prefilter``: when the engine running the pattern (RE2, or the ``regex`` fallback for
  patterns with a lookahead appended) matches, some literal of
  :func:`detectors.sigma.regex.required_literals` occurs in the lower-cased value;
- ``searcher``: :func:`detectors.sigma.regex.compile_regex` agrees with RE2 (plus the
  documented ``$``-before-a-final-newline retry);
- ``pcre``: on ASCII patterns and values of the syntax both read alike, the searcher agrees
  with Python ``re`` (``re.ASCII``), the PCRE-like reference of Sigma's ``|re``.

    python bench/fuzz_regex.py --seconds N [--seed S]

prints one JSON object: cases and values tried, per-check counts, and the findings.
The unit tests run the same generator and checks with a bounded example count.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import re2
import regex

from bench.fuzzing import Budget, Findings
from detectors.sigma.errors import CompileError
from detectors.sigma.regex import compile_regex, dollar_before_newline, required_literals

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 8 << 20

LETTERS = "abcdeikstxyzKSI"
TRICKY = "\u017f\u212a\u0131\u0130\u03a3\u03c3\u03c2\u00e9\u00c9\u03b1\u00b5\u212b\u00e5"
"""Long s, Kelvin, dotless/dotted i, sigmas, accented and Greek letters, micro, Angstrom."""
PUNCT = "-_./\\\"' :=!#%&,;<>@`~^$|?*+()[]{}"
PLAIN = LETTERS + "0129" + PUNCT + TRICKY
META = set("\\^$.|?*+()[]{}")

# (pattern text, characters it matches for sampling, read alike by Python re with re.ASCII)
CLASSES: list[tuple[str, str, bool]] = [
    ("\\d", "0379", True), ("\\D", "a-", True), ("\\w", "a_Z9", True), ("\\W", "- ", True),
    ("\\s", " \t", True), ("\\S", "ax", True), (".", "ax-", True), ("[abc]", "abc", True),
    ("[a-c]", "abc", True), ("[^a-c]", "xz-", True), ("[]a]", "]a", True), ("[^]a]", "bx", True),
    ("[\\d\\-]", "1-", True), ("[.]", ".", True), ("[[:space:]]", " \t", False),
    ("[[:alpha:]]", "aZ", False), ("[[:digit:]]", "07", False), ("[^[:digit:]]", "a ", False),
    ("[[:^alpha:]]", "1 ", False), ("[[:punct:]]", "-!", False), ("[[:upper:]]", "AZ", False),
    ("[[:alnum:]_]", "a_1", False), ("\\pL", "a\u00e9", False), ("\\p{Greek}", "\u03b1\u03a3", False),
    ("\\PL", "1-", False), ("\\pN", "5", False), ("\\x41", "A", False), ("\\x{42}", "B", False),
    ("\\x{17F}", "\u017f", False), ("\\101", "A", False), ("\\C", "x", False), ("\\t", "\t", True),
    ("\\n", "\n", True), ("[[:space:]x]", " x", False), ("[a[:digit:]]", "a5", False), ("{,2}", "{,2}", False),
    ("(?:a|aa)*", "aaa", True), ("(?:\\w|\\d)*", "a1", True),  # backtrack-heavy on the fallback
    ("\\Qa.b\\E", "", False), ("\\Q|)s\\E", "", False), ("\\Q(?i)\\E", "", False),
]
QUOTED = {"\\Qa.b\\E": "a.b", "\\Q|)s\\E": "|)s", "\\Q(?i)\\E": "(?i)"}
ANCHORS: list[tuple[str, bool]] = [("^", True), ("$", True), ("\\b", True), ("\\B", False), ("\\A", True),
                                   ("\\z", False)]
REPEATS: list[tuple[str, int, int, bool]] = [
    ("*", 0, 3, True), ("+", 1, 3, True), ("?", 0, 1, True), ("{2}", 2, 2, True), ("{1,3}", 1, 3, True),
    ("{0,2}", 0, 2, True), ("*?", 0, 3, True), ("+?", 1, 3, True), ("{2,}", 2, 4, True),
]


@dataclass
class Node:
    kind: str
    text: str = ""
    chars: str = ""
    children: list[Node] = field(default_factory=list)
    low: int = 1
    high: int = 1
    flag: str = ""
    common: bool = True


class Generator:
    """Random patterns (as trees that can render and sample themselves) from a seeded RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.names = 0

    def pattern(self) -> Node:
        rng = self.rng
        body = self.alternation(rng.randint(1, 3))
        if rng.random() < 0.3:
            flags = rng.choice(["i", "s", "m", "U", "is", "im"])
            return Node("seq", children=[Node("flags", flag=flags, common="U" not in flags), body])
        return body

    def alternation(self, depth: int) -> Node:
        if depth > 0 and self.rng.random() < 0.25:
            return Node("alt", children=[self.sequence(depth - 1) for _ in range(self.rng.randint(2, 3))])
        return self.sequence(depth)

    def sequence(self, depth: int) -> Node:
        rng = self.rng
        items: list[Node] = []
        for _ in range(rng.randint(1, 6)):
            roll = rng.random()
            if roll < 0.45:
                item = Node("lit", text="".join(rng.choice(PLAIN) for _ in range(rng.randint(1, 4))))
            elif roll < 0.65:
                text, chars, common = rng.choice(CLASSES)
                item = Node("class", text=text, chars=chars or QUOTED[text], common=common)
            elif roll < 0.72:
                text, common = rng.choice(ANCHORS)
                item = Node("anchor", text=text, common=common)
            elif roll < 0.76:
                item = Node("flags", flag=rng.choice(["i", "-i", "s"]), common=False)
            elif depth > 0:
                item = self.group(depth - 1)
            else:
                item = Node("lit", text=rng.choice(LETTERS))
            if item.kind in ("lit", "class", "group") and rng.random() < 0.3:
                op, low, high, common = rng.choice(REPEATS)
                if item.kind == "lit" and len(item.text) > 1:  # a repeat binds the last character only
                    items.append(Node("lit", text=item.text[:-1]))
                    item = Node("lit", text=item.text[-1])
                item = Node("repeat", text=op, children=[item], low=low, high=high, common=common)
            items.append(item)
        return Node("seq", children=items)

    def group(self, depth: int) -> Node:
        rng = self.rng
        kind = rng.choice(["(", "(?:", "(?P<n>", "(?i:", "(?s:", "(?-i:", "(?U:"])
        common = kind in ("(", "(?:", "(?P<n>", "(?i:", "(?s:")
        if kind == "(?P<n>":
            self.names += 1
            kind = f"(?P<g{self.names}>"
        return Node("group", text=kind, children=[self.alternation(depth)], common=common)


def render(node: Node) -> str:
    if node.kind == "lit":
        return "".join("\\" + c if c in META else c for c in node.text)
    if node.kind in ("class", "anchor"):
        return node.text
    if node.kind == "flags":
        return f"(?{node.flag})"
    if node.kind == "seq":
        return "".join(render(child) for child in node.children)
    if node.kind == "alt":
        return "|".join(render(child) for child in node.children)
    if node.kind == "group":
        return node.text + render(node.children[0]) + ")"
    assert node.kind == "repeat"
    return render(node.children[0]) + node.text


def common(node: Node) -> bool:
    """Whether every part of the pattern reads alike in RE2 and Python ``re`` (ASCII)."""
    return node.common and all(common(child) for child in node.children)


_FOLD_POOL = sorted(set(PLAIN + PLAIN.upper() + PLAIN.lower()))
_ORBITS: dict[str, list[str]] = {}


def orbit(char: str) -> list[str]:
    """Characters RE2 matches case-insensitively with ``char`` (among those the fuzzer uses)."""
    found = _ORBITS.get(char)
    if found is None and "\ud800" <= char <= "\udfff":
        return [char]
    if found is None:
        compiled = re2.compile("(?i)" + re2.escape(char), _OPTIONS)
        found = [c for c in _FOLD_POOL if compiled.fullmatch(c)] or [char]
        _ORBITS[char] = found
    return found


def sample(node: Node, rng: random.Random, fold: bool = False) -> str:
    """A text the node (probably) matches; RE2 has the last word."""
    if node.kind == "lit":
        return "".join(rng.choice(orbit(c)) if fold else c for c in node.text)
    if node.kind == "class":
        char = rng.choice(node.chars) if node.text not in QUOTED else node.chars
        return "".join(rng.choice(orbit(c)) for c in char) if fold and node.text not in QUOTED else char
    if node.kind in ("anchor", "flags"):
        return ""
    if node.kind == "seq":
        out = []
        for child in node.children:
            if child.kind == "flags":
                fold = ("i" in child.flag and not child.flag.startswith("-")) or (fold and "-i" not in child.flag)
            out.append(sample(child, rng, fold))
        return "".join(out)
    if node.kind == "alt":
        return sample(rng.choice(node.children), rng, fold)
    if node.kind == "group":
        if node.text == "(?i:":
            fold = True
        elif node.text == "(?-i:":
            fold = False
        return sample(node.children[0], rng, fold)
    return "".join(sample(node.children[0], rng, fold) for _ in range(rng.randint(node.low, node.high)))


def mutate(value: str, rng: random.Random) -> str:
    chars = list(value)
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        where = rng.randint(0, len(chars))
        if roll < 0.3 and chars:
            index = min(where, len(chars) - 1)
            chars[index] = rng.choice([*orbit(chars[index]), chars[index].swapcase()])
        elif roll < 0.5 and chars:
            del chars[min(where, len(chars) - 1)]
        elif roll < 0.6:
            chars.insert(where, rng.choice(["\n", "\ud800", "\x00", "\u0307"]))
        else:
            chars.insert(where, rng.choice(PLAIN))
    return "".join(chars)


def values_for(node: Node, rng: random.Random, count: int = 6) -> list[str]:
    out = []
    for _ in range(count):
        value = "".join(rng.choice(PLAIN) for _ in range(rng.randint(0, 3))) + sample(node, rng) + "".join(
            rng.choice(PLAIN) for _ in range(rng.randint(0, 3)))
        out.append(value)
        out.append(mutate(value, rng))
        if rng.random() < 0.2:
            out.append(value + "\n")
    return out


def _re2_search(compiled: Any, value: str) -> bool:
    try:
        return compiled.search(value) is not None
    except UnicodeEncodeError:
        fixed = re.sub("[\ud800-\udfff]", "\ufffd", value)
        return compiled.search(fixed) is not None  # as the engine reads lone surrogates: U+FFFD


FALLBACK_BUDGET_MS = 50.0


@dataclass
class Tally:
    cases: int = 0
    values: int = 0
    rejected: int = 0
    fallback_cases: int = 0
    pcre_cases: int = 0
    matched: int = 0
    with_literals: int = 0
    found: Findings = field(default_factory=Findings)
    fallback_timeouts: int = 0
    slowest_fallback_ms: float = 0.0
    """Longest single fallback evaluation (budget: FALLBACK_BUDGET_MS; wall clock, machine load counts)."""
    known: dict[str, int] = field(default_factory=dict)
    """Differences documented in docs/semantics.md, counted by kind, not findings."""

    @property
    def findings(self) -> list[dict[str, Any]]:
        """The findings kept in full (every one is counted in ``found``)."""
        return self.found.samples

    def find(self, check: str, pattern: str, value: str, **extra: Any) -> None:
        self.found.add(check, {"check": check, "pattern": pattern, "value": value, **extra})


def check(pattern: str, values: list[str], tally: Tally, ascii_common: bool = False) -> None:
    """Run every check of the module doc on one pattern; findings go to ``tally``."""
    try:
        reference = re2.compile(pattern, _OPTIONS)
    except Exception:  # the grammar can produce what RE2 refuses (e.g. repeats of empty)
        tally.rejected += 1
        return
    tally.cases += 1
    literals = required_literals(pattern, on_re2=True)
    tally.with_literals += literals is not None
    search, on_re2 = compile_regex(pattern, {})
    if not on_re2:
        tally.find("searcher", pattern, "", reason="RE2 accepts the pattern but the engine does not use it")
        return
    retry = dollar_before_newline(pattern)
    python = None
    if ascii_common and pattern.isascii():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "possible nested set": not compared
                python = re.compile(pattern, re.ASCII)
            tally.pcre_cases += 1
        except re.error:
            python = None
    for value in values:
        tally.values += 1
        hit = _re2_search(reference, value)
        tally.matched += hit
        if hit and literals is not None and not any(k in value.lower() for k in literals):
            tally.find("prefilter", pattern, value, literals=literals)
        expected = hit or (retry and value.endswith("\n") and _re2_search(reference, value[:-1]))
        got = search(value)
        if got != expected:
            tally.find("searcher", pattern, value, expected=expected, got=got)
        if python is not None and value.isascii() and got != (python.search(value) is not None):
            if retry and value.endswith("\n"):  # "$" emulated by a retry without the newline
                tally.known["pcre-dollar-newline"] = tally.known.get("pcre-dollar-newline", 0) + 1
            else:
                tally.find("pcre", pattern, value, python=not got, engine=got)
    check_fallback(pattern + "(?!\\x00QQ)", values, tally)


def check_fallback(pattern: str, values: list[str], tally: Tally) -> None:
    """The same pattern with a lookahead, so it runs on the time-boxed ``regex`` fallback."""
    try:
        search, on_re2 = compile_regex(pattern, counters := {}, timeout_ms=FALLBACK_BUDGET_MS)
    except CompileError:
        return  # refused (nested quantifiers, or syntax only RE2 reads)
    if on_re2:
        return
    tally.fallback_cases += 1
    literals = required_literals(pattern)
    compiled = regex.compile(pattern, regex.VERSION0)
    hostile = [value * 40 + "\x00" for value in values[:2] if value]  # long repetitive values
    for value in values + hostile:
        try:
            hit = compiled.search(value, timeout=1.0) is not None
        except TimeoutError:
            continue
        if hit and literals is not None and not any(k in value.lower() for k in literals):
            tally.find("prefilter-fallback", pattern, value, literals=literals)
        before = counters.get("regex_timeouts", 0)
        start = time.perf_counter()
        got = search(value)
        tally.slowest_fallback_ms = max(tally.slowest_fallback_ms, (time.perf_counter() - start) * 1000.0)
        if counters.get("regex_timeouts", 0) > before:
            tally.fallback_timeouts += 1
            if not got:
                tally.find("timeout-not-a-match", pattern, value)
        elif got != hit:
            tally.find("searcher-fallback", pattern, value, expected=hit)


def run_case(rng: random.Random, tally: Tally) -> None:
    generator = Generator(rng)
    node = generator.pattern()
    check(render(node), values_for(node, rng), tally, ascii_common=common(node))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    tally = Tally()

    def step() -> int:
        run_case(rng, tally)
        return 1

    Budget(args.seconds).run(step)
    print(json.dumps({"seed": seed, "seconds": args.seconds, "patterns": tally.cases,
                      "patterns_rejected_by_re2": tally.rejected, "fallback_patterns": tally.fallback_cases,
                      "pcre_compared_patterns": tally.pcre_cases, "values": tally.values,
                      "values_matched": tally.matched, "patterns_with_literals": tally.with_literals,
                      "fallback_budget_ms": FALLBACK_BUDGET_MS, "fallback_timeouts": tally.fallback_timeouts,
                      "slowest_fallback_ms": round(tally.slowest_fallback_ms, 1),
                      "known_differences": tally.known, "finding_kinds": dict(tally.found.by_kind),
                      "findings": tally.findings}, ensure_ascii=True, indent=1))
    return 1 if tally.found else 0


if __name__ == "__main__":
    raise SystemExit(main())
