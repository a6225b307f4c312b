"""Grouping of pages: one page per receiver, rule and group key.

The first alert of a group triggers a page at once. Repeats only raise the
group's count; at most every ``update_interval_s`` an update with the new
count and last time goes out (same dedup key, so pagers fold it into the open
incident). A group quiet for ``window_s`` is resolved and forgotten.

Open groups are saved on shutdown and restored on start (:meth:`Grouper.snapshot`,
:meth:`Grouper.restore`), so an incident opened before a restart is still
resolved after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detectors.alert import Alert, iso_time

from .config import GroupingSettings
from .matching import as_text, field_value


def page_base(alert: Alert, receiver: str, dedup_key: str, group: dict[str, str], base_url: str) -> dict[str, Any]:
    """The fixed part of a group's pages (taken from its first alert), JSON-ready."""
    rule = alert.rule
    return {
        "kind": "page",
        "receiver": receiver,
        "dedup_key": dedup_key,
        "group": group,
        "rule": {"id": rule.id, "name": rule.title, "author": rule.author or "unknown",
                 "description": rule.description, "reference": list(rule.references), "kind": rule.kind},
        "level": alert.level,
        "severity": alert.severity,
        "tags": list(rule.tags),
        "techniques": list(alert.threat.technique_ids),
        "tactics": list(alert.threat.tactic_names),
        "alert_id": alert.id,
        "url": f"{base_url}/alerts/{alert.id}",  # the console's alert page (sign-in first)
        "summary": alert.summary(),
        "source": {"token": alert.origin.token(), "input": alert.origin.input, **alert.logsource.as_dict()},
        "matched": [{"field": n, "value": as_text(v)[:512]} for n, v in alert.matched[:20]],
    }


@dataclass(slots=True)
class Group:
    base: dict[str, Any]
    first: float
    last: float
    seen: float
    count: int = 1
    sent_count: int = 1
    sent_at: float = 0.0

    def page(self, action: str, now: float, ends_hint: float) -> dict[str, Any]:
        return {**self.base, "action": action, "count": self.count, "first": iso_time(self.first),
                "last": iso_time(self.last), "at": iso_time(now), "ends_hint": iso_time(max(ends_hint, now))}


def _as_is(receiver: str, base: dict[str, Any]) -> dict[str, Any]:
    return base


def _values_as_is(values: tuple[str, ...]) -> tuple[str, ...]:
    return values


class Grouper:
    def __init__(self, settings: GroupingSettings, base_url: str, *,
                 redact: Callable[[str, dict[str, Any]], dict[str, Any]] = _as_is,
                 redact_values: Callable[[tuple[str, ...]], tuple[str, ...]] = _values_as_is) -> None:
        self.settings = settings
        self.base_url = base_url
        self._redact = redact
        """Applied to a group's page base once, when the group opens: every page of it is sent redacted."""
        self._redact_values = redact_values
        """Applied to the group-by values of the key: groups (and their saved snapshot) are keyed by the
        redacted values (deterministic under the installation's key), never by a secret."""
        self._groups: dict[tuple[str, str, tuple[str, ...]], Group] = {}
        self._evicted: list[dict[str, Any]] = []

    def _hint(self, now: float) -> float:
        """When a firing page may be considered over if nothing more is heard."""
        return now + self.settings.window_s + self.settings.update_interval_s

    def _key(self, receiver: str, alert: Alert) -> tuple[str, str, tuple[str, ...]]:
        values = tuple(as_text(field_value(alert, f)) for f in self.settings.group_by)
        return receiver, alert.rule.id, self._redact_values(values) if values else values

    def add(self, receiver: str, alert: Alert, now: float) -> dict[str, Any] | None:
        """Returns a trigger page for a new group, None when counted into an open one."""
        key = self._key(receiver, alert)
        group = self._groups.get(key)
        if group is not None:
            if group.base["alert_id"] == alert.id:  # a retried batch: page again, the dedup key keeps it one
                return group.page("trigger", now, self._hint(now))
            group.count += 1
            group.last = max(group.last, alert.timestamp)
            group.seen = now
            return None
        values = key[2]
        digest = hashlib.sha256("\x1f".join((alert.rule.id, *values)).encode()).hexdigest()[:32]
        base = self._redact(receiver, page_base(alert, receiver, f"pipesentry-{digest}",
                                                dict(zip(self.settings.group_by, values, strict=True)),
                                                self.base_url))
        group = Group(base, alert.timestamp, alert.timestamp, now, sent_at=now)
        self._groups[key] = group
        if len(self._groups) > self.settings.max_groups:  # cap memory: close the oldest group
            oldest = self._groups.pop(next(iter(self._groups)))
            self._evicted.append(oldest.page("resolve", now, now))
        return group.page("trigger", now, self._hint(now))

    def is_open(self, receiver: str, alert: Alert) -> bool:
        return self._key(receiver, alert) in self._groups

    def tick(self, now: float) -> list[dict[str, Any]]:
        """Updates for groups whose count moved, resolves for quiet groups."""
        out, self._evicted = self._evicted, []
        quiet = []
        for key, g in self._groups.items():
            if now - g.seen >= self.settings.window_s:
                quiet.append(key)
                out.append(g.page("resolve", now, now))
            elif g.count != g.sent_count and now - g.sent_at >= self.settings.update_interval_s:
                g.sent_count, g.sent_at = g.count, now
                out.append(g.page("update", now, self._hint(now)))
        for key in quiet:
            del self._groups[key]
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"key": [k[0], k[1], list(k[2])], "base": g.base, "first": g.first, "last": g.last, "seen": g.seen,
                 "count": g.count, "sent_count": g.sent_count, "sent_at": g.sent_at}
                for k, g in self._groups.items()]

    def restore(self, items: list[dict[str, Any]], receivers: set[str]) -> int:
        """Reopen saved groups of receivers that still exist; returns how many."""
        n = 0
        for item in items:
            receiver, rule_id, values = item["key"]
            if receiver not in receivers:
                continue
            self._groups[(receiver, rule_id, tuple(values))] = Group(
                item["base"], item["first"], item["last"], item["seen"], item["count"], item["sent_count"],
                item["sent_at"])
            n += 1
        return n

    def __len__(self) -> int:
        return len(self._groups)
