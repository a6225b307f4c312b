"""Regular expressions for ``|re`` values: RE2 first, time-boxed ``regex`` as fallback.

RE2 runs in linear time, so any pattern it accepts is safe on hostile input.
Patterns it rejects (backreferences, lookaround) run on the ``regex`` module
(``re`` syntax, version 0) with a hard per-evaluation time budget: an evaluation
that runs out of time counts as a *match* (a hostile value must not be a way to
escape detection), bumps ``counters["regex_timeouts"]`` and is logged (first
time per pattern, then at every power of two). The ``regex`` module checks its clock
periodically: measured wall time of a time-out is up to about twice the budget. Fallback patterns with nested
unbounded quantifiers are still refused at compile time: they would time out on
ordinary values and turn the rule into noise.

:func:`required_literals` derives the Aho-Corasick prefilter with its own
conservative parser of the syntax RE2 and ``regex`` read alike; anything else
gives no literal (the regex then runs on every value), never a wrong one.
"""

from __future__ import annotations

import logging
import re
import re._constants as sre_c
import re._parser as sre_parse
import string
import warnings
from collections.abc import Callable
from typing import Any

import re2
import regex

from detectors.errors import DetectorError
from detectors.sigma.errors import CompileError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 50.0
"""Default time budget of one fallback-regex evaluation (setting ``rules.regex_timeout_ms``)."""

MIN_PREFILTER = 2
"""Shortest required literal worth indexing for a regex."""

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 8 << 20
_RE2_OPTIONS.never_capture = True

_REPEATS = (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT)

Searcher = Callable[[str], bool]
_SURROGATE = re.compile("[\ud800-\udfff]")


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
                return method(_utf8(text).decode("utf-8")) is not None
        return public
    match = regexp.Match
    anchor = anchors.ANCHOR_BOTH if full else anchors.UNANCHORED

    def direct(text: str) -> bool:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            data = _utf8(text)
        return bool(match(anchor, data, 0, len(data))[0][0] != -1)
    return direct


def _utf8(text: str) -> bytes:
    """UTF-8 of ``text`` with each lone surrogate as U+FFFD (``encode``'s "replace" gives "?",
    which a pattern's literal "?" would match and the prefilter would not expect)."""
    return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def compile_regex(source: str, counters: dict[str, int],
                  timeout_ms: float = DEFAULT_TIMEOUT_MS) -> tuple[Searcher, bool]:
    """A search function for ``source`` and whether it runs on RE2.

    ``timeout_ms`` bounds each evaluation of a pattern RE2 rejects; see the module doc.
    """
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
    if not timeout_ms > 0:
        raise CompileError(f"regex time budget must be positive, not {timeout_ms!r} ms")
    try:
        if _nested_repeat(_sre_parse(source), False):
            raise CompileError(
                f"regular expression {source!r} needs backtracking (not RE2-compatible) and has nested "
                "quantifiers: catastrophic backtracking risk"
            )
        fallback = regex.compile(source, regex.VERSION0)
    except (re.error, regex.error, OverflowError, RecursionError) as exc:
        raise CompileError(f"invalid regular expression {source!r}: {exc}") from exc
    return _timed(source, fallback, counters, timeout_ms / 1000.0), False


def _timed(source: str, compiled: Any, counters: dict[str, int], budget: float) -> Searcher:
    """``compiled.search`` cut off after ``budget`` seconds; running out of time is a match."""
    search = compiled.search
    mine = [0]  # this pattern's time-outs (the ruleset's counter sums every pattern's)

    def timed(text: str) -> bool:
        try:
            return search(text, timeout=budget, concurrent=True) is not None
        except TimeoutError:
            counters["regex_timeouts"] = counters.get("regex_timeouts", 0) + 1
            mine[0] += 1
            count = mine[0]
            if count & (count - 1) == 0:  # the 1st, 2nd, 4th, ... time per pattern: bounded, clock-free
                log.warning("regex evaluation ran out of its time budget; counted as a match",
                            extra={"pattern": source, "value_length": len(text),
                                   "budget_ms": budget * 1000.0, "pattern_timeouts": count})
            return True

    return timed


def dollar_before_newline(source: str) -> bool:
    """Whether the RE2 search also tries the value without its final newline (PCRE's ``$``)."""
    return "$" in source and not _multiline(source)


def _multiline(source: str) -> bool:
    try:
        return bool(_sre_parse(source).state.flags & re.MULTILINE)
    except (re.error, OverflowError, RecursionError):
        return "(?m" in source


def _sre_parse(source: str) -> Any:
    """Python's parse of ``source``, without its warnings about syntax RE2 reads otherwise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return sre_parse.parse(source)


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


def required_literals(source: str, on_re2: bool = False) -> list[str] | None:
    """Lower-cased literals one of which every match must contain, or None when unknown.

    Used as an Aho-Corasick prefilter: the regex only runs on values whose lower-cased
    text contains one. Sound for RE2 and for the ``regex`` fallback: syntax the two
    could read differently (or that this parser does not know) gives None. ``on_re2``:
    the pattern runs on RE2, whose case folding is narrower (see :data:`_FOLD_UNSAFE`).
    """
    try:
        found = _Literals(source, _FOLD_UNSAFE_RE2 if on_re2 else _FOLD_UNSAFE).parse()
    except (_Unknown, RecursionError):
        return None
    if not found or min(len(k) for k in found) < MIN_PREFILTER:
        return None
    return sorted({k.lower() for k in found})


class _Unknown(DetectorError):
    """Syntax the literal parser does not read with certainty."""


_FOLD_UNSAFE = frozenset("iIsS")
"""ASCII letters some engine matches case-insensitively with a character whose ``lower()``
differs (U+0130, U+0131 for ``i`` in ``re``/``regex``, U+017F for ``s`` everywhere); other ASCII
characters fold alike everywhere (found by trying every code point)."""
_FOLD_UNSAFE_RE2 = frozenset("sS")
"""The same for RE2 (and Rust's ``regex``, which the screen runs): simple case folding only."""
_CONTROL = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
"""Escapes every engine reads as the same control character."""
_CASE_UNSAFE = frozenset("\u03a3\ufffd")
"""``Σ`` lower-cases by context (final sigma); U+FFFD stands in for lone surrogates in RE2."""
_FLAGS = frozenset("imsUau-")
_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_BRACED = re.compile(r"\{[\w^=:\-,. &]*\}")
_POSIX = re.compile(r"\[:\^?[a-z]+:\]")
_HEX_ESCAPES = frozenset("xuUo")


def _better(a: list[str] | None, b: list[str] | None) -> list[str] | None:
    if not b:
        return a
    if a is None or min(map(len, b)) > min(map(len, a)):
        return b
    return a


class _Literals:
    """Recursive descent over a regex source, computing required literal sets.

    An element the parser cannot name a literal for is *opaque* (it ends the current
    run of literal characters); treating too much as opaque only loses prefilter keys,
    so every doubtful construct is either opaque or raises :class:`_Unknown`.
    """

    def __init__(self, source: str, fold_unsafe: frozenset[str]) -> None:
        self.source = source
        self.fold_unsafe = fold_unsafe
        self.pos = 0
        self.fold_all = False
        self.global_fold = False

    def parse(self) -> list[str] | None:
        found = self._whole()
        if self.global_fold and not self.fold_all:
            # an unscoped "(?i)" somewhere: read the whole pattern as case-insensitive
            self.fold_all, self.pos = True, 0
            found = self._whole()
        return found

    def _whole(self) -> list[str] | None:
        found = self._alternation(self.fold_all)
        if self.pos != len(self.source):
            raise _Unknown
        return found

    def _peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.source[index] if index < len(self.source) else ""

    def _alternation(self, fold: bool) -> list[str] | None:
        branches = [self._sequence(fold)]
        while self._peek() == "|":
            self.pos += 1
            branches.append(self._sequence(fold))
        if len(branches) == 1:
            return branches[0]
        if not all(branches):
            return None
        return [k for branch in branches if branch for k in branch]

    def _sequence(self, fold: bool) -> list[str] | None:
        best: list[str] | None = None
        run: list[str] = []
        while self._peek() not in ("", "|", ")"):
            kind, value = self._atom(fold)
            if kind == "flags":
                fold = fold or bool(value)
                continue
            least = self._quantifier()
            if kind == "char" and least is None and self._safe(value, fold):
                run.append(value)
                continue
            if run:
                best = _better(best, ["".join(run)])
                run = []
            if least is not None and least == 0:
                continue
            if kind == "char" and self._safe(value, fold):
                best = _better(best, [value])
            elif kind == "group":
                best = _better(best, value)
        if run:
            best = _better(best, ["".join(run)])
        return best

    def _quantifier(self) -> int | None:
        """The minimum count of a quantifier at the cursor (consumed), or None."""
        char = self._peek()
        if char in ("*", "?"):
            least = 0
            self.pos += 1
        elif char == "+":
            least = 1
            self.pos += 1
        elif char == "{":
            repeat = _REPEAT.match(self.source, self.pos)
            if repeat is None:
                raise _Unknown  # RE2 reads it as text, Python's engines may read a repeat
            least = int(repeat.group(1))
            self.pos = repeat.end()
        else:
            return None
        if self._peek() in ("?", "+"):
            self.pos += 1  # lazy or possessive
        if self._peek() in ("*", "+", "?", "{"):
            raise _Unknown
        return least

    def _atom(self, fold: bool) -> tuple[str, Any]:
        """("char", c), ("group", literals), ("opaque", None) or ("flags", turns case folding on)."""
        char = self._peek()
        if char == "(":
            return self._group(fold)
        if char == "[":
            self._class()
            return "opaque", None
        if char == "\\":
            return self._escape()
        if char in ("*", "+", "?", "{"):
            raise _Unknown
        self.pos += 1
        if char in (".", "^", "$"):
            return "opaque", None
        return "char", char

    def _group(self, fold: bool) -> tuple[str, Any]:
        self.pos += 1
        kind = "group"
        if self._peek() == "?":
            self.pos += 1
            head = self._peek()
            if head == ":":
                self.pos += 1
            elif (head == "P" and self._peek(1) == "<") or (head == "<" and self._peek(1) not in ("=", "!")):
                end = self.source.find(">", self.pos)
                if end < 0:
                    raise _Unknown
                self.pos = end + 1
            elif head in ("=", "!") or (head == "<" and self._peek(1) in ("=", "!")):
                self.pos += 1 if head != "<" else 2
                kind = "opaque"
            elif (head == "P" and self._peek(1) == "=") or head == "#":
                return self._skip_to(")")  # a named backreference, or a comment
            else:
                end = self.pos
                while end < len(self.source) and self.source[end] in _FLAGS:
                    end += 1
                flags = self.source[self.pos:end]
                closer = self.source[end:end + 1]
                if not flags or closer not in (")", ":"):
                    raise _Unknown
                folds = "i" in flags.split("-")[0]
                self.pos = end + 1
                if closer == ")":
                    self.global_fold = self.global_fold or folds
                    return "flags", folds
                fold = fold or folds
        inner = self._alternation(fold)
        if self._peek() != ")":
            raise _Unknown
        self.pos += 1
        return (kind, inner) if kind == "group" else ("opaque", None)

    def _skip_to(self, closer: str) -> tuple[str, Any]:
        end = self.source.find(closer, self.pos)
        if end < 0:
            raise _Unknown
        self.pos = end + len(closer)
        return "opaque", None

    def _escape(self) -> tuple[str, Any]:
        char = self._peek(1)
        self.pos += 2
        if not char or not char.isascii() or char.isspace():
            raise _Unknown
        if char in string.punctuation:
            return "char", char
        if char in _CONTROL:
            return "char", _CONTROL[char]
        if char == "Q":
            return self._skip_to("\\E") if "\\E" in self.source[self.pos:] else self._skip_end()
        if char.isdigit():
            while self._peek().isdigit():
                self.pos += 1
        elif char in "kgLc" and self._peek() not in ("<", "{"):
            raise _Unknown  # a name or control character in a form this parser does not read
        elif char in _HEX_ESCAPES or char in "pPNkgL":
            self._escape_argument(hex_digits=char in _HEX_ESCAPES)
        return "opaque", None

    def _skip_end(self) -> tuple[str, Any]:
        self.pos = len(self.source)
        return "opaque", None

    def _escape_argument(self, hex_digits: bool) -> None:
        """Consume ``{...}``, ``<...>``, a run of hex digits or one letter after an escape."""
        char = self._peek()
        if char == "{":
            braced = _BRACED.match(self.source, self.pos)
            if braced is None:
                raise _Unknown
            self.pos = braced.end()
        elif char == "<":
            self._skip_to(">")
        elif hex_digits:
            while self._peek() in string.hexdigits and self._peek():
                self.pos += 1
        elif char.isalpha() and char.isascii():
            self.pos += 1

    def _class(self) -> None:
        """Skip a bracket expression; nested ``[`` other than a POSIX class is refused
        (a character to RE2 and Python, a nested set elsewhere)."""
        source = self.source
        index = self.pos + 1
        if source[index:index + 1] == "^":
            index += 1
        if source[index:index + 1] == "]":
            index += 1
        while index < len(source):
            char = source[index]
            if char == "\\":
                following = source[index + 1:index + 2]
                if following == "Q" or not following:
                    raise _Unknown
                index += 2
                if following in "xuUopPN" and source[index:index + 1] == "{":
                    braced = _BRACED.match(source, index)
                    if braced is None:
                        raise _Unknown
                    index = braced.end()
                continue
            if char == "[":
                posix = _POSIX.match(source, index)
                if posix is None:
                    raise _Unknown
                index = posix.end()
                continue
            if char == "]":
                self.pos = index + 1
                return
            index += 1
        raise _Unknown

    def _safe(self, char: str, fold: bool) -> bool:
        """Whether ``char`` (matched case-sensitively, or not when ``fold``) can be a prefilter
        character: every text it matches lower-cases to ``char.lower()``."""
        if fold:
            return char.isascii() and char not in self.fold_unsafe
        return char not in _CASE_UNSAFE and not "\ud800" <= char <= "\udfff"
