"""Sigma-style selections for ``threshold`` and ``ratio`` checks.

Why: a selection is written exactly like a Sigma rule's ``detection`` search
identifier (maps, lists, modifiers), so the check reuses the Sigma engine
(``detectors.sigma``) instead of a second matcher with other semantics: the
selection is wrapped in a one-rule Sigma document and compiled.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import yaml

from detectors.model import Event

Matcher = Callable[[Event], bool]
MatcherFactory = Callable[[str, Any], Matcher]
"""``factory(check_id, selection) -> matcher``; raises ``ValueError`` for a bad selection."""

_NAMESPACE = uuid.UUID("6f1b7c1e-3a53-4e0c-9d0c-7d4a8f2f5b11")


def selection_rule_text(check_id: str, selection: Any) -> str:
    """The one-rule Sigma document wrapping ``selection``."""
    doc = {
        "title": f"anomaly check {check_id} selection",
        "id": str(uuid.uuid5(_NAMESPACE, check_id)),
        "status": "experimental",
        "logsource": {"category": "anomaly_selection"},
        "detection": {"selection": selection, "condition": "selection"},
        "level": "informational",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def sigma_matcher(check_id: str, selection: Any) -> Matcher:
    """Compile ``selection`` with the Sigma engine; ``ValueError`` with its reason when invalid."""
    from detectors.sigma import RuleText, compile_ruleset  # imported late: heavy, and optional in tests

    result = compile_ruleset([RuleText(source=f"check:{check_id}", text=selection_rule_text(check_id, selection),
                                       ruleset="anomaly")])
    if result.errors or not result.ruleset.rules:
        reason = "; ".join(e.reason for e in result.errors) or "selection compiled to no rule"
        raise ValueError(f"selection: {reason}")
    evaluate = result.ruleset.evaluate

    def matches(event: Event) -> bool:
        return bool(evaluate(event))

    return matches
