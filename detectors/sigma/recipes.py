"""Atoms from their recipes: what the compiler interns and the compiled-ruleset cache rebuilds.

Kept apart from :mod:`detectors.sigma.detection` (which reads pySigma's rule objects) so that
restoring a cached ruleset does not import pySigma's parser at all.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import re2

from detectors.sigma.atoms import (
    Atom,
    CidrAtom,
    CompareAtom,
    ExistsAtom,
    FieldRefAtom,
    NullAtom,
    RegexAtom,
    TextAtom,
)
from detectors.sigma.errors import CompileError
from detectors.sigma.regex import DEFAULT_TIMEOUT_MS, compile_regex, re2_test, required_literals
from detectors.sigma.screen_abi import CheckKind

_GLOB_OPTIONS = re2.Options()
_GLOB_OPTIONS.log_errors = False
_GLOB_OPTIONS.never_capture = True


Recipe = tuple[tuple[Any, ...], str]
"""How an atom is built: its key (kind, field, test) and the field as the rule spelled it. Plain
data (strings, numbers, enums, :class:`Pattern`): the compiled-ruleset cache stores recipes, and
:func:`make_atom` builds the same atom from one as the compiler does."""


def make_atom(key: tuple[Any, ...], display: str, counters: dict[str, int],
              regex_timeout_ms: float = DEFAULT_TIMEOUT_MS) -> Atom:
    """The atom of a recipe (see :data:`Recipe`); raises :class:`CompileError` for a bad regex."""
    kind, field = key[0], key[1]
    if kind == "text":
        pattern, cased = key[2], key[3]
        glob = _glob(pattern.regex) if pattern.kind is CheckKind.GLOB else None
        return TextAtom(field, display, pattern, cased, glob)
    if kind == "re":
        source = key[2]
        search, on_re2 = compile_regex(source, counters, regex_timeout_ms)
        return RegexAtom(field, display, search, required_literals(source, on_re2), source if on_re2 else None)
    if kind == "cmp":
        return CompareAtom(field, display, key[2], key[3], key[4])
    if kind == "null":
        return NullAtom(field, display)
    if kind == "exists":
        return ExistsAtom(field, display, key[2])
    if kind == "cidr":
        return CidrAtom(field, display, ipaddress.ip_network(key[2]))
    if kind == "ref":
        return FieldRefAtom(field, display, key[2], key[3], key[4])
    raise CompileError(f"unknown atom kind {kind!r}")


def _glob(source: str) -> Any:
    return re2_test(re2.compile(source, _GLOB_OPTIONS), full=True)
