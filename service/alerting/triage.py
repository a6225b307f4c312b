"""Alert triage: the status workflow, dispositions and the rules a change must follow (no I/O).

An alert is ``new`` when stored, ``acknowledged`` once someone looks at it and
``resolved`` with a disposition (``true_positive``, ``false_positive`` or
``benign``). Allowed moves::

    new -> acknowledged -> resolved
    new -> resolved                  (resolve at once)
    resolved -> acknowledged         (reopen: the disposition is cleared)
    resolved -> resolved             (with another disposition: reclassify)

Nothing goes back to ``new``; resolving needs a disposition; a disposition alone
is only accepted on a resolved alert. A change that asks for what already holds
is no change (nothing is written, nothing recorded). :func:`plan` turns a
:class:`TriagePatch` into the field changes to write, or raises
:class:`TriageConflict` (HTTP 409) or :class:`TriageInvalid` (HTTP 422).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import ServiceError

STATUSES = ("new", "acknowledged", "resolved")
DISPOSITIONS = ("true_positive", "false_positive", "benign")
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"acknowledged", "resolved"}),
    "acknowledged": frozenset({"resolved"}),
    "resolved": frozenset({"acknowledged", "resolved"}),
}
"""Status moves to another status (``resolved -> resolved`` changes the disposition)."""

MAX_ASSIGNEE = 128
"""Characters of an assignee name."""
MAX_NOTE = 10_000
"""Characters of one note."""
MAX_NOTES = 1_000
"""Notes one alert may hold (append-only, so the bound is on count)."""


class TriageError(ServiceError):
    """A triage change that cannot be applied."""


class TriageConflict(TriageError):
    """The change does not fit the alert's current state (HTTP 409)."""


class TriageInvalid(TriageError):
    """The change contradicts itself (resolve without a disposition; HTTP 422)."""


@dataclass(frozen=True, slots=True)
class TriageState:
    status: str = "new"
    disposition: str | None = None
    assignee: str | None = None


@dataclass(frozen=True, slots=True)
class TriagePatch:
    """What a caller asks to change; ``None`` status/disposition: leave as is. ``assignee``: leave as is
    unless ``set_assignee`` (then ``None`` unassigns)."""

    status: str | None = None
    disposition: str | None = None
    assignee: str | None = None
    set_assignee: bool = False

    def empty(self) -> bool:
        return self.status is None and self.disposition is None and not self.set_assignee


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    old: str | None
    new: str | None


def plan(current: TriageState, patch: TriagePatch) -> list[FieldChange]:
    """The field changes ``patch`` makes to ``current`` (empty: nothing to do); raises a :class:`TriageError`."""
    if patch.status is not None and patch.status not in STATUSES:
        raise TriageInvalid(f"status must be one of {list(STATUSES)}")
    if patch.disposition is not None and patch.disposition not in DISPOSITIONS:
        raise TriageInvalid(f"disposition must be one of {list(DISPOSITIONS)}")
    status, disposition = current.status, current.disposition
    target = patch.status
    if target is None and patch.disposition is not None:
        if current.status != "resolved":
            raise TriageConflict(f"a disposition is set when resolving; the alert is {current.status}")
        target = "resolved"
    if target is not None:
        if target == "resolved":
            wanted = patch.disposition or (current.disposition if current.status == "resolved" else None)
            if wanted is None:
                raise TriageInvalid("resolving needs a disposition: " + ", ".join(DISPOSITIONS))
            moves = current.status != "resolved" or wanted != current.disposition
            if moves and target not in TRANSITIONS[current.status]:
                raise TriageConflict(f"an alert cannot go from {current.status} to {target}")
            status, disposition = "resolved", wanted
        else:
            if patch.disposition is not None:
                raise TriageInvalid("a disposition is only given when resolving")
            if target != current.status:
                if target not in TRANSITIONS[current.status]:
                    raise TriageConflict(f"an alert cannot go from {current.status} to {target}")
                status, disposition = target, None
    changes = []
    if status != current.status:
        changes.append(FieldChange("status", current.status, status))
    if disposition != current.disposition:
        changes.append(FieldChange("disposition", current.disposition, disposition))
    if patch.set_assignee and patch.assignee != current.assignee:
        changes.append(FieldChange("assignee", current.assignee, patch.assignee))
    return changes


def apply(current: TriageState, changes: list[FieldChange]) -> TriageState:
    values = {"status": current.status, "disposition": current.disposition, "assignee": current.assignee}
    for change in changes:
        values[change.field] = change.new
    return TriageState(status=values["status"] or "new", disposition=values["disposition"],
                       assignee=values["assignee"])
