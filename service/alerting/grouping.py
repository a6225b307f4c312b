"""Grouping of pages: one page per receiver, rule and group key.

The first alert of a group triggers a page at once. Repeats only raise the
group's count; at most every ``update_interval_s`` an update with the new
count and last time goes out (same dedup key, so pagers fold it into the open
incident). A group quiet for ``window_s`` is resolved and forgotten.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from detectors.alert import Alert, iso_time

from .config import GroupingSettings
from .matching import as_text, field_value


def page_record(action: str, group: Group, now: float, base_url: str, ends_hint: float = 0.0) -> dict[str, Any]:
    """The spooled form of a page: everything a receiver needs, JSON-ready."""
    a = group.sample
    rule = a.rule
    return {
        "kind": "page",
        "action": action,
        "receiver": group.receiver,
        "dedup_key": group.dedup_key,
        "group": dict(zip(group.fields, group.values, strict=True)),
        "rule": {"id": rule.id, "name": rule.title, "author": rule.author or "unknown",
                 "description": rule.description, "reference": list(rule.references), "kind": rule.kind},
        "level": a.level,
        "severity": a.severity,
        "tags": list(rule.tags),
        "techniques": list(a.threat.technique_ids),
        "tactics": list(a.threat.tactic_names),
        "count": group.count,
        "first": iso_time(group.first),
        "last": iso_time(group.last),
        "at": iso_time(now),
        "ends_hint": iso_time(max(ends_hint, now)),
        "alert_id": a.id,
        "url": f"{base_url}/api/v1/alerts/{a.id}",
        "summary": a.summary(),
        "source": {"token": a.origin.token(), "input": a.origin.input, **a.logsource.as_dict()},
        "matched": [{"field": n, "value": as_text(v)[:512]} for n, v in a.matched[:20]],
    }


@dataclass(slots=True)
class Group:
    receiver: str
    dedup_key: str
    fields: tuple[str, ...]
    values: tuple[str, ...]
    sample: Alert
    first: float
    last: float
    seen: float
    count: int = 1
    sent_count: int = 1
    sent_at: float = 0.0


class Grouper:
    def __init__(self, settings: GroupingSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url
        self._groups: dict[tuple[str, str, tuple[str, ...]], Group] = {}

    def add(self, receiver: str, alert: Alert, now: float) -> dict[str, Any] | None:
        """Returns a trigger page for a new group, None when counted into an open one."""
        fields = tuple(self.settings.group_by)
        values = tuple(as_text(field_value(alert, f)) for f in fields)
        key = (receiver, alert.rule.id, values)
        group = self._groups.get(key)
        if group is not None:
            if group.sample.id == alert.id:  # a retried batch: page again, dedup key keeps it one
                return page_record("trigger", group, now, self.base_url, self._hint(now))
            group.count += 1
            group.last = max(group.last, alert.timestamp)
            group.seen = now
            return None
        digest = hashlib.sha256("\x1f".join((alert.rule.id, *values)).encode()).hexdigest()[:32]
        group = Group(receiver, f"pipesentry-{digest}", fields, values, alert, alert.timestamp,
                      alert.timestamp, now, sent_at=now)
        self._groups[key] = group
        if len(self._groups) > self.settings.max_groups:
            self._groups.pop(next(iter(self._groups)))
        return page_record("trigger", group, now, self.base_url, self._hint(now))

    def _hint(self, now: float) -> float:
        """When a firing page may be considered over if nothing more is heard."""
        return now + self.settings.window_s + self.settings.update_interval_s

    def is_open(self, receiver: str, alert: Alert) -> bool:
        values = tuple(as_text(field_value(alert, f)) for f in self.settings.group_by)
        return (receiver, alert.rule.id, values) in self._groups

    def tick(self, now: float) -> list[dict[str, Any]]:
        """Updates for groups whose count moved, resolves for quiet groups."""
        out: list[dict[str, Any]] = []
        quiet = []
        for key, g in self._groups.items():
            if now - g.seen >= self.settings.window_s:
                quiet.append(key)
                out.append(page_record("resolve", g, now, self.base_url))
            elif g.count != g.sent_count and now - g.sent_at >= self.settings.update_interval_s:
                g.sent_count, g.sent_at = g.count, now
                out.append(page_record("update", g, now, self.base_url, self._hint(now)))
        for key in quiet:
            del self._groups[key]
        return out

    def __len__(self) -> int:
        return len(self._groups)
