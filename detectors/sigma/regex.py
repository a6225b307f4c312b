"""Regular expressions for ``|re`` values: RE2 first, guarded Python ``re`` as fallback.

RE2 runs in linear time, so any pattern it accepts is safe on hostile input.
Patterns it rejects (backreferences, lookaround) run on Python ``re``: those with
nested quantifiers are refused at compile time, the rest only see values up to
:data:`GUARD_LIMIT` characters; longer values count as "no match" and bump the
``regex_guard_trips`` counter.
"""

from __future__ import annotations

import re
import re._constants as sre_c
import re._parser as sre_parse
from collections.abc import Callable
from typing import Any

import re2

from detectors.sigma.errors import CompileError

GUARD_LIMIT = 4096
"""Longest value (characters) given to a Python-``re`` fallback pattern."""

MIN_PREFILTER = 2
"""Shortest required literal worth indexing for a regex."""

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 8 << 20
_RE2_OPTIONS.never_capture = True

_REPEATS = (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT)

Searcher = Callable[[str], bool]


def re2_test(compiled: Any, full: bool = False) -> Searcher:
    """A boolean search (``full``: whole-value match) on a compiled RE2 pattern.

    Calls the extension's matcher directly when available: the public wrapper maps
    byte offsets back to characters, work a yes/no answer does not need. RE2 reads
    UTF-8, so lone surrogates are replaced (U+FFFD) first.
    """
    anchors = getattr(re2, "_Anchor", None)
    regexp = getattr(compiled, "_regexp", None)
    if anchors is None or regexp is None:
        method = compiled.fullmatch if full else compiled.search

        def public(text: str) -> bool:
            try:
                return method(text) is not None
            except UnicodeEncodeError:
                return method(text.encode("utf-8", "replace").decode("utf-8")) is not None
        return public
    match = regexp.Match
    anchor = anchors.ANCHOR_BOTH if full else anchors.UNANCHORED

    def direct(text: str) -> bool:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            data = text.encode("utf-8", "replace")
        return bool(match(anchor, data, 0, len(data))[0][0] != -1)
    return direct


def compile_regex(source: str, counters: dict[str, int]) -> tuple[Searcher, bool]:
    """A search function for ``source`` and whether it runs on RE2."""
    try:
        compiled = re2.compile(source, _RE2_OPTIONS)
    except Exception:  # re2 raises its own error type for unsupported syntax
        compiled = None
    if compiled is not None:
        test = re2_test(compiled)
        if dollar_before_newline(source):
            # PCRE's (and Python's) "$" also matches before a final newline; RE2's does not.
            return (lambda text: test(text) or (text[-1:] == "\n" and test(text[:-1]))), True
        return test, True
    try:
        parsed = sre_parse.parse(source)
    except re.error as exc:
        raise CompileError(f"invalid regular expression {source!r}: {exc}") from exc
    if _nested_repeat(parsed, False):
        raise CompileError(
            f"regular expression {source!r} needs backtracking (not RE2-compatible) and has nested "
            "quantifiers: catastrophic backtracking risk"
        )
    py = re.compile(source)
    py_search = py.search

    def guarded(text: str) -> bool:
        if len(text) > GUARD_LIMIT:
            counters["regex_guard_trips"] = counters.get("regex_guard_trips", 0) + 1
            return False
        return py_search(text) is not None

    return guarded, False


def dollar_before_newline(source: str) -> bool:
    """Whether the RE2 search also tries the value without its final newline (PCRE's ``$``)."""
    return "$" in source and not _multiline(source)


def _multiline(source: str) -> bool:
    try:
        return bool(sre_parse.parse(source).state.flags & re.MULTILINE)
    except (re.error, OverflowError, RecursionError):
        return "(?m" in source


def _nested_repeat(seq: Any, inside: bool) -> bool:
    for op, av in seq:
        if op in _REPEATS:
            unbounded = av[1] == sre_c.MAXREPEAT or av[1] > 1
            if unbounded and inside:
                return True
            if _nested_repeat(av[2], inside or unbounded):
                return True
        elif op is sre_c.SUBPATTERN:
            if _nested_repeat(av[3], inside):
                return True
        elif op is sre_c.BRANCH:
            if any(_nested_repeat(branch, inside) for branch in av[1]):
                return True
        elif op in (sre_c.ASSERT, sre_c.ASSERT_NOT) and _nested_repeat(av[1], inside):
            return True
    return False


def required_literals(source: str) -> list[str] | None:
    """Lower-cased literals one of which every match must contain, or None when unknown.

    Used as an Aho-Corasick prefilter: the regex only runs on values containing one.
    """
    try:
        parsed = sre_parse.parse(source)
    except (re.error, OverflowError, RecursionError):
        return None
    found = _required(parsed)
    if not found or min(len(k) for k in found) < MIN_PREFILTER:
        return None
    return sorted({k.lower() for k in found})


def _better(a: list[str] | None, b: list[str] | None) -> list[str] | None:
    if b is None or not b:
        return a
    if a is None or min(map(len, b)) > min(map(len, a)):
        return b
    return a


def _required(seq: Any) -> list[str] | None:
    best: list[str] | None = None
    run: list[str] = []
    for op, av in seq:
        if op is sre_c.LITERAL:
            run.append(chr(av))
            continue
        if run:
            best = _better(best, ["".join(run)])
            run = []
        cand: list[str] | None = None
        if op is sre_c.SUBPATTERN:
            cand = _required(av[3])
        elif op is sre_c.BRANCH:
            alts = [_required(branch) for branch in av[1]]
            if all(alts):
                cand = [k for alt in alts if alt for k in alt]
        elif op in _REPEATS and av[0] >= 1:
            cand = _required(av[2])
        best = _better(best, cand)
    if run:
        best = _better(best, ["".join(run)])
    return best
