"""Silences: time-boxed mutes of pages for alerts matching rule, level, tags, fields.

A silenced alert is still recorded (store, Elasticsearch, stdout): silences mute
notifications, not evidence. A silence is bounded: it says who made it
(``created_by``, the caller's token name, never empty) and why (``comment``), it
ends within ``alerting.silence_max_duration_s``, and one that would mute every
alert (no matcher, or only wildcards) needs an admin who confirms it. Silences are kept in the alert store, so they
survive restarts, and mirrored in memory for the hot path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from detectors.alert import Alert
from detectors.model import LEVELS, level_rank
from service.errors import ServiceError

from .config import Level
from .matching import fields_match, glob_any
from .store import AlertStore

DEFAULT_MAX_DURATION_S = 30 * 86_400.0
"""The longest silence unless ``alerting.silence_max_duration_s`` says otherwise: 30 days."""


class SilenceMatch(BaseModel):
    """Every given criterion must hold (rule ids/tags accept ``*`` globs)."""

    model_config = ConfigDict(extra="forbid")
    rule_ids: list[str] = Field(default_factory=list)
    levels: list[Level] = Field(default_factory=list)
    max_level: Level | None = None
    tags: list[str] = Field(default_factory=list)
    fields: dict[str, str | list[str]] = Field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.rule_ids or self.levels or self.max_level or self.tags or self.fields)

    def matches_everything(self) -> bool:
        """No criterion, or only ones every alert passes (``*`` patterns, every level)."""
        def wild(patterns: list[str]) -> bool:
            return any(p and set(p) <= {"*"} for p in patterns)

        return ((not self.rule_ids or wild(self.rule_ids))
                and (not self.levels or set(LEVELS) <= set(self.levels))
                and (self.max_level is None or self.max_level == LEVELS[-1])
                and (not self.tags or wild(self.tags))
                and all(wild([v] if isinstance(v, str) else v) for v in self.fields.values()))


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    match: SilenceMatch
    duration_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    ends_at: float | None = Field(default=None, allow_inf_nan=False)
    """Unix seconds; either this or ``duration_s``; within ``alerting.silence_max_duration_s``."""
    comment: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    """Why the alerts are muted (required: the next on-call reads it)."""
    confirm_wildcard: bool = False
    """An admin's confirmation that a silence matching every alert is meant."""


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    match: SilenceMatch
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, alert: Alert) -> bool:
        m = self.match
        if m.rule_ids and not glob_any(m.rule_ids, (alert.rule.id, alert.rule.title)):
            return False
        if m.levels and alert.level not in m.levels:
            return False
        if m.max_level and alert.rank > level_rank(m.max_level):
            return False
        if m.tags and not glob_any(m.tags, alert.rule.tags):
            return False
        return not (m.fields and not fields_match(alert, m.fields))

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "match": self.match.model_dump(exclude_defaults=True),
                               "starts_at": self.starts_at, "ends_at": self.ends_at,
                               "comment": self.comment, "created_by": self.created_by}
        if now is not None:
            doc["active"] = self.active(now)
        return doc


class SilenceError(ServiceError, ValueError):
    """A silence request that cannot be granted as asked (422)."""


class SilenceForbidden(SilenceError):
    """A silence only an admin may create (one matching every alert) (403)."""


class Silences:
    """Silences in memory (the hot path reads only these), saved to the store on every change."""

    def __init__(self, store: AlertStore) -> None:
        self._store = store
        self._all: dict[str, Silence] = {}
        self._active: tuple[Silence, ...] = ()

    def load(self) -> None:
        """Read the saved silences from the (open) store, replacing those in memory."""
        self._all = {}
        for doc in self._store.load_silences():
            s = Silence(id=doc["id"], match=SilenceMatch(**doc["match"]), starts_at=doc["starts_at"],
                        ends_at=doc["ends_at"], comment=doc.get("comment", ""),
                        created_by=doc.get("created_by", ""))
            self._all[s.id] = s
        self._active = tuple(self._all.values())

    def create(self, req: SilenceRequest, now: float, *, created_by: str, admin: bool = False,
               max_duration_s: float = DEFAULT_MAX_DURATION_S) -> Silence:
        """A new silence by ``created_by``; raises :class:`SilenceError` (or :class:`SilenceForbidden`
        for a wildcard silence from a non-admin) naming what is wrong."""
        if not created_by:
            raise SilenceError("a silence needs its creator's name")
        if req.match.matches_everything():
            what = "no matcher" if req.match.is_empty() else "only wildcards"
            if not admin:
                raise SilenceForbidden(f"a silence with {what} mutes every alert: only an admin may create one")
            if not req.confirm_wildcard:
                raise SilenceError(f"a silence with {what} mutes every alert: give a matcher (rule_ids, levels, "
                                   "max_level, tags, fields), or set confirm_wildcard: true")
        if req.ends_at is not None and req.duration_s is not None:
            raise SilenceError("give duration_s or ends_at, not both")
        ends = req.ends_at if req.ends_at is not None else now + (req.duration_s or 0)
        if ends <= now:
            raise SilenceError("a silence must end in the future (give duration_s or a later ends_at)")
        if ends - now > max_duration_s:
            raise SilenceError(f"a silence may last at most {max_duration_s / 86_400:g} days "
                               f"(alerting.silence_max_duration_s: {max_duration_s:.0f}); give a shorter "
                               "duration_s or an earlier ends_at")
        s = Silence(id=uuid.uuid4().hex, match=req.match, starts_at=now, ends_at=ends, comment=req.comment,
                    created_by=created_by)
        self._store.save_silence(s.id, s.starts_at, s.ends_at, s.to_dict())
        self._all[s.id] = s
        self._refresh(now)
        return s

    def expire(self, silence_id: str, now: float) -> Silence | None:
        old = self._all.get(silence_id)
        if old is None:
            return None
        s = Silence(old.id, old.match, old.starts_at, min(old.ends_at, now), old.comment, old.created_by)
        self._store.save_silence(s.id, s.starts_at, s.ends_at, s.to_dict())
        self._all[s.id] = s
        self._refresh(now)
        return s

    def list(self, now: float, include_expired: bool = False) -> list[Silence]:
        return [s for s in self._all.values() if include_expired or s.active(now)]

    def _refresh(self, now: float) -> None:
        self._active = tuple(s for s in self._all.values() if s.ends_at > now)

    def silenced_by(self, alert: Alert, now: float) -> Silence | None:
        for s in self._active:
            if s.active(now) and s.matches(alert):
                return s
        return None
