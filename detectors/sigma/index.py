"""Shared indexes: per field path one exact-value dict and one Aho-Corasick automaton.

A single pass of a field value through its automaton finds every rule atom
whose literal occurs in it; the hit's position confirms prefix/suffix atoms
without touching the string again, other atoms are verified by ``check``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import ahocorasick

from detectors.event import Flat
from detectors.sigma.atoms import Atom, Mode, View
from detectors.sigma.compiled import CompiledRule, Context
from detectors.sigma.text import as_text

_EXACT_MODES = (Mode.EXACT, Mode.EXACT_VERIFY)

SMALL = 16
"""Up to this many keys, plain substring searches beat an Aho-Corasick pass (no per-call setup)."""


class _SmallMatcher:
    """Stands in for an automaton over a few keys, for a scan that needs per key only the first
    occurrence plus, for prefix/suffix entries, the occurrences at the start and at the end
    (``(end, value)`` pairs by increasing end, as ``Automaton.iter`` yields them)."""

    __slots__ = ("items",)

    def __init__(self, items: tuple[tuple[str, Entry], ...]) -> None:
        self.items = items

    def iter(self, text: str) -> list[tuple[int, Entry]]:
        found: list[tuple[int, Entry]] = []
        last = len(text) - 1
        for key, value in self.items:
            position = text.find(key)
            if position < 0:
                continue
            end = position + value[0]
            found.append((end, value))
            if value[2] and position != 0 and text.startswith(key):
                found.append((value[0], value))
            if value[3] and end != last and text.endswith(key):
                found.append((last, value))
        if len(found) > 1:
            found.sort(key=_end)
        return found


class _LazyAutomaton:
    """Stands in for the Aho-Corasick automaton of a restored field index until its first use, then
    builds it and puts it in the index's place: a restored route holds hundreds of fields and a
    short run (``pipesentry eval`` of a few events) meets few of them, while building them all was
    half of restoring the route. Two threads may both build it: each gets the same automaton."""

    __slots__ = ("_built", "_keys", "_owner")

    def __init__(self, owner: FieldIndex, keys: tuple[tuple[str, Entry], ...]) -> None:
        self._owner = owner
        self._keys = keys
        self._built: Any = None

    def built(self) -> Any:
        """The automaton (built on the first call); the owning index holds it from then on."""
        automaton = self._built
        if automaton is None:
            automaton = ahocorasick.Automaton()
            add = automaton.add_word
            for key, value in self._keys:
                add(key, value)
            automaton.make_automaton()
            self._built = self._owner.automaton = automaton
        return automaton

    def iter(self, text: str) -> Any:
        return self.built().iter(text)

    def items(self) -> Any:
        return self.built().items()


def _end(item: tuple[int, Any]) -> int:
    return item[0]


def _first(item: tuple[str, Any]) -> str:
    return item[0]


CACHE_SIZE = 4096
"""Field values whose scan result a route keeps (a full cache is emptied: hot values come back at once)."""

CACHED_TEXT = 160
"""Longer values are not cached (they seldom repeat, and the cache's memory stays small)."""


CacheEntry = tuple[tuple[int, ...], tuple[int, ...]]
"""Atoms a field value satisfies, and the positions of the rules they trigger."""

_NOTHING: CacheEntry = ((), ())


Entry = tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]
"""Automaton value of a key: (key length - 1, anywhere, prefix, suffix, verify atom ids)."""


def _split(entries: list[tuple[int, Mode]], mode: Mode) -> tuple[int, ...]:
    return tuple(dict.fromkeys(aid for aid, m in entries if m is mode))


class FieldIndex:
    """Index of the atoms testing one field (or, for keyword atoms, every string)."""

    __slots__ = ("_pending", "automaton", "cache", "every", "exact", "short", "short_keys")

    def __init__(self) -> None:
        self.cache: dict[str, CacheEntry] = {}
        """Value text -> what it satisfies (filled and bounded by the owning :class:`RuleIndex`)."""
        self.exact: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self.every: tuple[int, ...] = ()
        """Atoms without a literal (e.g. a regex with no required text), checked on every value."""
        self._pending: dict[str, list[tuple[int, Mode]]] = {}
        self.automaton: Any = None
        self.short: dict[str, Entry] = {}
        self.short_keys: frozenset[str] = frozenset()
        """The keys of ``short``: ``short_keys.intersection(text)`` walks the text, not every key."""
        """Single-character keys, found by intersecting with the value's character set (in the
        automaton they would report nearly every position of every value)."""

    def add(self, aid: int, key: str, mode: Mode) -> None:
        if mode is Mode.EVERY:
            if aid not in self.every:
                self.every = (*self.every, aid)
        elif mode in _EXACT_MODES:
            plain, verify = self.exact.get(key, ((), ()))
            if mode is Mode.EXACT_VERIFY:
                self.exact[key] = (plain, (*verify, aid))
            else:
                self.exact[key] = ((*plain, aid), verify)
        else:
            self._pending.setdefault(key, []).append((aid, mode))

    def finish(self) -> None:
        if not self._pending:
            return
        automaton = ahocorasick.Automaton()
        short: dict[str, Entry] = {}
        for key, entries in sorted(self._pending.items(), key=_first):  # sorted: the cache rebuilds it alike
            value: Entry = (len(key) - 1, _split(entries, Mode.ANYWHERE), _split(entries, Mode.PREFIX),
                            _split(entries, Mode.SUFFIX), _split(entries, Mode.VERIFY))
            if len(key) == 1:
                short[key] = value
            else:
                automaton.add_word(key, value)
        self.short = short
        self.short_keys = frozenset(short)
        items: tuple[tuple[str, Entry], ...] = tuple(automaton.items())
        if 0 < len(items) <= SMALL and self._small_ok(items):
            self.automaton = _SmallMatcher(items)
        elif items:
            automaton.make_automaton()
            self.automaton = automaton
        self._pending = {}

    def _small_ok(self, items: tuple[tuple[str, Entry], ...]) -> bool:
        """A field value is verified as a whole, so first occurrences are enough."""
        return True

    def state(self) -> FieldState:
        """The finished index as plain data (see :meth:`from_state`): the automaton as its keys in the
        order :meth:`finish` added them, so the automaton built again lists them in the same order."""
        assert not self._pending, "a finished index"
        automaton = self.automaton
        keys: tuple[tuple[str, Entry], ...] = ()
        if automaton is not None:
            keys = automaton.items if isinstance(automaton, _SmallMatcher) else tuple(sorted(automaton.items(), key=_first))
        return (type(self) is KeywordIndex, dict(self.exact), self.every, dict(self.short), keys,
                isinstance(automaton, _SmallMatcher))

    @staticmethod
    def from_state(state: FieldState, atoms: int) -> FieldIndex:
        """The index :meth:`state` was taken of (its value cache empty); the automaton is built again
        (on first use).
        Raises ValueError when it names an atom id not below ``atoms``."""
        keyword, exact, every, short, keys, small = state
        ids = set(every)
        for plain, verify in exact.values():
            ids.update(plain)
            ids.update(verify)
        for entry in short.values():
            for group in entry[1:]:
                ids.update(group)
        for key, entry in keys:  # checked here: the automaton is built from them later, on a scan
            if type(key) is not str or not key or entry[0] != len(key) - 1:
                raise ValueError("an index state with a malformed automaton key")
            for group in entry[1:]:
                ids.update(group)
        if ids and (min(ids) < 0 or max(ids) >= atoms):
            raise ValueError("an index state that names an unknown atom")
        index = KeywordIndex() if keyword else FieldIndex()
        index.exact = exact
        index.every = every
        index.short = short
        index.short_keys = frozenset(short)
        if small:
            index.automaton = _SmallMatcher(keys)
        elif keys:
            index.automaton = _LazyAutomaton(index, keys)  # built again on the field's first value
        return index

    def satisfied(self, text: str, atoms: list[Atom]) -> tuple[int, ...]:
        """Ids of the indexed atoms that a value with this text satisfies."""
        found: dict[int, Any] = {}
        self.scan(text, text, found, atoms)
        return tuple(found) if found else ()

    def scan(self, value: Any, text: str, hits: dict[int, Any], atoms: list[Atom]) -> None:
        """Record in ``hits`` every indexed atom that ``value`` (as ``text``) satisfies."""
        folded = text.lower()
        for aid in self.every:
            if aid not in hits and atoms[aid].check(text, folded):
                hits[aid] = value
        exact = self.exact.get(folded)
        if exact is not None:
            for aid in exact[0]:
                hits.setdefault(aid, value)
            for aid in exact[1]:
                if aid not in hits and atoms[aid].check(text, folded):
                    hits[aid] = value
        setdefault = hits.setdefault
        short = self.short
        for key in (() if not short else [k for k in short if k in folded] if len(short) <= 8
                    else self.short_keys.intersection(folded)):
            _, anywhere, prefix, suffix, verify = short[key]
            for aid in anywhere:
                setdefault(aid, value)
            if prefix and folded.startswith(key):
                for aid in prefix:
                    setdefault(aid, value)
            if suffix and folded.endswith(key):
                for aid in suffix:
                    setdefault(aid, value)
            for aid in verify:
                if aid not in hits and atoms[aid].check(text, folded):
                    hits[aid] = value
        automaton = self.automaton
        if automaton is None:
            return
        last = len(folded) - 1
        tried: set[int] | None = None
        for end, (klast, anywhere, prefix, suffix, verify) in automaton.iter(folded):
            for aid in anywhere:
                setdefault(aid, value)
            if prefix and end == klast:
                for aid in prefix:
                    setdefault(aid, value)
            if suffix and end == last:
                for aid in suffix:
                    setdefault(aid, value)
            if verify:
                if tried is None:
                    tried = set()
                for aid in verify:
                    if aid not in tried and aid not in hits:
                        tried.add(aid)
                        if atoms[aid].check(text, folded):
                            hits[aid] = value


FieldState = tuple[bool, dict[str, tuple[tuple[int, ...], tuple[int, ...]]], tuple[int, ...], dict[str, Entry],
                   tuple[tuple[str, Entry], ...], bool]
"""A finished field index as plain data: keyword index?, exact, every, short, automaton keys, small matcher?"""


class KeywordIndex(FieldIndex):
    """Index of keyword atoms: one automaton pass over all the event's strings joined by :data:`SEPARATOR`."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, bool] = {}
        """String -> whether it contains an automaton key (bounded like the field-value cache)."""

    def _small_ok(self, items: tuple[tuple[str, Entry], ...]) -> bool:
        """The joined text holds many strings: only "anywhere" keys may skip later occurrences."""
        return all(not (entry[2] or entry[3] or entry[4]) for _, entry in items)

    def _scan_short(self, text: str, hits: dict[int, Any], atoms: list[Atom]) -> None:
        folded = text.lower()
        for key in self.short_keys.intersection(folded):
            _, anywhere, prefix, suffix, verify = self.short[key]
            for aid in (*anywhere, *(prefix if folded.startswith(key) else ()),
                        *(suffix if folded.endswith(key) else ())):
                hits.setdefault(aid, text)
            for aid in verify:
                if aid not in hits and atoms[aid].check(text, folded):
                    hits[aid] = text

    def _may_hit(self, flat: Flat) -> bool:
        """Whether some string contains a key of the automaton (keys never span two strings).

        Keyword hits are rare and strings repeat: a per-string answer, cached, spares
        joining, folding and scanning the whole event in the common no-hit case.
        """
        seen = self.seen
        automaton = self.automaton
        for text in (v for values in flat.values() for v in values if type(v) is str):
            flag = seen.get(text)
            if flag is None:
                flag = False
                for _ in automaton.iter(text.lower()):
                    flag = True
                    break
                if len(text) <= CACHED_TEXT:
                    if len(seen) >= CACHE_SIZE:
                        seen.clear()
                    seen[text] = flag
            if flag:
                return True
        return False

    def scan_all(self, view: View, hits: dict[int, Any], atoms: list[Atom]) -> None:
        automaton = self.automaton
        may_hit = automaton is not None and self._may_hit(view.flat)
        if not (may_hit or self.exact or self.short):
            return
        strings = view.strings()
        if self.exact:
            for text in strings:
                exact = self.exact.get(text.lower())
                if exact is not None:
                    for aid in (*exact[0], *exact[1]):
                        if aid not in hits and atoms[aid].check(text, text.lower()):
                            hits[aid] = text
        if self.short:
            for text in strings:
                self._scan_short(text, hits, atoms)
        if not may_hit or not strings:
            return
        folded = view.folded()
        lengths: list[int] = []
        starts: list[int] = []
        tried: set[tuple[int, int]] = set()
        for end, (klast, anywhere, prefix, suffix, verify) in automaton.iter(folded):
            if not starts:
                lengths, starts = view.offsets()
            which = bisect_right(starts, end) - 1
            begin = starts[which]
            text = strings[which]
            for aid in anywhere:
                hits.setdefault(aid, text)
            if prefix and end - klast == begin:
                for aid in prefix:
                    hits.setdefault(aid, text)
            if suffix and end == begin + lengths[which] - 1:
                for aid in suffix:
                    hits.setdefault(aid, text)
            for aid in verify:
                if aid not in hits and (aid, which) not in tried:
                    tried.add((aid, which))
                    if atoms[aid].check(text, folded[begin:begin + lengths[which]]):
                        hits[aid] = text


IndexState = tuple[list[int], dict[str, FieldState], "FieldState | None", dict[int, tuple[int, ...]],
                   tuple[tuple[frozenset[int], ...], ...], tuple[int, ...], tuple[int, ...]]
"""A rule index as plain data (see :meth:`RuleIndex.state`)."""


class RuleIndex:
    """Shared field indexes and trigger tables over a list of rules (one log-source bucket, or all)."""

    __slots__ = ("always", "cached", "direct_triggers", "fields", "keywords", "rest", "rules", "triggers")

    def __init__(self, rules: list[CompiledRule], atoms: list[Atom]) -> None:
        self.rules = rules
        self.cached = 0
        """Entries in the field indexes' caches, together bounded by :data:`CACHE_SIZE` (all emptied when full)."""
        self.fields: dict[str, FieldIndex] = {}
        self.keywords: KeywordIndex | None = None
        fanout: dict[int, int] = {}
        for rule in rules:
            for clause in rule.trigger or ():
                for aid in clause:
                    fanout[aid] = fanout.get(aid, 0) + 1

        def cost(clause: frozenset[int]) -> float:
            """Expected hits of a clause: atoms shared by many rules or with short keys hit often."""
            return sum(fanout[aid] * (1 + 8 / max(1, max((len(k) for k, _ in atoms[aid].keys), default=1)))
                       for aid in clause)

        triggers: dict[int, list[int]] = {}
        always: list[int] = []
        direct: list[int] = []
        rest: list[tuple[frozenset[int], ...]] = []
        seen: set[int] = set()
        for position, rule in enumerate(rules):
            if rule.trigger is None:
                always.append(position)
                rest.append(())
            else:
                primary = min(rule.trigger, key=cost)
                rest.append(tuple(c for c in rule.trigger if c is not primary))
                for aid in primary:
                    if aid not in triggers:
                        triggers[aid] = []
                        if not atoms[aid].keys:
                            direct.append(aid)
                    triggers[aid].append(position)
            for aid in rule.atom_ids:
                atom = atoms[aid]
                if aid in seen or not atom.keys:
                    continue
                seen.add(aid)
                target: FieldIndex
                if atom.field is None:
                    if self.keywords is None:
                        self.keywords = KeywordIndex()
                    target = self.keywords
                else:
                    target = self.fields.setdefault(atom.field, FieldIndex())
                for key, mode in atom.keys:
                    target.add(aid, key, mode)
        direct = self._checked_per_value(direct, atoms)
        for index in self.fields.values():
            index.finish()
        if self.keywords is not None:
            self.keywords.finish()
        self.triggers = {aid: tuple(positions) for aid, positions in triggers.items()}
        self.rest = tuple(rest)
        self.always = tuple(always)
        self.direct_triggers = tuple(direct)

    def state(self, positions: dict[int, int]) -> IndexState:
        """This index as plain data, its rules as positions (``positions``: ``id(rule)`` -> position in the
        ruleset); :meth:`from_state` makes the same index again without the work of building it."""
        return ([positions[id(rule)] for rule in self.rules],
                {path: index.state() for path, index in self.fields.items()},
                None if self.keywords is None else self.keywords.state(),
                self.triggers, self.rest, self.always, self.direct_triggers)

    @classmethod
    def from_state(cls, state: IndexState, rules: Sequence[CompiledRule], atoms: int) -> RuleIndex:
        """The index :meth:`state` was taken of, over ``rules`` (the ruleset's, by position) and ``atoms``
        atom ids; raises ValueError for a state that does not fit them."""
        chosen, fields, keywords, triggers, rest, always, direct = state
        index = cls.__new__(cls)
        index.rules = [rules[position] for position in chosen]
        count = len(index.rules)
        for aid, positions in triggers.items():
            if not 0 <= aid < atoms or any(not 0 <= p < count for p in positions):
                raise ValueError("an index state that does not fit its ruleset")
        if len(rest) != count or any(not 0 <= p < count for p in always) or any(
                aid not in triggers for aid in direct):
            raise ValueError("an index state that does not fit its ruleset")
        index.cached = 0
        index.fields = {path: FieldIndex.from_state(field, atoms) for path, field in fields.items()}
        index.keywords = None if keywords is None else FieldIndex.from_state(keywords, atoms)  # type: ignore[assignment]
        if index.keywords is not None and not isinstance(index.keywords, KeywordIndex):
            raise ValueError("an index state that does not fit its ruleset")
        index.triggers = triggers
        index.rest = rest
        index.always = always
        index.direct_triggers = direct
        return index

    def _checked_per_value(self, direct: list[int], atoms: list[Atom]) -> list[int]:
        """Move direct trigger atoms that test each value of one field on its own (an unindexable
        regex, say) into that field's index: they then run once per distinct value (cached), not
        on every event. The rest (null, field references, ...) stay direct."""
        kept: list[int] = []
        for aid in direct:
            atom = atoms[aid]
            if atom.field is not None and type(atom).test is Atom.test:
                self.fields.setdefault(atom.field, FieldIndex()).add(aid, "", Mode.EVERY)
            else:
                kept.append(aid)
        return kept

    def scan(self, flat: Flat, view: View, hits: dict[int, Any], atoms: list[Atom]) -> set[int]:
        """Record in ``hits`` every indexed atom of these rules that the event satisfies;
        return the positions of the rules whose trigger table names one of them.

        Which atoms a field value satisfies depends only on the field and the value's text,
        and log values repeat a lot (image paths, users, hosts): the answer (atoms and the
        rules they trigger) is kept in a bounded cache, so a repeated value costs one dict
        lookup instead of a scan.
        """
        fields = self.fields
        setdefault = hits.setdefault
        triggered: set[int] = set()
        for path, values in flat.items():
            index = fields.get(path)
            if index is None:
                continue
            cache = index.cache
            for value in values:
                text = value if type(value) is str else as_text(value)
                if text is None:
                    continue
                entry = cache.get(text)
                if entry is None:
                    entry = self._entry(index.satisfied(text, atoms))
                    if len(text) <= CACHED_TEXT:
                        if self.cached >= CACHE_SIZE:
                            self._forget()
                        cache[text] = entry
                        self.cached += 1
                found, positions = entry
                if found:
                    for aid in found:
                        setdefault(aid, value)
                    if positions:
                        triggered.update(positions)
        if self.keywords is not None:
            keyword_hits: dict[int, Any] = {}
            self.keywords.scan_all(view, keyword_hits, atoms)
            triggers = self.triggers
            for aid, value in keyword_hits.items():
                setdefault(aid, value)
                triggered.update(triggers.get(aid, ()))
        return triggered

    def _forget(self) -> None:
        for index in self.fields.values():
            index.cache.clear()
        self.cached = 0

    def _entry(self, found: tuple[int, ...]) -> CacheEntry:
        if not found:
            return _NOTHING
        triggers = self.triggers
        positions: set[int] = set()
        for aid in found:
            positions.update(triggers.get(aid, ()))
        return found, tuple(positions)

    def candidates(self, ctx: Context, triggered: set[int], out: list[CompiledRule]) -> None:
        """Append the rules whose every trigger clause has a true atom (plus the always-candidates).

        ``triggered`` (from :meth:`scan`) holds the rules whose rarest clause (the one in
        the trigger table) has a hit; their other clauses are checked against the hits here.
        """
        triggers = self.triggers
        for aid in self.direct_triggers:
            if ctx.slow(aid):
                triggered.update(triggers[aid])
        rules = self.rules
        rest = self.rest
        keys = ctx.hits.keys()
        append = out.append
        for position in triggered:
            for clause in rest[position]:
                if keys.isdisjoint(clause):
                    break
            else:
                append(rules[position])
        if self.always:
            out.extend(rules[p] for p in self.always)
