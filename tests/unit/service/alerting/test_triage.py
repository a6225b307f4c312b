"""The triage workflow's rules: which status moves are allowed and what each changes."""

from __future__ import annotations

import pytest

from service.alerting.triage import (
    FieldChange,
    TriageConflict,
    TriageInvalid,
    TriagePatch,
    TriageState,
    apply,
    plan,
)

NEW = TriageState()
ACK = TriageState(status="acknowledged")
FP = TriageState(status="resolved", disposition="false_positive")


@pytest.mark.parametrize(("current", "patch", "expected"), [
    (NEW, TriagePatch(status="acknowledged"), [FieldChange("status", "new", "acknowledged")]),
    (NEW, TriagePatch(status="resolved", disposition="benign"),
     [FieldChange("status", "new", "resolved"), FieldChange("disposition", None, "benign")]),
    (ACK, TriagePatch(status="resolved", disposition="true_positive"),
     [FieldChange("status", "acknowledged", "resolved"), FieldChange("disposition", None, "true_positive")]),
    (FP, TriagePatch(status="acknowledged"),
     [FieldChange("status", "resolved", "acknowledged"), FieldChange("disposition", "false_positive", None)]),
    (FP, TriagePatch(disposition="benign"), [FieldChange("disposition", "false_positive", "benign")]),
    (FP, TriagePatch(status="resolved"), []),  # already resolved: keeps its disposition
    (ACK, TriagePatch(status="acknowledged"), []),
    (NEW, TriagePatch(assignee="bob", set_assignee=True), [FieldChange("assignee", None, "bob")]),
    (TriageState(assignee="bob"), TriagePatch(assignee=None, set_assignee=True), [FieldChange("assignee", "bob", None)]),
    (TriageState(assignee="bob"), TriagePatch(), []),
])
def test_allowed_changes(current: TriageState, patch: TriagePatch, expected: list[FieldChange]) -> None:
    changes = plan(current, patch)
    assert changes == expected
    after = apply(current, changes)
    assert plan(after, patch) == []  # asking again changes nothing


@pytest.mark.parametrize(("current", "patch", "error"), [
    (ACK, TriagePatch(status="new"), TriageConflict),
    (FP, TriagePatch(status="new"), TriageConflict),
    (NEW, TriagePatch(disposition="benign"), TriageConflict),
    (ACK, TriagePatch(disposition="benign"), TriageConflict),
    (NEW, TriagePatch(status="resolved"), TriageInvalid),
    (NEW, TriagePatch(status="acknowledged", disposition="benign"), TriageInvalid),
    (NEW, TriagePatch(status="closed"), TriageInvalid),
    (FP, TriagePatch(disposition="maybe"), TriageInvalid),
])
def test_refused_changes(current: TriageState, patch: TriagePatch, error: type[Exception]) -> None:
    with pytest.raises(error):
        plan(current, patch)
