"""Event files as ``pipesentry eval`` reads them besides NDJSON: JSON arrays and the rule pack's test files.

Shapes (sigma-rules/README.md, "Writing and testing a rule"):

- a JSON array of events: ``[{...}, {...}]``;
- a rule's test file ``X.events.json``: ``{"match": [...], "nomatch": [...]}`` (optionally
  ``"pipeline": "pipelines/P.pipeline"``), each list holding events or, for correlation rules,
  sequences of ``{"logsource": "product=X,...", "ts": <unix seconds>, "event": {...}}`` items.

Every event is re-serialised as one JSON line so the pipeline core reads it exactly as it reads
NDJSON; each keeps a label (``match[0]``, ``nomatch[1][2]``), its own log source and time where the
item gives them (``ts`` counts as the time the event is read at: an event without a time field of
its own takes it). Items that are not objects become lines the decoder rejects (bad lines). A
sequence is one case (:meth:`EventDocument.cases`): ``eval`` runs each on fresh state.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from detectors.model import LogSource
from detectors.yamlsafe import YamlError, YamlLimits, load_one
from service.errors import ServiceError

MAX_DOCUMENT_BYTES = 256 << 20
"""A JSON document input is read whole; larger ones must be NDJSON."""
TEST_FILE_SUFFIX = ".events.json"
_RULE_YAML_LIMITS = YamlLimits(max_bytes=1 << 20, max_depth=32, max_nodes=100_000)


class EventFileError(ServiceError, ValueError):
    """A JSON document input that cannot be read as events (the message says why, never a value)."""


@dataclass(frozen=True, slots=True)
class Item:
    label: str
    event: Any
    logsource: LogSource | None = None
    ts: float | None = None
    case: str = ""
    """The top-level entry the item belongs to (``match[0]`` for ``match[0][2]``)."""


@dataclass
class EventDocument:
    """The events of one JSON document input, in order."""

    items: list[Item] = field(default_factory=list)
    pipeline: str | None = None
    """The processing pipeline a rule's test file names (relative to the rule pack)."""

    def has_sequences(self) -> bool:
        """Whether some entry is a sequence of events (a correlation test case)."""
        return any(item.case != item.label for item in self.items)

    def cases(self) -> list[list[Item]]:
        """The items grouped by top-level entry, in order (a sequence is one case)."""
        groups: list[list[Item]] = []
        for item in self.items:
            if groups and groups[-1][0].case == item.case:
                groups[-1].append(item)
            else:
                groups.append([item])
        return groups

    def ndjson(self) -> io.BytesIO:
        """One line per item (the pipeline's input); line ``n`` is ``items[n - 1]``."""
        lines = [orjson.dumps(item.event, default=str) for item in self.items]
        return io.BytesIO(b"".join(line + b"\n" for line in lines))


def looks_like_document(name: str, head: bytes) -> bool:
    """Whether an input is a JSON document (array or test file) rather than NDJSON: a name ending in
    ``.json`` (not ``.ndjson``/``.jsonl``), or content starting with ``[``."""
    first = head.lstrip()[:1]
    return first == b"[" or (name.endswith(".json") and first == b"{")


def parse_document(data: bytes) -> EventDocument | None:
    """The events of a JSON document; None when ``data`` is not one JSON value (it may be NDJSON)."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise EventFileError(f"a JSON document input is limited to {MAX_DOCUMENT_BYTES >> 20} MiB; use NDJSON")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, list):
        return EventDocument(_items(doc, ""))
    if isinstance(doc, dict) and ("match" in doc or "nomatch" in doc):
        out = EventDocument()
        for key in ("match", "nomatch"):
            value = doc.get(key, [])
            if not isinstance(value, list):
                raise EventFileError(f"{key!r} must be a list of events")
            out.items.extend(_items(value, key))
        pipeline = doc.get("pipeline")
        out.pipeline = pipeline if isinstance(pipeline, str) else None
        return out
    if isinstance(doc, dict):
        return EventDocument([Item("[0]", doc, case="[0]")])  # a single event
    raise EventFileError(f"expected a JSON array of events or a rule test file, found a {type(doc).__name__}")


def _items(values: list[Any], label: str, case: str | None = None) -> list[Item]:
    items: list[Item] = []
    for index, value in enumerate(values):
        here = f"{label}[{index}]"
        if isinstance(value, list):  # a correlation test's ordered sequence
            items.extend(_items(value, here, case or here))
        elif isinstance(value, dict) and isinstance(value.get("event"), dict) \
                and set(value) <= {"event", "logsource", "ts"}:
            items.append(Item(here, value["event"], _logsource(value.get("logsource")), _ts(value.get("ts")),
                              case or here))
        else:
            items.append(Item(here, value, case=case or here))
    return items


def _logsource(value: Any) -> LogSource | None:
    if isinstance(value, str):
        try:
            return LogSource.parse(value)
        except ValueError as exc:
            raise EventFileError(f"bad logsource {value!r}: {exc}") from None
    if isinstance(value, dict):
        return LogSource(**{k: v for k, v in value.items() if k in ("product", "category", "service")
                            and isinstance(v, str)})
    return None


def _ts(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def sibling_rule_logsource(events_path: Path) -> tuple[Path, LogSource] | None:
    """For ``X.events.json``: ``X.yml`` beside it and its log source (None without one)."""
    if not events_path.name.endswith(TEST_FILE_SUFFIX):
        return None
    rule = events_path.with_name(events_path.name[: -len(TEST_FILE_SUFFIX)] + ".yml")
    try:
        doc = load_one(rule.read_text(encoding="utf-8"), limits=_RULE_YAML_LIMITS)
    except (OSError, UnicodeDecodeError, YamlError):
        return None
    ls = doc.get("logsource") if isinstance(doc, dict) else None
    if not isinstance(ls, dict):
        return None
    parts = {k: ls.get(k) for k in ("product", "category", "service")}
    if not any(isinstance(v, str) for v in parts.values()):
        return None
    return rule, LogSource(**{k: v if isinstance(v, str) else None for k, v in parts.items()})
