"""The compiled ruleset: log-source routing over lazily built shared indexes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from detectors.event import flatten
from detectors.model import Event, LogSource, Match, RuleInfo, new_match
from detectors.sigma.atoms import Atom, View
from detectors.sigma.compiled import CompiledRule, Context, make_match
from detectors.sigma.index import RuleIndex
from detectors.sigma.recipes import Recipe
from detectors.sigma.screen import Decision, Screen, Shown, build
from detectors.sigma.screen_abi import Plan

if TYPE_CHECKING:  # pySigma's parser is imported to compile rules, not to restore a cached ruleset
    from sigma.correlations import SigmaCorrelationRule

MAX_ROUTES = 256
"""Distinct event log sources whose route is cached (the cache is reset beyond that)."""

MAX_UNDECIDED = 24
"""A native decision leaving more rules than this to Python takes the full (indexed) Python path:
testing each of them on its own would cost more."""


class Route:
    """The index to consult for one event log source."""

    __slots__ = ("_plan", "_screen", "cased", "index")

    def __init__(self, index: RuleIndex, plan: Plan | None = None, cased: bool = False) -> None:
        self.index = index
        self.cased = cased
        """Field names compared as spelled (the ruleset's ``cased_fields``)."""
        self._screen: Screen | bool | None = False
        """The route's native screen, built on first request (None: not available)."""
        self._plan = plan
        """The screen's plan when it is known already (a restored route), else exported from the index."""

    def screen(self, atoms: list[Atom]) -> Screen | None:
        if self._screen is False:
            self._screen = build(self.index, atoms, self._plan, self.cased)
            self._plan = None
        return self._screen  # type: ignore[return-value]

    def evaluate(self, event: Event, atoms: list[Atom]) -> list[Match]:
        flat = flatten(event, self.cased)
        view = View(flat)
        hits: dict[int, object] = {}
        triggered = self.index.scan(flat, view, hits, atoms)
        ctx = Context(view, hits, atoms)
        candidates: list[CompiledRule] = []
        self.index.candidates(ctx, triggered, candidates)
        if not candidates:
            return []
        if len(candidates) > 1:
            candidates.sort(key=_order)
        return [make_match(rule, ctx) for rule in candidates if rule.predicate(ctx)]


def _order(rule: CompiledRule) -> int:
    return rule.order


class Ruleset:
    """An immutable compiled set of Sigma rules; safe to share between threads (the only state
    that changes is the routes' bounded value caches, plain dict updates that never change a result).

    Rules are bucketed by log source; the first event of a log source builds its
    route: one index over the rules of every covering bucket, cached (so a cold
    start only pays for pySigma parsing and atom compilation).
    """

    def __init__(self, compiled: list[CompiledRule], atoms: list[Atom],
                 correlations: list[tuple[RuleInfo, SigmaCorrelationRule]],
                 filters: list[RuleInfo], counters: dict[str, int], *,
                 recipes: Sequence[Recipe] | None = None, cased_fields: bool = False) -> None:
        self._compiled = tuple(compiled)
        self.cased_fields = cased_fields
        """Rule field names match event keys spelled exactly so (``rules.field_names: sensitive``);
        the atoms were compiled for it (see :func:`detectors.sigma.compile_ruleset`)."""
        self._atoms = atoms
        self.recipes: tuple[Recipe, ...] | None = None if recipes is None else tuple(recipes)
        """How each atom was built (see :mod:`detectors.sigma.snapshot`); None: not known, so not cacheable."""
        self.rules: tuple[RuleInfo, ...] = tuple(rule.info for rule in compiled)
        self.correlations: tuple[tuple[RuleInfo, SigmaCorrelationRule], ...] = tuple(correlations)
        self.filters: tuple[RuleInfo, ...] = tuple(filters)
        self.counters = counters
        self._by_key: dict[str, RuleInfo] = {}
        for info in (*self.rules, *(info for info, _ in self.correlations)):
            self._by_key.setdefault(info.id, info)
        for info in (*self.rules, *(info for info, _ in self.correlations)):
            if info.name:
                self._by_key.setdefault(info.name, info)
        self._buckets: dict[LogSource, list[CompiledRule]] = {}
        for rule in self._compiled:
            self._buckets.setdefault(rule.info.logsource, []).append(rule)
        self._routes: dict[tuple[str | None, ...] | None, Route] = {}
        self._by_source: dict[LogSource | None, Route] = {}
        """The same routes by the caller's LogSource as given (spares lower-casing it per event)."""
        self._unrouted: Callable[[], tuple[RuleIndex, Plan | None] | None] | None = None
        """Makes the unrouted route's index and plan on its first request (a restored ruleset)."""
        self._bare: dict[int, Match] = {}
        """id(rule info) -> the match of a rule that shows no field (the same on every event: a
        match is immutable), made once for all the events the screen decides it matches."""

    @property
    def compiled(self) -> tuple[CompiledRule, ...]:
        """The compiled rules, in rule order."""
        return self._compiled

    def get(self, rule_id_or_name: str) -> RuleInfo | None:
        return self._by_key.get(rule_id_or_name)

    def _route(self, logsource: LogSource | None) -> Route:
        route = self._by_source.get(logsource)
        if route is not None:
            return route
        key = None if logsource is None else tuple(
            None if v is None else v.lower() for v in (logsource.product, logsource.category, logsource.service))
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
                self._by_source.clear()
            if key is None and self._unrouted is not None:
                restore, self._unrouted = self._unrouted, None
                made = restore()
                route = None if made is None else Route(*made, cased=self.cased_fields)
            if route is None:
                covering = [s for s in self._buckets if logsource is None or s.covers(logsource)]
                chosen = sorted((r for s in covering for r in self._buckets[s]), key=_order)
                route = Route(RuleIndex(chosen, self._atoms), cased=self.cased_fields)
            self._routes[key] = route
        if len(self._by_source) >= MAX_ROUTES:
            self._by_source.clear()
        self._by_source[logsource] = route
        return route

    def route_index(self, logsource: LogSource | None = None) -> RuleIndex:
        """The rule index of ``logsource``'s route (built on first request)."""
        return self._route(logsource).index

    def adopt_unrouted(self, restore: Callable[[], tuple[RuleIndex, Plan | None] | None]) -> None:
        """Make the unrouted route (``logsource=None``) with ``restore`` on its first request, as the
        compiled-ruleset cache keeps it: the index :meth:`route_index` would build and its screen's
        plan, or None (it is then built as usual). A routed stream never pays for it."""
        self._unrouted = restore
        self._routes.pop(None, None)
        self._by_source.pop(None, None)

    def screen(self, logsource: LogSource | None = None) -> Screen | None:
        """The native screen of ``logsource``'s route (see :mod:`detectors.sigma.screen`), if built."""
        return self._route(logsource).screen(self._atoms)

    def evaluate(self, event: Event, logsource: LogSource | None = None) -> list[Match]:
        """Matches of every rule (covering ``logsource``, when given) on ``event``, in rule order."""
        if type(event) is not dict and not isinstance(event, Mapping):  # the ABC check is slow
            return []
        return self._route(logsource).evaluate(event, self._atoms)

    def evaluate_decided(self, event: Event, rules: Sequence[CompiledRule], decision: Decision,
                         logsource: LogSource | None = None) -> list[Match]:
        """Same result as :meth:`evaluate`, given the native screen's decision on ``event`` (its
        ``decide`` over the route of ``logsource``; ``rules``: that screen's :attr:`~Screen.rules`).

        Only the rules the decision names are looked at: the matched ones make their matches (with
        the fields the decision shows for them, else read from the event for them alone), the
        undecided ones are tested one by one, every atom directly (:meth:`evaluate_naive`'s way).
        A decision leaving more than :data:`MAX_UNDECIDED` rules undecided takes the indexed path
        instead, and so does one made by a screen that is not this route's (``rules`` another
        tuple: a replaced ruleset, a route rebuilt since)."""
        if type(event) is not dict and not isinstance(event, Mapping):
            return []
        matched, undecided = decision[0], decision[1]
        route = self._by_source.get(logsource)  # _route's first step, inline (once per event)
        if route is None:
            route = self._route(logsource)
        screen = route._screen
        if len(undecided) > MAX_UNDECIDED or isinstance(screen, bool) or screen is None or screen.rules is not rules:
            return route.evaluate(event, self._atoms)  # also a decision by another ruleset's (or route's) screen
        shown: list[Shown | None] | None = decision[2] if len(decision) > 2 else None
        if not undecided:
            if not matched:
                return []
            ctx = None  # the event is flattened only if a matched rule's fields are not shown
        else:
            ctx = Context(View(flatten(event, self.cased_fields)), {}, self._atoms, naive=True)
            decided = matched
            matched = sorted([*matched, *(p for p in undecided if rules[p].naive(ctx))])
            if shown is not None:  # aligned with the matched rules again (undecided ones: none shown)
                by_position = dict(zip(decided, shown, strict=True))
                shown = [by_position.get(position) for position in matched]
        out: list[Match] = []
        for at, position in enumerate(matched):
            rule = rules[position]
            if shown is not None:
                fields = shown[at]
                if fields is not None and (fields or rule.positives):  # else the shared bare match
                    out.append(new_match(rule.info, fields))
                    continue
            if not rule.positives:  # nothing to show (make_match's answer without the event)
                info = rule.info
                bare = self._bare.get(id(info))
                if bare is None or bare.rule is not info:
                    bare = self._bare[id(info)] = new_match(info, ())
                out.append(bare)
                continue
            if ctx is None:
                ctx = Context(View(flatten(event, self.cased_fields)), {}, self._atoms, naive=True)
            out.append(make_match(rule, ctx))
        return out

    def evaluate_naive(self, event: Event, logsource: LogSource | None = None) -> list[Match]:
        """Same result as :meth:`evaluate`, testing each rule in turn without any index."""
        if not isinstance(event, Mapping):
            return []
        view = View(flatten(event, self.cased_fields))
        ctx = Context(view, {}, self._atoms, naive=True)
        out: list[Match] = []
        for rule in self._compiled:
            if logsource is not None and not rule.info.logsource.covers(logsource):
                continue
            if rule.naive(ctx):
                out.append(make_match(rule, ctx))
        return out
