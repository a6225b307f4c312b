"""Rule metadata (``RuleInfo``) and Sigma filters applied to rules."""

from __future__ import annotations

import re
from typing import Any

from sigma.correlations import SigmaCorrelationRule
from sigma.filters import SigmaFilter
from sigma.rule import SigmaLogSource, SigmaRule, SigmaRuleBase

from detectors.model import LogSource, RuleInfo
from detectors.sigma.errors import CompileError

DEFAULT_LEVEL = "medium"
"""Level of a rule that states none (see docs/semantics.md)."""

_KEYWORDS = frozenset({"not", "and", "or", "all", "any", "of", "1", "them"})
_TOKEN = re.compile(r"[A-Za-z0-9_*-]+")


def logsource_of(source: SigmaLogSource) -> LogSource:
    """The log source of a rule; a field that is not text (``service: []``) is a :class:`CompileError`."""
    parts = {"product": source.product, "category": source.category, "service": source.service}
    for name, value in parts.items():
        if value is not None and not isinstance(value, str):
            raise CompileError(f"logsource.{name} must be a string, not {type(value).__name__}")
    return LogSource(**parts)


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat() if hasattr(value, "isoformat") else value)


def rule_id(rule: SigmaRuleBase, source: str, position: int) -> str:
    """The rule's id; rules without one are named by ``name`` or by source and document number."""
    if rule.id is not None:
        return str(rule.id)
    if rule.name:
        return rule.name
    return f"{source}#{position}"


def rule_info(rule: SigmaRuleBase, ident: str, kind: str, source: str, ruleset: str) -> RuleInfo:
    level = rule.level.name.lower() if rule.level is not None else DEFAULT_LEVEL
    logsource = getattr(rule, "logsource", None)
    return RuleInfo(
        id=ident,
        title=rule.title or ident,
        level=level,
        author=rule.author or "unknown",
        description=rule.description or "",
        status=rule.status.name.lower() if rule.status is not None else None,
        name=rule.name,
        date=_iso(rule.date),
        modified=_iso(rule.modified),
        references=tuple(str(r) for r in rule.references or ()),
        tags=tuple(f"{t.namespace}.{t.name}" for t in rule.tags or ()),
        falsepositives=tuple(str(f) for f in rule.falsepositives or ()),
        logsource=logsource_of(logsource) if isinstance(logsource, SigmaLogSource) else LogSource(),
        license=rule.license,
        ruleset=ruleset,
        source=source,
        kind=kind,
    )


def filter_targets(flt: SigmaFilter, rule: SigmaRule | SigmaCorrelationRule) -> bool:
    """True when the filter applies: its log source covers the rule's and it names the rule (or ``any``)."""
    if not isinstance(rule, SigmaRule):
        return False
    if not logsource_of(flt.logsource).covers(logsource_of(rule.logsource)):
        return False
    refs = flt.filter.rules
    if isinstance(refs, str):
        return refs.lower() == "any"
    keys = {str(rule.id)} if rule.id is not None else set()
    if rule.name:
        keys.add(rule.name)
    return any(ref.reference in keys for ref in refs)


def apply_filter(flt: SigmaFilter, rule: SigmaRule, number: int) -> None:
    """Add ``and not (<filter condition>)`` to every condition of ``rule`` (Sigma filters spec).

    The filter's detections are copied under a ``_filt<number>_`` prefix (identifiers
    starting with ``_`` are outside the rule's own ``them``), and the filter condition's
    identifiers and patterns are renamed the same way, ``them`` becoming ``_filt<number>_*``.
    """
    prefix = f"_filt{number}_"
    for name, detection in flt.filter.detections.items():
        rule.detection.detections[prefix + name] = detection

    def rename(match: re.Match[str]) -> str:
        token = match.group(0)
        lowered = token.lower()
        if lowered == "them":
            return prefix + "*"
        if lowered in _KEYWORDS:
            return token
        return prefix + token

    condition = _TOKEN.sub(rename, flt.filter.condition[0])
    rule.detection.condition = [f"({c}) and not ({condition})" for c in rule.detection.condition]
    rule.detection.__post_init__()
