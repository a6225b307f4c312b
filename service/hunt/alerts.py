"""A search hit turned into an alert: the streaming engine's model, author and id scheme.

The origin is the hit's place in the cluster (``input: hunt``, key ``<index>/<document id>``), so
the alert id, ``alert_id(rule id, "hunt:<index>/<id>")``, is the same every time the same rule
finds the same document: re-running a hunt upserts the alerts it already stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from detectors.alert import Alert, build_alert
from detectors.event import DEFAULT_TIME_FIELDS, event_time
from detectors.model import Match, Origin, RuleInfo

HUNT_INPUT = "hunt"


def hit_origin(index: str, doc_id: str) -> Origin:
    return Origin(input=HUNT_INPUT, key=f"{index}/{doc_id}")


@lru_cache(maxsize=256)
def _time_fields(first: str | None) -> tuple[str, ...]:
    """One tuple per field name: the engine caches its lookup plan by the tuple's identity."""
    return (first, *DEFAULT_TIME_FIELDS) if first else DEFAULT_TIME_FIELDS


def hit_alert(rule: RuleInfo, hit: Mapping[str, Any], time_field: str | None, now: float) -> Alert:
    """The alert ``rule`` raises for ``hit`` (``_index``, ``_id``, ``_source``); event time from
    ``time_field``, else the engine's usual time fields, else ``now``.

    ``matched`` is empty: the cluster says that a document matched, not which values did."""
    source = hit.get("_source")
    event: Mapping[str, Any] = source if isinstance(source, Mapping) else {}
    ts = event_time(event, _time_fields(time_field))
    origin = hit_origin(str(hit.get("_index", "")), str(hit.get("_id", "")))
    return build_alert(Match(rule), event, origin, event_time=ts if ts is not None else now, now=now,
                       logsource=rule.logsource)
