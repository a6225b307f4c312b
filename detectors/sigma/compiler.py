"""``compile_ruleset``: rule texts (+ processing pipelines) -> an immutable :class:`Ruleset`.

Bad input never raises: every broken text, rule, filter or pipeline becomes a
:class:`RuleError` and the remaining rules still compile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule
from sigma.rule.base import SigmaYAMLLoader

from detectors.model import RuleInfo
from detectors.sigma.compiled import CompiledRule, compiled_rule
from detectors.sigma.conditions import Node
from detectors.sigma.detection import AtomTable, Interner, rule_node
from detectors.sigma.engine import Ruleset
from detectors.sigma.errors import CompileError, RuleError, RuleText
from detectors.sigma.memo import CompileMemo
from detectors.sigma.modifiers import rewrite_detection
from detectors.sigma.regex import DEFAULT_TIMEOUT_MS
from detectors.sigma.result import LoadResult
from detectors.sigma.rules import apply_filter, filter_targets, rule_id, rule_info
from detectors.yamlsafe import YamlError, YamlLimits, check_text, load_documents

RULE_YAML_LIMITS = YamlLimits(max_bytes=1 << 20, max_depth=64, max_nodes=50_000)
"""Bounds on one rule file's YAML (aliases expanded); see ``detectors.yamlsafe``. The largest
SigmaHQ rule has about 4,500 nodes, 300 kB and depth 4; compile time grows with the node count
(about 0.5 ms per wildcard value), so the node bound is also the compile-time bound."""


@dataclass
class _Parsed:
    """One parsed document with where it came from."""

    obj: SigmaRule | SigmaCorrelationRule | SigmaFilter
    text: RuleText
    position: int


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if len(text) > 500 else text


def _load_pipelines(texts: Sequence[str], errors: list[RuleError],
                    limits: YamlLimits) -> ProcessingPipeline | None:
    combined: ProcessingPipeline | None = None
    for number, text in enumerate(texts):
        try:
            check_text(text, limits)
            pipeline = ProcessingPipeline.from_yaml(text)
        except Exception as exc:  # pySigma raises many types for bad pipelines
            errors.append(RuleError(f"pipeline[{number}]", None, None, f"invalid processing pipeline: {_reason(exc)}"))
            continue
        combined = pipeline if combined is None else combined + pipeline
    return combined


MAX_CONDITION_CHARS = 10_000
"""Longest condition string accepted (SigmaHQ's longest is about 550): pySigma's parser takes
seconds per few thousand operators, and a condition is a single YAML node."""


def _prepare(doc: dict[str, Any]) -> dict[str, Any]:
    """Rewrite spec modifiers pySigma spells differently (see ``modifiers.py``)."""
    for name in ("detection", "filter"):
        section = doc.get(name)
        condition = section.get("condition") if isinstance(section, dict) else None
        for text in condition if isinstance(condition, list) else [condition]:
            if isinstance(text, str) and len(text) > MAX_CONDITION_CHARS:
                raise CompileError(f"{name}.condition is longer than {MAX_CONDITION_CHARS} characters")
    for name in ("detection", "filter"):
        if isinstance(doc.get(name), dict):
            doc[name] = {k: rewrite_detection(v) if k not in ("condition", "rules") else v
                         for k, v in doc[name].items()}
    return doc


_OPERATORS = ("gt", "gte", "lt", "lte", "eq", "neq")
RANGE_ATTRIBUTE = "correlation_condition"
"""Top-level key keeping a range condition as written (read by ``detectors.correlation.compile``)."""


def _prepare_correlation(doc: dict[str, Any]) -> dict[str, Any]:
    """Adapt spec-valid correlation documents to what pySigma 1.5 reads.

    The spec puts ``generate`` at the document's top level while pySigma reads it
    only inside ``correlation:``; and a range condition (``gt`` + ``lte``) is valid
    per the spec but rejected by pySigma's single-operator parser, so the whole
    mapping is kept at the top level (a custom attribute) and pySigma sees only
    its first operator.
    """
    corr = doc.get("correlation")
    if not isinstance(corr, dict):
        return doc
    if "generate" in doc and "generate" not in corr:
        corr["generate"] = doc["generate"]
    cond = corr.get("condition")
    if isinstance(cond, dict):
        ops = [k for k in cond if k in _OPERATORS]
        if len(ops) > 1:
            doc[RANGE_ATTRIBUTE] = dict(cond)
            corr["condition"] = {k: v for k, v in cond.items() if k not in _OPERATORS or k == ops[0]}
    return doc


def _yaml_documents(text: RuleText, errors: list[RuleError], limits: YamlLimits) -> list[dict[str, Any]]:
    """The text's mapping documents; each bad one (or an over-limit text) is one error."""
    try:
        loaded = load_documents(text.text, loader=SigmaYAMLLoader, limits=limits)
    except YamlError as exc:
        errors.append(RuleError(text.source, None, None, f"invalid YAML: {exc}"))
        return []
    docs: list[dict[str, Any]] = []
    for doc in loaded:
        if doc.error is not None:
            errors.append(RuleError(text.source, None, None, f"invalid YAML: {doc.error}"))
        elif isinstance(doc.value, dict):
            docs.append(doc.value)
        elif doc.value is not None:
            errors.append(RuleError(text.source, None, None, f"YAML document {doc.number} is not a mapping"))
    return docs


def _collection(text: RuleText, docs: list[dict[str, Any]], errors: list[RuleError]) -> SigmaCollection:
    """pySigma's collection of ``docs``; a document pySigma cannot even hold is one error."""
    location = SigmaRuleLocation(Path(text.source))
    try:
        return SigmaCollection.from_dicts(docs, collect_errors=True, source=location,
                                          collect_filters=True, resolve_references=False)
    except Exception:  # malformed structures raise non-Sigma errors inside pySigma: find which
        pass
    good: list[dict[str, Any]] = []
    for number, doc in enumerate(docs, 1):
        try:
            SigmaCollection.from_dicts([doc], collect_errors=True, source=location,
                                       collect_filters=True, resolve_references=False)
        except Exception as exc:
            ident = doc.get("id") if isinstance(doc.get("id"), str) else None
            title = doc.get("title") if isinstance(doc.get("title"), str) else None
            errors.append(RuleError(text.source, ident, title,
                                    f"invalid rule document {number}: {type(exc).__name__}: {_reason(exc)}"))
            continue
        good.append(doc)
    return SigmaCollection.from_dicts(good, collect_errors=True, source=location,
                                      collect_filters=True, resolve_references=False)


def _parse_text(text: RuleText, errors: list[RuleError], limits: YamlLimits) -> list[_Parsed]:
    docs: list[dict[str, Any]] = []
    for number, doc in enumerate(_yaml_documents(text, errors, limits), 1):
        try:
            docs.append(_prepare_correlation(_prepare(doc)))
        except CompileError as exc:
            ident = doc.get("id") if isinstance(doc.get("id"), str) else None
            title = doc.get("title") if isinstance(doc.get("title"), str) else None
            errors.append(RuleError(text.source, ident, title, str(exc)))
        except Exception as exc:  # a rewrite over an odd structure fails for this document only
            errors.append(RuleError(text.source, None, None,
                                    f"invalid rule document {number}: {type(exc).__name__}: {_reason(exc)}"))
    try:
        collection = _collection(text, docs, errors)
    except Exception as exc:  # the documents passed one by one; together they still fail
        errors.append(RuleError(text.source, None, None, f"invalid rule document: {_reason(exc)}"))
        return []
    parsed: list[_Parsed] = []
    reported: set[int] = set()
    for position, obj in enumerate([*collection.rules, *collection.filters], 1):
        if obj.errors:
            reported.update(id(e) for e in obj.errors)
            ident = str(obj.id) if obj.id is not None else obj.name
            reasons = "; ".join(dict.fromkeys(_reason(e) for e in obj.errors))
            errors.append(RuleError(text.source, ident, obj.title or None, reasons))
            continue
        parsed.append(_Parsed(obj, text, position))
    for err in collection.errors:
        if id(err) not in reported:
            errors.append(RuleError(text.source, None, None, _reason(err)))
    return parsed


def _rule_condition(item: _Parsed, table: Interner, pipeline: ProcessingPipeline | None) -> Node:
    """The rule's condition IR after the processing pipeline (atoms interned into ``table``)."""
    rule = item.obj
    assert isinstance(rule, SigmaRule)
    if pipeline is not None:
        try:
            pipeline.apply(rule)
        except Exception as exc:  # transformations raise assorted error types
            raise CompileError(f"processing pipeline failed: {_reason(exc)}") from exc
    return rule_node(rule, table)


def _compile_rule(item: _Parsed, table: AtomTable, pipeline: ProcessingPipeline | None,
                  info: RuleInfo, order: int) -> CompiledRule:
    return compiled_rule(info, _rule_condition(item, table, pipeline), order, table.atoms)


def _resolve_correlations(correlations: list[tuple[_Parsed, RuleInfo]], rules: list[SigmaRule],
                          pipeline: ProcessingPipeline | None,
                          errors: list[RuleError]) -> list[tuple[RuleInfo, SigmaCorrelationRule]]:
    out: list[tuple[RuleInfo, SigmaCorrelationRule]] = []
    if not correlations:
        return out
    objs: list[Any] = [*rules, *(p.obj for p, _ in correlations)]
    collection = SigmaCollection(objs, resolve_references=False)
    for item, info in correlations:
        corr = item.obj
        assert isinstance(corr, SigmaCorrelationRule)
        try:
            corr.resolve_rule_references(collection)
            if pipeline is not None:
                pipeline.apply(corr)
        except Exception as exc:  # unresolvable references or pipeline failures
            errors.append(RuleError(item.text.source, info.id, info.title, _reason(exc)))
            continue
        out.append((info, corr))
    return out


def compile_ruleset(texts: Iterable[RuleText], pipelines: Sequence[str] = (),
                    skip_invalid: bool = True, regex_timeout_ms: float = DEFAULT_TIMEOUT_MS, *,
                    limits: YamlLimits = RULE_YAML_LIMITS,
                    on_progress: Callable[[str, int], None] | None = None,
                    cased_fields: bool = False,
                    memo: CompileMemo | None = None) -> LoadResult:
    """Compile rule texts into a :class:`Ruleset`; errors are collected, never raised.

    ``regex_timeout_ms`` bounds each evaluation of a ``|re`` pattern RE2 cannot run.
    ``cased_fields`` (``rules.field_names: sensitive``): a rule's field names match event keys
    spelled exactly so; otherwise in any case (``docs/semantics.md``, "Field names").
    ``limits`` bound each text's YAML (size, depth, nodes with aliases expanded), and so the
    work of compiling it; a text over them is one error. ``on_progress`` hears
    ``("parsed", texts so far)`` and ``("compiled", rules so far)`` (a long load reports progress).

    With ``skip_invalid=False`` the result is the same (the ruleset holds the good
    rules); the caller decides to reject the whole set when ``errors`` is non-empty.

    ``memo`` (kept by the caller from one compile to the next, e.g. across hot reloads): texts
    unchanged since the previous compile with it are not parsed or compiled again; the result is
    the same as without it (see :mod:`detectors.sigma.incremental`).
    """
    del skip_invalid  # the decision to reject a partly broken set belongs to the caller
    if memo is not None:
        from detectors.sigma.incremental import compile_incremental

        return compile_incremental(list(texts), pipelines, regex_timeout_ms, limits, on_progress, memo,
                                   cased_fields=cased_fields)
    errors: list[RuleError] = []
    counters: dict[str, int] = {"regex_timeouts": 0}
    pipeline = _load_pipelines(pipelines, errors, limits)
    parsed: list[_Parsed] = []
    for number, text in enumerate(texts, 1):
        parsed.extend(_parse_text(text, errors, limits))
        if on_progress is not None:
            on_progress("parsed", number)

    filters: list[_Parsed] = []
    filter_infos: list[RuleInfo] = []
    for f in (p for p in parsed if isinstance(p.obj, SigmaFilter)):
        ident = rule_id(f.obj, f.text.source, f.position)
        try:
            filter_infos.append(rule_info(f.obj, ident, "filter", f.text.source, f.text.ruleset))
        except CompileError as exc:  # a broken filter is left out, not applied to every rule
            errors.append(RuleError(f.text.source, ident, f.obj.title or None, _reason(exc)))
            continue
        filters.append(f)
    detections = [p for p in parsed if isinstance(p.obj, SigmaRule)]
    correlation_items = [p for p in parsed if isinstance(p.obj, SigmaCorrelationRule)]
    table = AtomTable(counters, regex_timeout_ms, cased_fields)
    compiled: list[CompiledRule] = []
    seen: dict[str, str] = {}  # rule id -> the file that defined it first
    good_rules: list[SigmaRule] = []
    for item in detections:
        rule = item.obj
        assert isinstance(rule, SigmaRule)
        ident = rule_id(rule, item.text.source, item.position)
        try:
            info = rule_info(rule, ident, "sigma", item.text.source, item.text.ruleset)
        except CompileError as exc:
            errors.append(RuleError(item.text.source, ident, rule.title or None, _reason(exc)))
            continue
        if ident in seen:
            errors.append(_duplicate(item, ident, info, seen))
            continue
        try:
            _apply_filters(filters, rule)
            compiled.append(_compile_rule(item, table, pipeline, info, len(compiled)))
        except (CompileError, SigmaError) as exc:
            errors.append(RuleError(item.text.source, ident, info.title, _reason(exc)))
            continue
        except Exception as exc:  # a pySigma bug on odd input must not stop the other rules
            errors.append(RuleError(item.text.source, ident, info.title,
                                    f"internal error: {type(exc).__name__}: {_reason(exc)}"))
            continue
        seen[ident] = item.text.source
        good_rules.append(rule)
        if on_progress is not None:
            on_progress("compiled", len(compiled))

    correlation_infos = []
    for item in correlation_items:
        ident = rule_id(item.obj, item.text.source, item.position)
        try:
            info = rule_info(item.obj, ident, "correlation", item.text.source, item.text.ruleset)
        except CompileError as exc:
            errors.append(RuleError(item.text.source, ident, item.obj.title or None, _reason(exc)))
            continue
        correlation_infos.append((item, info))
    correlations = _resolve_correlations(correlation_infos, good_rules, pipeline, errors)
    ruleset = Ruleset(compiled, table.atoms, correlations, filter_infos, counters, recipes=table.recipes,
                      cased_fields=cased_fields)
    return LoadResult(ruleset=ruleset, errors=errors)


@dataclass
class ParsedRules:
    """Detection rules parsed (filters applied, no processing pipeline) for a converter other than
    the engine (``pipesentry hunt``): each rule's metadata exactly as :func:`compile_ruleset` gives it."""

    rules: list[tuple[RuleInfo, SigmaRule]]
    errors: list[RuleError] = field(default_factory=list)
    correlations: list[RuleInfo] = field(default_factory=list)
    """Correlation rules met (not converted: their state lives across events)."""
    suppressed: frozenset[str] = frozenset()
    """Ids of rules whose matches only feed correlations (``generate: false`` in every correlation
    naming them): the engine raises no alert of their own (correlation spec, ``generate``)."""


def parse_detection_rules(texts: Iterable[RuleText], *, limits: YamlLimits = RULE_YAML_LIMITS) -> ParsedRules:
    """Parse rule texts the way :func:`compile_ruleset` does (the same spec-modifier rewrites,
    filters, rule ids, duplicate checks) and stop before compiling; errors are collected."""
    errors: list[RuleError] = []
    parsed: list[_Parsed] = []
    for text in texts:
        parsed.extend(_parse_text(text, errors, limits))
    filters = [p for p in parsed if isinstance(p.obj, SigmaFilter)]
    out = ParsedRules([], errors)
    correlations: list[SigmaCorrelationRule] = []
    seen: dict[str, str] = {}
    for item in parsed:
        obj = item.obj
        if isinstance(obj, SigmaFilter):
            continue
        ident = rule_id(obj, item.text.source, item.position)
        kind = "sigma" if isinstance(obj, SigmaRule) else "correlation"
        try:
            info = rule_info(obj, ident, kind, item.text.source, item.text.ruleset)
        except CompileError as exc:
            errors.append(RuleError(item.text.source, ident, obj.title or None, _reason(exc)))
            continue
        if not isinstance(obj, SigmaRule):
            out.correlations.append(info)
            correlations.append(obj)
            continue
        if ident in seen:
            errors.append(_duplicate(item, ident, info, seen))
            continue
        try:
            _apply_filters(filters, obj)
        except Exception as exc:  # a filter that cannot be applied leaves the rule out, as in compile_ruleset
            errors.append(RuleError(item.text.source, ident, info.title, _reason(exc)))
            continue
        seen[ident] = item.text.source
        out.rules.append((info, obj))
    out.suppressed = _building_blocks(out.rules, correlations)
    return out


def _duplicate(item: _Parsed, ident: str, info: RuleInfo, seen: Mapping[str, str]) -> RuleError:
    """A rule whose id an earlier file defined: the error names the new file and the first one."""
    return RuleError(item.text.source, ident, info.title,
                     f"duplicate rule id {ident} (also defined in {seen[ident]})", seen[ident])


def _apply_filters(filters: Sequence[_Parsed], rule: SigmaRule) -> None:
    """Sigma filters (meta filters) that target ``rule`` add their conditions to it, in file order."""
    for number, flt in enumerate(filters):
        assert isinstance(flt.obj, SigmaFilter)
        if filter_targets(flt.obj, rule):
            apply_filter(flt.obj, rule, number)


def _building_blocks(rules: list[tuple[RuleInfo, SigmaRule]],
                     correlations: list[SigmaCorrelationRule]) -> frozenset[str]:
    """Rule ids named only by correlations that do not ``generate`` (as the correlation engine decides)."""
    ids: dict[str, str] = {}
    for info, _ in rules:
        ids[info.id] = info.id
        if info.name:
            ids[info.name] = info.id
    quiet: set[str] = set()
    loud: set[str] = set()
    for corr in correlations:
        for ref in corr.rules or ():
            ident = ids.get(str(getattr(ref, "reference", ref)))
            if ident is not None:
                (loud if corr.generate else quiet).add(ident)
    return frozenset(quiet - loud)
