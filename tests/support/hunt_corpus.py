"""The retro-hunt corpus: the demo stories' events and the rule pack's test events, by log source.

Shared by the differential test (``tests/integration/test_hunt_differential.py``) and
``bench/hunt.py``. Every group is one log source: its events go to one index (``index``) and to one
NDJSON file that ``pipesentry eval --logsource`` reads, line ``n`` being document ``n``, so an
(event, rule) pair is ``(index, line, rule id)`` on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from detectors.model import LogSource
from service.cli.event_files import parse_document, sibling_rule_logsource

KEYWORD_MAPPING: dict[str, Any] = {
    "date_detection": False,
    "dynamic_templates": [{"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}}],
}
"""Strings as ``keyword`` (what ECS maps most fields to, and what the backends' queries expect);
no date detection: one time-looking string must not fix a field's type for the rest."""


@dataclass
class Group:
    logsource: LogSource
    events: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    """Where each event came from (a demo story, a test file's match/nomatch item)."""

    @property
    def index(self) -> str:
        parts = [self.logsource.product or "any", self.logsource.category or "any", self.logsource.service or "any"]
        return "hunt-" + "-".join(re.sub(r"[^a-z0-9_]+", "_", p.lower()) for p in parts)

    def ndjson(self) -> bytes:
        return b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in self.events)


def _add(groups: dict[LogSource, Group], logsource: LogSource, event: Any, label: str) -> None:
    if isinstance(event, dict):
        groups.setdefault(logsource, Group(logsource)).events.append(event)
        groups[logsource].labels.append(label)


def build_corpus(rules_root: Path, *, demo: bool = True) -> list[Group]:
    """The corpus in a stable order. Test files written for a processing pipeline (their events are
    in another schema) and correlation test files (sequences) are left out: a hunt runs the pack's
    detection rules on raw events."""
    groups: dict[LogSource, Group] = {}
    if demo:
        from service.demo.corpus import generate
        from service.demo.sources import BY_NAME

        for item in generate(normal=False):
            _add(groups, BY_NAME[item.source].logsource, item.event, f"story:{item.story}")
    for path in sorted(rules_root.rglob("*.events.json")):
        doc = parse_document(path.read_bytes())
        sibling = sibling_rule_logsource(path)
        if doc is None or sibling is None or doc.pipeline or doc.has_sequences():
            continue
        for test_item in doc.items:
            _add(groups, sibling[1], test_item.event, f"{path.name}:{test_item.label}")
    return [groups[k] for k in sorted(groups, key=lambda ls: (ls.product or "", ls.category or "", ls.service or ""))]


def hunt_indices(groups: Iterable[Group]) -> list[dict[str, Any]]:
    """``hunt.indices`` for the corpus: one entry per group (no time field: the corpus spans years)."""
    return [{**g.logsource.as_dict(), "index": g.index, "time_field": None} for g in groups]
