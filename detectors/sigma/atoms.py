"""Atoms: the smallest tests of a rule (one field, one value), shared by every rule using them.

An atom either has index keys (a literal the Aho-Corasick pass or the exact
dict can find, verified by :meth:`Atom.check`) or is evaluated directly with
:meth:`Atom.test` on the flattened event. Both paths must agree: ``test`` is
also what the naive evaluator uses, so tests comparing the two catch index bugs.
"""

from __future__ import annotations

import ipaddress
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from enum import IntEnum
from functools import lru_cache
from typing import Any

from sigma.types import TimestampPart

from detectors.event import Flat, event_strings
from detectors.sigma.screen_abi import CheckKind
from detectors.sigma.text import Pattern, as_text

SEPARATOR = "\uffff"
"""Joins the event's strings for the keyword scan; keyword literals containing it are not indexed."""

MIN_GLOB_KEY = 2
"""Wildcard patterns whose longest literal piece is shorter are tested directly, not indexed."""

MISS: Any = object()
"""Returned by :meth:`Atom.test` when the atom is false (a matched value may be None)."""


class Mode(IntEnum):
    """How an Aho-Corasick hit of an atom's key is confirmed."""

    ANYWHERE = 0
    PREFIX = 1
    SUFFIX = 2
    VERIFY = 3
    EXACT = 4
    EXACT_VERIFY = 5
    EVERY = 6
    """No literal to look for: ``check`` runs on every value of the field (the key is empty).
    Such field atoms still go through the index, so their result is cached per value."""


class View:
    """The event as atoms see it: flattened fields and (lazily) all its strings."""

    __slots__ = ("_folded", "_offsets", "_strings", "_texts", "flat")

    def __init__(self, flat: Flat) -> None:
        self.flat = flat
        self._strings: list[str] | None = None
        self._folded: str | None = None
        self._offsets: tuple[list[int], list[int]] | None = None
        self._texts: dict[str | None, list[tuple[Any, str, str]]] | None = None

    def texts(self, field: str | None) -> list[tuple[Any, str, str]]:
        """``(value, text, lower-cased text)`` of each value of ``field`` (None: every string of
        the event) that has a text, in order; made once per field and event, as the atoms of
        several rules (matched fields, undecided rules) test the same values."""
        cache = self._texts
        if cache is None:
            cache = self._texts = {}
        found = cache.get(field)
        if found is None:
            if field is None:  # every string of the event: each is its own text
                found = [(text, text, text.lower()) for text in self.strings()]
            else:
                found = [(value, text, text.lower()) for value in self.flat.get(field) or ()
                         if (text := value if type(value) is str else as_text(value)) is not None]
            cache[field] = found
        return found

    def strings(self) -> list[str]:
        if self._strings is None:
            self._strings = event_strings(self.flat)
        return self._strings

    def folded(self) -> str:
        """All strings lower-cased and joined by :data:`SEPARATOR` (the keyword scan's text)."""
        if self._folded is None:
            strings = self.strings()
            joined = SEPARATOR.join(strings)
            folded = joined.lower()
            if len(folded) != len(joined):  # some lower() changed a length: fold one by one
                parts = [text.lower() for text in strings]
                folded = SEPARATOR.join(parts)
                self._offsets = self._starts([len(part) for part in parts])
            self._folded = folded
        return self._folded

    def offsets(self) -> tuple[list[int], list[int]]:
        """Length and start, in :meth:`folded`, of each string (computed on the first keyword hit)."""
        if self._offsets is None:
            self.folded()
        if self._offsets is None:
            self._offsets = self._starts([len(text) for text in self.strings()])
        return self._offsets

    @staticmethod
    def _starts(lengths: list[int]) -> tuple[list[int], list[int]]:
        starts = [0]
        for length in lengths[:-1]:
            starts.append(starts[-1] + length + 1)
        return lengths, starts


class Atom:
    """Base atom. ``field`` is the lower-cased path (None: keyword search over all strings)."""

    __slots__ = ("display", "field", "keys")

    def __init__(self, field: str | None, display: str) -> None:
        self.field = field
        self.display = display
        self.keys: list[tuple[str, Mode]] = []

    @property
    def indexed(self) -> bool:
        return bool(self.keys)

    def _values(self, view: View) -> list[Any]:
        if self.field is None:
            return view.strings()
        return view.flat.get(self.field) or []

    def check(self, text: str, folded: str) -> bool:
        """Verify one value (original text and its lower-cased form)."""
        raise NotImplementedError

    def test(self, view: View) -> Any:
        """The first event value satisfying the atom, or :data:`MISS`."""
        check = self.check
        for value, text, folded in view.texts(self.field):
            if check(text, folded):
                return value
        return MISS


_TEXT_MODES = {CheckKind.PREFIX: Mode.PREFIX, CheckKind.SUFFIX: Mode.SUFFIX}
_EXACT, _CONTAINS, _PREFIX, _SUFFIX, _ANY = (CheckKind.EXACT, CheckKind.CONTAINS, CheckKind.PREFIX, CheckKind.SUFFIX,
                                             CheckKind.ANY)


class TextAtom(Atom):
    """String, number and boolean equality with wildcards; case-insensitive unless ``cased``."""

    __slots__ = ("cased", "glob", "kind", "literal", "pattern")

    def __init__(self, field: str | None, display: str, pattern: Pattern, cased: bool,
                 glob: Callable[[str], bool] | None) -> None:
        # Atom.__init__ inlined: a restored SigmaHQ ruleset builds ~30,000 of these at start
        self.field = field
        self.display = display
        self.pattern = pattern
        kind = self.kind = pattern.kind
        literal = self.literal = pattern.literal
        self.cased = cased
        self.glob = glob
        key = literal.lower() if cased else literal
        if field is None and SEPARATOR in key:
            self.keys = []
        elif kind is CheckKind.EXACT:
            self.keys = [(key, Mode.EXACT_VERIFY if cased else Mode.EXACT)]
        elif kind is CheckKind.ANY or (kind is CheckKind.GLOB and len(key) < MIN_GLOB_KEY):
            self.keys = [("", Mode.EVERY)] if field is not None else []
        elif cased or kind is CheckKind.GLOB:
            self.keys = [(key, Mode.VERIFY)]
        else:
            self.keys = [(key, _TEXT_MODES.get(kind, Mode.ANYWHERE))]

    def test(self, view: View) -> Any:
        """:meth:`Atom.test` with the common kinds' checks inlined (the matched fields of every match
        the native screen decides are read with it)."""
        texts = view.texts(self.field)
        if not texts:
            return MISS
        kind = self.kind
        literal = self.literal
        cased = self.cased
        if kind is _CONTAINS:
            for value, text, folded in texts:
                if literal in (text if cased else folded):
                    return value
            return MISS
        if kind is _EXACT:
            for value, text, folded in texts:
                if (text if cased else folded) == literal:
                    return value
            return MISS
        check = self.check
        for value, text, folded in texts:
            if check(text, folded):
                return value
        return MISS

    def check(self, text: str, folded: str) -> bool:
        value = text if self.cased else folded
        kind = self.kind
        if kind is _EXACT:  # module constants: an enum member read through its class costs more
            return value == self.literal
        if kind is _CONTAINS:
            return self.literal in value
        if kind is _PREFIX:
            return value.startswith(self.literal)
        if kind is _SUFFIX:
            return value.endswith(self.literal)
        if kind is _ANY:
            return True
        assert self.glob is not None
        return self.glob(value)


class RegexAtom(Atom):
    """``|re``: unanchored search on the value's text; prefiltered by a required literal."""

    __slots__ = ("re2_source", "search")

    def __init__(self, field: str | None, display: str, search: Callable[[str], bool],
                 literals: list[str] | None, re2_source: str | None = None) -> None:
        super().__init__(field, display)
        self.search = search
        self.re2_source = re2_source
        """The pattern when it runs on RE2 (the native screen may then run it too), else None."""
        for literal in literals or ():
            self.keys.append((literal, Mode.VERIFY))

    def check(self, text: str, folded: str) -> bool:
        return self.search(text)


class NullAtom(Atom):
    """``field: null``: the field is absent, or every value of it is null."""

    __slots__ = ()

    def test(self, view: View) -> Any:
        values = view.flat.get(self.field or "")
        if not values or all(v is None for v in values):
            return None
        return MISS


class ExistsAtom(Atom):
    """``|exists``: presence of the field, whatever its value (null and empty included)."""

    __slots__ = ("want",)

    def __init__(self, field: str, display: str, want: bool) -> None:
        super().__init__(field, display)
        self.want = want

    def test(self, view: View) -> Any:
        present = (self.field or "") in view.flat
        if present != self.want:
            return MISS
        return view.flat[self.field or ""][0] if present and view.flat[self.field or ""] else self.want


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge,
    "eq": operator.eq, "neq": operator.ne,
}


def as_number(value: Any) -> int | float | None:
    """Numeric view of an event value: numbers, and strings holding a decimal number."""
    kind = type(value)
    if kind is int or kind is float:
        return value  # type: ignore[no-any-return]
    if kind is str and len(value) < 64:
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return None
            return number if number == number else None  # NaN never compares
    return None


_PARTS: dict[TimestampPart, Callable[[datetime], int]] = {
    TimestampPart.MINUTE: lambda d: d.minute,
    TimestampPart.HOUR: lambda d: d.hour,
    TimestampPart.DAY: lambda d: d.day,
    TimestampPart.WEEK: lambda d: d.isocalendar().week,
    TimestampPart.MONTH: lambda d: d.month,
    TimestampPart.YEAR: lambda d: d.year,
}


def timestamp_of(value: Any) -> datetime | None:
    """ISO 8601 text (wall-clock fields kept as written) or epoch seconds/milliseconds (UTC)."""
    kind = type(value)
    try:
        if kind is str and 8 <= len(value) <= 64:
            text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
            return datetime.fromisoformat(text)
        if kind is int or kind is float:
            seconds = value / 1000 if abs(value) >= 100_000_000_000 else value
            return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


class CompareAtom(Atom):
    """``|lt`` ``|lte`` ``|gt`` ``|gte`` and the time-part modifiers (``|hour`` ...), optionally chained."""

    __slots__ = ("number", "op", "part")

    def __init__(self, field: str, display: str, op: str, number: int | float,
                 part: TimestampPart | None) -> None:
        super().__init__(field, display)
        self.op = _OPS[op]
        self.number = number
        self.part = part

    def test(self, view: View) -> Any:
        for value in self._values(view):
            if self.part is not None:
                stamp = timestamp_of(value)
                got: int | float | None = None if stamp is None else _PARTS[self.part](stamp)
            else:
                got = as_number(value)
            if got is not None and self.op(got, self.number):
                return value
        return MISS


@lru_cache(maxsize=8192)
def parse_ip(text: str) -> tuple[int, int] | None:
    """(IP version, address as integer) of an address text, None if it is not one (cached: many
    ``cidr`` atoms test the same address)."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return address.version, int(address)


class CidrAtom(Atom):
    """``|cidr``: an IPv4 or IPv6 address value inside the network."""

    __slots__ = ("mask", "prefix", "version")

    def __init__(self, field: str, display: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        super().__init__(field, display)
        self.version = network.version
        self.mask = int(network.netmask)
        self.prefix = int(network.network_address)

    def test(self, view: View) -> Any:
        for value in self._values(view):
            if type(value) is not str or len(value) > 64:
                continue
            parsed = parse_ip(value)
            if parsed is not None and parsed[0] == self.version and parsed[1] & self.mask == self.prefix:
                return value
        return MISS


class FieldRefAtom(Atom):
    """``|fieldref``: the value equals (or starts/ends with) another field's value, case-insensitively."""

    __slots__ = ("ends", "other", "starts")

    def __init__(self, field: str, display: str, other: str, starts: bool, ends: bool) -> None:
        super().__init__(field, display)
        self.other = other
        self.starts = starts
        self.ends = ends

    def test(self, view: View) -> Any:
        others = [t.lower() for t in map(as_text, view.flat.get(self.other) or []) if t is not None]
        if not others:
            return MISS
        for value in self._values(view):
            text = as_text(value)
            if text is None:
                continue
            folded = text.lower()
            for ref in others:
                if self.starts and self.ends:
                    ok = ref in folded
                elif self.starts:
                    ok = folded.startswith(ref)
                elif self.ends:
                    ok = folded.endswith(ref)
                else:
                    ok = folded == ref
                if ok:
                    return value
        return MISS
