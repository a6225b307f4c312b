"""Turn a compiled Sigma ruleset's correlation rules into a :class:`CorrelationEngine`.

Every problem is a :class:`~detectors.sigma.errors.RuleError` naming the
correlation, never an exception: an unknown rule reference, a cycle of
correlations, a non-positive timespan, a missing value field, an extended
(boolean string) condition. A correlation that references an invalid
correlation is itself dropped, with an error saying which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sigma.correlations import SigmaCorrelationCondition, SigmaCorrelationRule

from detectors.correlation.condition import Condition, ConditionError, condition_from_mapping
from detectors.correlation.engine import CorrelationEngine, Limits
from detectors.correlation.spec import TYPES, VALUE_TYPES, CorrelationSpec, Slot
from detectors.errors import DetectorError
from detectors.model import RuleInfo
from detectors.sigma.errors import RuleError

RANGE_ATTRIBUTE = "correlation_condition"
"""``custom_attributes`` key where a loader may keep the condition mapping as written (for ranges)."""


class RulesetLike(Protocol):
    """What the compiler reads from ``detectors.sigma.Ruleset``."""

    @property
    def rules(self) -> Sequence[RuleInfo]: ...

    @property
    def correlations(self) -> Sequence[tuple[RuleInfo, SigmaCorrelationRule]]: ...


class _Invalid(DetectorError):
    pass


def compile_correlations(
    ruleset: RulesetLike,
    *,
    max_keys: int = 100_000,
    allowed_lateness_s: float = 0.0,
    max_pending: int = 100_000,
    evidence_cap: int = 20,
    raw_conditions: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[CorrelationEngine, list[RuleError]]:
    """Compile every correlation of ``ruleset``; invalid ones are left out and reported.

    ``raw_conditions`` maps a correlation id to its condition mapping as written,
    for ranges (``gt`` + ``lte``) that pySigma's single-operator parser rejects;
    a loader can instead leave that mapping in the rule's
    ``custom_attributes[RANGE_ATTRIBUTE]``.
    """
    base: dict[str, RuleInfo] = {}
    for info in ruleset.rules:
        base.setdefault(info.id, info)
    for info in ruleset.rules:
        if info.name:
            base.setdefault(info.name, info)
    corr_index: dict[str, RuleInfo] = {}
    for info, rule in ruleset.correlations:
        for name in (info.id, str(rule.id) if rule.id else None, info.name, rule.name):
            if name:
                corr_index.setdefault(name, info)

    errors: list[RuleError] = []
    specs: dict[str, CorrelationSpec] = {}
    for info, rule in ruleset.correlations:
        if info.id in specs:
            errors.append(_error(info, f"duplicate correlation id {info.id!r}: only the first is used"))
            continue
        try:
            raw = raw_conditions.get(info.id) if raw_conditions else None
            if raw is None:
                stashed = (rule.custom_attributes or {}).get(RANGE_ATTRIBUTE)
                raw = stashed if isinstance(stashed, Mapping) else None
            specs[info.id] = _build(info, rule, base, corr_index, raw)
        except _Invalid as exc:
            errors.append(_error(info, str(exc)))
        except Exception as exc:  # odd values pySigma let through (wrong types): this rule only
            errors.append(_error(info, f"invalid correlation: {type(exc).__name__}: {exc}"))

    _drop_cycles(specs, errors)
    _drop_dependents(specs, errors)
    limits = Limits(max_keys=max_keys, allowed_lateness=float(allowed_lateness_s),
                    max_pending=max_pending, evidence_cap=evidence_cap)
    return CorrelationEngine(_topological(specs), limits), errors


def _error(info: RuleInfo, reason: str) -> RuleError:
    return RuleError(source=info.source, rule_id=info.id, title=info.title, reason=f"correlation: {reason}")


def _build(info: RuleInfo, rule: SigmaCorrelationRule, base: Mapping[str, RuleInfo],
           corr_index: Mapping[str, RuleInfo], raw: Mapping[str, Any] | None) -> CorrelationSpec:
    kind = rule.type.name.lower() if rule.type is not None else ""
    if kind not in TYPES:
        raise _Invalid(f"unsupported correlation type {kind or None!r}")
    if not isinstance(rule.condition, SigmaCorrelationCondition):
        raise _Invalid("extended (boolean expression) correlation conditions are not part of the "
                       "specification and are not supported")
    cond = rule.condition
    try:
        condition = condition_from_mapping(raw) if raw else Condition(((cond.op.name.lower(), float(cond.count)),))
    except ConditionError as exc:
        raise _Invalid(str(exc)) from None

    seconds = getattr(rule.timespan, "seconds", None)
    if not isinstance(seconds, int | float) or seconds <= 0:
        raise _Invalid(f"timespan {getattr(rule.timespan, 'spec', None)!r} does not give a positive duration")

    references = [ref.reference for ref in rule.rules or []]
    if not references:
        raise _Invalid("no rules referenced")
    if len(set(references)) != len(references):
        raise _Invalid("a rule is referenced twice")

    value_field: tuple[str, ...] = ()
    if cond.fieldref is not None:
        value_field = (cond.fieldref,) if isinstance(cond.fieldref, str) else tuple(str(f) for f in cond.fieldref)
    if kind in VALUE_TYPES and not value_field:
        raise _Invalid(f"{kind} needs condition.field")
    if kind not in ("value_count",) and len(value_field) > 1:
        raise _Invalid(f"{kind} takes a single condition.field")
    percentile: float | None = None
    if kind == "value_median":
        percentile = 50.0
    elif kind == "value_percentile" and cond.percentile is not None:
        if not 0 <= cond.percentile <= 100:
            raise _Invalid(f"percentile {cond.percentile} is outside 0..100")
        percentile = float(cond.percentile)

    aliases: dict[str, dict[str, str]] = {
        alias.alias: {ref.reference: fieldname for ref, fieldname in alias.mapping.items()}
        for alias in rule.aliases
    }
    group_by = tuple(rule.group_by or ())
    if not all(isinstance(name, str) for name in group_by):
        raise _Invalid("group-by must list field names (strings)")
    slots: list[Slot] = []
    resolved_names: list[set[str]] = []
    for reference in references:
        target = _resolve(reference, base, corr_index)
        if target is None:
            raise _Invalid(f"unknown rule reference {reference!r} (no rule or correlation has this id or name)")
        info_t, is_corr = target
        if is_corr and info_t.id == info.id:
            raise _Invalid(f"cycle: {info.id} references itself")
        names = {reference, info_t.id, *( [info_t.name] if info_t.name else [])}
        resolved_names.append(names)

        def physical(name: str, names: set[str] = names) -> str:
            mapping = aliases.get(name)
            if mapping:
                for key, fieldname in mapping.items():
                    if key in names:
                        return fieldname
            return name

        slots.append(Slot(rule_id=info_t.id, correlation=is_corr,
                          group_fields=tuple(physical(f) for f in group_by),
                          value_fields=tuple(physical(f) for f in value_field)))
    for alias, mapping in aliases.items():
        for key in mapping:
            if not any(key in names for names in resolved_names):
                raise _Invalid(f"alias {alias!r} maps rule {key!r}, which the correlation does not reference")
    return CorrelationSpec(
        info=info, type=kind, slots=tuple(slots), group_by=group_by, value_field=value_field,
        span=float(seconds), timespan=str(getattr(rule.timespan, "spec", seconds)), condition=condition,
        percentile=percentile, generate=bool(rule.generate),
    )


def _resolve(reference: str, base: Mapping[str, RuleInfo],
             corr_index: Mapping[str, RuleInfo]) -> tuple[RuleInfo, bool] | None:
    found_base = base.get(reference)
    found_corr = corr_index.get(reference)
    if found_corr is not None and (found_base is None or found_corr.id == reference):
        return found_corr, True
    if found_base is not None:
        return found_base, False
    return None


def _children(spec: CorrelationSpec) -> list[str]:
    return [slot.rule_id for slot in spec.slots if slot.correlation]


def _drop_cycles(specs: dict[str, CorrelationSpec], errors: list[RuleError]) -> None:
    """Remove every correlation on a reference cycle, with an error showing the cycle."""
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    cyclic: dict[str, list[str]] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        spec = specs.get(node)
        for child in _children(spec) if spec else []:
            if state.get(child) == 1:
                cycle = [*path[path.index(child):], child]
                for member in cycle[:-1]:
                    cyclic.setdefault(member, cycle)
            elif child not in state and child in specs:
                visit(child, path)
        path.pop()
        state[node] = 2

    for node in list(specs):
        if node not in state:
            visit(node, [])
    for node, cycle in cyclic.items():
        errors.append(_error(specs[node].info, "cycle of correlations: " + " -> ".join(cycle)))
        del specs[node]


def _drop_dependents(specs: dict[str, CorrelationSpec], errors: list[RuleError]) -> None:
    changed = True
    while changed:
        changed = False
        for node, spec in list(specs.items()):
            missing = [child for child in _children(spec) if child not in specs]
            if missing:
                errors.append(_error(spec.info, f"references invalid correlation {missing[0]!r}"))
                del specs[node]
                changed = True


def _topological(specs: Mapping[str, CorrelationSpec]) -> list[CorrelationSpec]:
    """Children before parents (the engine feeds outputs upward)."""
    order: list[CorrelationSpec] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        done.add(node)
        for child in _children(specs[node]):
            visit(child)
        order.append(specs[node])

    for node in specs:
        visit(node)
    return order
