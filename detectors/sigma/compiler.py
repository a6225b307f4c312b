"""``compile_ruleset``: rule texts (+ processing pipelines) -> an immutable :class:`Ruleset`.

Bad input never raises: every broken text, rule, filter or pipeline becomes a
:class:`RuleError` and the remaining rules still compile.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule
from sigma.rule.base import SigmaYAMLLoader

from detectors.model import RuleInfo
from detectors.sigma.compiled import CompiledRule
from detectors.sigma.conditions import positive_atoms, to_predicate, trigger
from detectors.sigma.detection import AtomTable, rule_node
from detectors.sigma.engine import Ruleset
from detectors.sigma.errors import CompileError, RuleError, RuleText
from detectors.sigma.modifiers import rewrite_detection
from detectors.sigma.regex import DEFAULT_TIMEOUT_MS
from detectors.sigma.rules import apply_filter, filter_targets, rule_id, rule_info


@dataclass
class LoadResult:
    """A compiled ruleset and the errors met while building it."""

    ruleset: Ruleset
    errors: list[RuleError] = field(default_factory=list)


@dataclass
class _Parsed:
    """One parsed document with where it came from."""

    obj: SigmaRule | SigmaCorrelationRule | SigmaFilter
    text: RuleText
    position: int


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if len(text) > 500 else text


def _load_pipelines(texts: Sequence[str], errors: list[RuleError]) -> ProcessingPipeline | None:
    combined: ProcessingPipeline | None = None
    for number, text in enumerate(texts):
        try:
            pipeline = ProcessingPipeline.from_yaml(text)
        except Exception as exc:  # pySigma raises many types for bad pipelines
            errors.append(RuleError(f"pipeline[{number}]", None, None, f"invalid processing pipeline: {_reason(exc)}"))
            continue
        combined = pipeline if combined is None else combined + pipeline
    return combined


def _prepare(doc: dict[str, Any]) -> dict[str, Any]:
    """Rewrite spec modifiers pySigma spells differently (see ``modifiers.py``)."""
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


def _parse_text(text: RuleText, errors: list[RuleError]) -> list[_Parsed]:
    try:
        docs = [d for d in yaml.load_all(text.text, Loader=SigmaYAMLLoader) if d is not None]
    except yaml.YAMLError as exc:
        errors.append(RuleError(text.source, None, None, f"invalid YAML: {_reason(exc)}"))
        return []
    bad = [i for i, d in enumerate(docs, 1) if not isinstance(d, dict)]
    if bad:
        errors.append(RuleError(text.source, None, None, f"YAML document {bad[0]} is not a mapping"))
        docs = [d for d in docs if isinstance(d, dict)]
    docs = [_prepare_correlation(_prepare(d)) for d in docs]
    try:
        collection = SigmaCollection.from_dicts(
            docs, collect_errors=True, source=SigmaRuleLocation(Path(text.source)),
            collect_filters=True, resolve_references=False)
    except Exception as exc:  # malformed structures can raise non-Sigma errors inside pySigma
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


def _compile_rule(item: _Parsed, table: AtomTable, pipeline: ProcessingPipeline | None,
                  info: RuleInfo, order: int) -> CompiledRule:
    rule = item.obj
    assert isinstance(rule, SigmaRule)
    if pipeline is not None:
        try:
            pipeline.apply(rule)
        except Exception as exc:  # transformations raise assorted error types
            raise CompileError(f"processing pipeline failed: {_reason(exc)}") from exc
    node = rule_node(rule, table)

    def indexed(aid: int) -> bool:
        return bool(table.atoms[aid].keys)
    return CompiledRule(
        info=info,
        predicate=to_predicate(node, indexed),
        naive=to_predicate(node, lambda aid: False),
        atom_ids=tuple(dict.fromkeys(positive_atoms(node) + positive_atoms(node, positive=False))),
        positives=tuple(positive_atoms(node)),
        trigger=trigger(node, indexed),
        order=order,
        condition=node,
    )


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
                    skip_invalid: bool = True, regex_timeout_ms: float = DEFAULT_TIMEOUT_MS) -> LoadResult:
    """Compile rule texts into a :class:`Ruleset`; errors are collected, never raised.

    ``regex_timeout_ms`` bounds each evaluation of a ``|re`` pattern RE2 cannot run.

    With ``skip_invalid=False`` the result is the same (the ruleset holds the good
    rules); the caller decides to reject the whole set when ``errors`` is non-empty.
    """
    del skip_invalid  # the decision to reject a partly broken set belongs to the caller
    errors: list[RuleError] = []
    counters: dict[str, int] = {"regex_timeouts": 0}
    pipeline = _load_pipelines(pipelines, errors)
    parsed: list[_Parsed] = []
    for text in texts:
        parsed.extend(_parse_text(text, errors))

    filters = [p for p in parsed if isinstance(p.obj, SigmaFilter)]
    detections = [p for p in parsed if isinstance(p.obj, SigmaRule)]
    correlation_items = [p for p in parsed if isinstance(p.obj, SigmaCorrelationRule)]
    table = AtomTable(counters, regex_timeout_ms)
    compiled: list[CompiledRule] = []
    seen: set[str] = set()
    good_rules: list[SigmaRule] = []
    for item in detections:
        rule = item.obj
        assert isinstance(rule, SigmaRule)
        ident = rule_id(rule, item.text.source, item.position)
        info = rule_info(rule, ident, "sigma", item.text.source, item.text.ruleset)
        if ident in seen:
            errors.append(RuleError(item.text.source, ident, info.title, f"duplicate rule id {ident}"))
            continue
        try:
            for number, flt in enumerate(filters):
                assert isinstance(flt.obj, SigmaFilter)
                if filter_targets(flt.obj, rule):
                    apply_filter(flt.obj, rule, number)
            compiled.append(_compile_rule(item, table, pipeline, info, len(compiled)))
        except (CompileError, SigmaError) as exc:
            errors.append(RuleError(item.text.source, ident, info.title, _reason(exc)))
            continue
        except Exception as exc:  # a pySigma bug on odd input must not stop the other rules
            errors.append(RuleError(item.text.source, ident, info.title,
                                    f"internal error: {type(exc).__name__}: {_reason(exc)}"))
            continue
        seen.add(ident)
        good_rules.append(rule)

    correlation_infos = []
    for item in correlation_items:
        ident = rule_id(item.obj, item.text.source, item.position)
        correlation_infos.append((item, rule_info(item.obj, ident, "correlation", item.text.source,
                                                   item.text.ruleset)))
    correlations = _resolve_correlations(correlation_infos, good_rules, pipeline, errors)
    filter_infos = [rule_info(f.obj, rule_id(f.obj, f.text.source, f.position), "filter", f.text.source,
                              f.text.ruleset) for f in filters]
    ruleset = Ruleset(compiled, table.atoms, correlations, filter_infos, counters)
    return LoadResult(ruleset=ruleset, errors=errors)
