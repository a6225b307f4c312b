"""Incremental compiling: a compile after k of N rule texts changed parses and compiles those k.

:func:`compile_incremental` gives exactly what :func:`~detectors.sigma.compiler.compile_ruleset`
gives for the same texts (the same rules in the same order, the same atoms with the same ids, the
same errors in the same order, so the same screen plan and snapshot), and leaves in the memo what
it made of each text (:mod:`detectors.sigma.memo`). It walks the texts in order as the full compile
does; a text whose unit is in the memo is not parsed: its parse errors are taken from the unit, and
each of its rules interns its recorded recipes into this compile's atom table (so atom ids come out
as a full compile numbers them) and gets its recorded condition and atom ids with
local ids mapped to those (its trigger clauses are made again from the condition, as the compiler
makes them); its predicate is made from the condition on first use, as for a ruleset restored from
the cache (:func:`~detectors.sigma.compiled.restored_rule`).

What a unit depends on beyond its text (pipelines, options, limits and every Sigma filter: filters
rewrite the rules they target) is the memo's context: another context reuses nothing. Texts holding
a filter or a correlation are parsed by every compile, and so are the texts of rules a correlation
references (resolving references mutates those rules' pySigma objects, which the ruleset keeps).
A rule that was a duplicate when its unit was made has no recorded outcome: if it is not one any
more, its text is parsed again. Sets whose per-rule results could depend on other rules' compiles
(filters together with a processing pipeline, which may mutate the filter's detections shared by
the rules it targets; filters together with correlations) are compiled without reuse and leave the
memo empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.filters import SigmaFilter
from sigma.rule import SigmaRule

from detectors.model import RuleInfo
from detectors.sigma import compiler
from detectors.sigma.compiled import CompiledRule, compiled_rule, restored_rule
from detectors.sigma.conditions import Node, trigger
from detectors.sigma.detection import AtomTable
from detectors.sigma.engine import Ruleset
from detectors.sigma.errors import CompileError, RuleError, RuleText
from detectors.sigma.memo import CompileMemo, Outcome, RuleUnit, TextKey, TextUnit
from detectors.sigma.recipes import Recipe
from detectors.sigma.result import LoadResult
from detectors.sigma.rules import rule_id, rule_info
from detectors.yamlsafe import YamlLimits


class _Recorder:
    """Interns into the real table and records, for the rule's unit, each recipe it meets first and
    hands out local ids (positions among those recipes)."""

    __slots__ = ("ids", "local", "recipes", "table")

    def __init__(self, table: AtomTable) -> None:
        self.table = table
        self.recipes: list[Recipe] = []
        self.ids: list[int] = []
        self.local: dict[tuple[Any, ...], int] = {}

    def field(self, name: str) -> str:
        return self.table.field(name)

    def intern(self, key: tuple[Any, ...], display: str) -> Node:
        local = self.local.get(key)
        if local is None:
            aid = _atom_id(self.table.intern(key, display))  # raises for a bad atom: nothing recorded
            local = self.local[key] = len(self.recipes)
            self.recipes.append((key, display))
            self.ids.append(aid)
        return ("atom", local)


def _atom_id(leaf: Node) -> int:
    aid = leaf[1]
    assert isinstance(aid, int)
    return aid


def _remap(node: Node, ids: Sequence[int]) -> Node:
    """``node`` with local atom ids replaced by ``ids[local]`` (same shape otherwise)."""
    op, arg = node
    value: Any = arg
    if op == "atom":
        return ("atom", ids[value])
    if op == "const":
        return node
    if op == "not":
        return ("not", _remap(value, ids))
    return (op, [_remap(child, ids) for child in value])


def _ids(ids: Iterable[int], mapping: Sequence[int] | Mapping[int, int]) -> tuple[int, ...]:
    return tuple(mapping[aid] for aid in ids)


def _text_key(text: RuleText) -> TextKey:
    return (text.source, text.ruleset, hashlib.sha256(text.text.encode("utf-8", "surrogatepass")).hexdigest())


def _names(obj: Any) -> tuple[str, ...]:
    names = [str(obj.id)] if obj.id is not None else []
    if obj.name:
        names.append(str(obj.name))
    return tuple(names)


def _references(correlations: Sequence[SigmaCorrelationRule]) -> set[str] | None:
    """Every rule id or name the correlations may reference (UUIDs also in canonical form); None
    when one of them references rules in a way not understood here (then nothing is reused)."""
    refs: set[str] = set()
    for corr in correlations:
        if corr.rules is not None:
            named = [str(getattr(ref, "reference", ref)) for ref in corr.rules]
        else:
            getter = getattr(corr.condition, "get_referenced_rules", None)
            if getter is None:
                continue  # a plain condition without rules references none
            try:
                named = [str(name) for name in getter()]
            except Exception:  # an odd condition: be safe
                return None
        for name in named:
            refs.add(name)
            try:
                refs.add(str(UUID(name)))
            except ValueError:
                pass
    return refs


class _Build:
    """One incremental compile's state (the same steps, in the same order, as ``compile_ruleset``)."""

    def __init__(self, texts: list[RuleText], pipelines: Sequence[str], regex_timeout_ms: float,
                 limits: YamlLimits, on_progress: Callable[[str, int], None] | None, cased_fields: bool) -> None:
        self.texts = texts
        self.limits = limits
        self.on_progress = on_progress
        self.errors: list[RuleError] = []
        self.counters: dict[str, int] = {"regex_timeouts": 0}
        self.pipeline = compiler._load_pipelines(pipelines, self.errors, limits)
        self.table = AtomTable(self.counters, regex_timeout_ms, cased_fields)
        self.compiled: list[CompiledRule] = []
        self.seen: dict[str, str] = {}
        self.good_rules: list[SigmaRule] = []
        self.filters: list[Any] = []
        self.parsed_count = 0

    def parse(self, text: RuleText) -> tuple[list[Any], list[RuleError]]:
        errors: list[RuleError] = []
        self.parsed_count += 1
        return compiler._parse_text(text, errors, self.limits), errors

    # -- detection rules ---------------------------------------------------------------------
    def fresh_rules(self, parsed: list[Any]) -> tuple[RuleUnit, ...]:
        """Compile a freshly parsed text's detection rules (as the full compile does), recording units."""
        units: list[RuleUnit] = []
        for item in parsed:
            rule = item.obj
            if not isinstance(rule, SigmaRule):
                continue
            source = item.text.source
            ident = rule_id(rule, source, item.position)
            names = _names(rule)
            try:
                info = rule_info(rule, ident, "sigma", source, item.text.ruleset)
            except CompileError as exc:
                error = RuleError(source, ident, rule.title or None, compiler._reason(exc))
                self.errors.append(error)
                units.append(RuleUnit(ident, None, error, names, None))
                continue
            if ident in self.seen:
                self.errors.append(compiler._duplicate(item, ident, info, self.seen))
                units.append(RuleUnit(ident, info, None, names, None))
                continue
            recorder = _Recorder(self.table)
            failure: RuleError | None = None
            try:
                compiler._apply_filters(self.filters, rule)
                local = compiler._rule_condition(item, recorder, self.pipeline)
                made = compiled_rule(info, _remap(local, recorder.ids), len(self.compiled), self.table.atoms)
            except (CompileError, SigmaError) as exc:
                failure = RuleError(source, ident, info.title, compiler._reason(exc))
            except Exception as exc:  # a pySigma bug on odd input must not stop the other rules
                failure = RuleError(source, ident, info.title,
                                    f"internal error: {type(exc).__name__}: {compiler._reason(exc)}")
            else:
                self.compiled.append(made)
            if failure is not None:
                units.append(RuleUnit(ident, info, None, names, Outcome(tuple(recorder.recipes), None, failure)))
                self.errors.append(failure)
                continue
            back = {aid: number for number, aid in enumerate(recorder.ids)}
            units.append(RuleUnit(ident, info, None, names, Outcome(
                tuple(recorder.recipes), local, None, _ids(made.atom_ids, back), _ids(made.positives, back))))
            self.seen[ident] = source
            self.good_rules.append(rule)
            self._progress()
        return tuple(units)

    def replayable(self, unit: TextUnit) -> bool:
        """Whether every rule of ``unit`` that this compile would compile has a recorded outcome."""
        added: set[str] = set()
        for rule in unit.rules:
            if rule.info is None or rule.ident in self.seen or rule.ident in added:
                continue
            if rule.outcome is None:
                return False
            if rule.outcome.error is None:
                added.add(rule.ident)
        return True

    def replay(self, source: str, unit: TextUnit) -> None:
        """The full compile's steps for a text's rules, from their recorded outcomes."""
        for rule in unit.rules:
            info = rule.info
            if info is None:
                assert rule.info_error is not None
                self.errors.append(rule.info_error)
                continue
            if rule.ident in self.seen:
                first = self.seen[rule.ident]
                self.errors.append(RuleError(source, rule.ident, info.title,
                                             f"duplicate rule id {rule.ident} (also defined in {first})", first))
                continue
            outcome = rule.outcome
            assert outcome is not None, "replayable() checked it"
            ids = [_atom_id(self.table.intern(key, display)) for key, display in outcome.recipes]
            if outcome.error is not None:
                self.errors.append(outcome.error)
                continue
            assert outcome.node is not None
            node = _remap(outcome.node, ids)
            # The trigger clauses are made again, not remapped: a frozenset's iteration order follows
            # how it was built, and the rule index and the screen plan follow that order.
            parts = (info, node, len(self.compiled), _ids(outcome.atom_ids, ids), _ids(outcome.positives, ids),
                     trigger(node, self._indexed))
            self.compiled.append(restored_rule(parts, self.table.atoms))
            self.seen[rule.ident] = source
            self._progress()

    def _indexed(self, aid: int) -> bool:
        return bool(self.table.atoms[aid].keys)

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress("compiled", len(self.compiled))

    # -- filters and correlations ------------------------------------------------------------
    def take_filters(self, parsed: list[Any]) -> list[RuleInfo]:
        infos: list[RuleInfo] = []
        for f in (p for p in parsed if isinstance(p.obj, SigmaFilter)):
            ident = rule_id(f.obj, f.text.source, f.position)
            try:
                infos.append(rule_info(f.obj, ident, "filter", f.text.source, f.text.ruleset))
            except CompileError as exc:
                self.errors.append(RuleError(f.text.source, ident, f.obj.title or None, compiler._reason(exc)))
                continue
            self.filters.append(f)
        return infos

    def correlations(self, parsed: list[Any]) -> list[tuple[RuleInfo, SigmaCorrelationRule]]:
        infos = []
        for item in (p for p in parsed if isinstance(p.obj, SigmaCorrelationRule)):
            ident = rule_id(item.obj, item.text.source, item.position)
            try:
                info = rule_info(item.obj, ident, "correlation", item.text.source, item.text.ruleset)
            except CompileError as exc:
                self.errors.append(RuleError(item.text.source, ident, item.obj.title or None,
                                             compiler._reason(exc)))
                continue
            infos.append((item, info))
        return compiler._resolve_correlations(infos, self.good_rules, self.pipeline, self.errors)


def compile_incremental(texts: list[RuleText], pipelines: Sequence[str], regex_timeout_ms: float,
                        limits: YamlLimits, on_progress: Callable[[str, int], None] | None,
                        memo: CompileMemo, *, cased_fields: bool = False) -> LoadResult:
    """``compile_ruleset(texts, ...)`` reusing ``memo``'s units of unchanged texts; the memo then holds
    the units of ``texts`` (see the module doc)."""
    with memo.lock:
        seed, memo.seed = memo.seed, None
        if seed is not None:
            seed(memo)
        return _compile(texts, pipelines, regex_timeout_ms, limits, on_progress, memo, cased_fields)


def _compile(texts: list[RuleText], pipelines: Sequence[str], regex_timeout_ms: float, limits: YamlLimits,
             on_progress: Callable[[str, int], None] | None, memo: CompileMemo, cased_fields: bool) -> LoadResult:
    build = _Build(texts, pipelines, regex_timeout_ms, limits, on_progress, cased_fields)
    base = (tuple(pipelines), repr(float(regex_timeout_ms)), repr(limits), cased_fields)
    old = memo.units if isinstance(memo.context, tuple) and memo.context[0] == base else {}
    keys = [_text_key(text) for text in texts]

    # Parse what must be parsed; the others' parse errors come from their units (same order).
    fresh: dict[int, list[Any]] = {}
    text_errors: list[list[RuleError]] = []
    for number, (text, key) in enumerate(zip(texts, keys, strict=True), 1):
        unit = old.get(key)
        if unit is None or unit.special:
            parsed, errs = build.parse(text)
            fresh[number - 1] = parsed
            text_errors.append(errs)
        else:
            text_errors.append(list(unit.errors))
        if on_progress is not None:
            on_progress("parsed", number)

    def objects(kind: type) -> list[int]:
        return [i for i in sorted(fresh) if any(isinstance(p.obj, kind) for p in fresh[i])]

    filter_texts = objects(SigmaFilter)
    correlation_texts = objects(SigmaCorrelationRule)
    context = (base, tuple(keys[i] for i in filter_texts))
    reuse = memo.context == context and not (filter_texts and (build.pipeline is not None or correlation_texts))
    if correlation_texts and reuse:
        refs = _references([p.obj for i in correlation_texts for p in fresh[i]
                            if isinstance(p.obj, SigmaCorrelationRule)])
        for i, key in enumerate(keys):
            unit = old.get(key)
            if i not in fresh and unit is not None and (
                    refs is None or any(name in refs for rule in unit.rules for name in rule.names)):
                fresh[i], text_errors[i] = build.parse(texts[i])
    if not reuse:
        for i, text in enumerate(texts):
            if i not in fresh:
                fresh[i], text_errors[i] = build.parse(text)
    for errs in text_errors:
        build.errors.extend(errs)

    filter_infos = build.take_filters([p for i in filter_texts for p in fresh[i]])
    units: dict[TextKey, TextUnit] = {}
    for i, (text, key) in enumerate(zip(texts, keys, strict=True)):
        unit = None if i in fresh else old[key]
        if unit is not None and build.replayable(unit):
            build.replay(text.source, unit)
        else:
            if i not in fresh:  # a former duplicate to compile now: parse again (same parse errors)
                fresh[i], text_errors[i] = build.parse(text)
            parsed = fresh[i]
            special = any(isinstance(p.obj, SigmaFilter | SigmaCorrelationRule) for p in parsed)
            unit = TextUnit(tuple(text_errors[i]), special, build.fresh_rules(parsed))
        units[key] = unit
    correlations = build.correlations([p for i in correlation_texts for p in fresh[i]])
    if filter_texts and (build.pipeline is not None or correlation_texts):
        memo.clear()  # per-rule results may depend on other rules here: nothing is kept
    else:
        memo.context, memo.units = context, units
    memo.last = {"texts": len(texts), "parsed": build.parsed_count, "reused": len(texts) - len(fresh)}
    ruleset = Ruleset(build.compiled, build.table.atoms, correlations, filter_infos, build.counters,
                      recipes=build.table.recipes, cased_fields=cased_fields)
    return LoadResult(ruleset=ruleset, errors=build.errors)
