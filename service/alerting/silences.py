"""Silences: time-boxed mutes of pages for alerts matching rule, level, tags, fields.

A silenced alert is still recorded (store, Elasticsearch, stdout): silences mute
notifications, not evidence. Silences are kept in the alert store, so they
survive restarts, and mirrored in memory for the hot path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from detectors.alert import Alert
from detectors.model import level_rank
from service.errors import ServiceError

from .config import Level
from .matching import fields_match, glob_any
from .store import AlertStore


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


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    match: SilenceMatch
    duration_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    ends_at: float | None = Field(default=None, allow_inf_nan=False)
    """Unix seconds; either this or ``duration_s``. Finite: an infinite silence would mute a rule forever."""
    comment: str = ""
    created_by: str = ""


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
    pass


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

    def create(self, req: SilenceRequest, now: float) -> Silence:
        if req.match.is_empty():
            raise SilenceError("a silence needs at least one matcher (rule_ids, levels, max_level, tags, fields)")
        ends = req.ends_at if req.ends_at is not None else now + (req.duration_s or 0)
        if ends <= now:
            raise SilenceError("a silence must end in the future (give duration_s or a later ends_at)")
        s = Silence(id=uuid.uuid4().hex, match=req.match, starts_at=now, ends_at=ends, comment=req.comment,
                    created_by=req.created_by)
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
