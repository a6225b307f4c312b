"""The streaming correlation engine: event-time windows per correlation and group key.

Time model (see docs/correlation.md for the full semantics):

* Events carry their own time ``ts`` (epoch seconds); the engine never reads a
  clock. ``max_seen`` is the highest ``ts`` seen and the watermark is
  ``max_seen - allowed_lateness``. Events are buffered until the watermark
  reaches them and are then applied in ``(ts, arrival)`` order, so a bounded
  amount of disorder changes nothing; an event older than what was already
  applied is *late* and skipped (counted). With no lateness allowed the
  buffer is bypassed.
* Immediate conditions (``gt``/``gte``) are decided at every event over the
  sliding window ``[ts - timespan, ts]``; when one fires the group's window is
  reset, so its evidence cannot fire again.
* Deferred conditions (``lt``, ``lte``, ``eq``, ``neq``, value shares) use a
  window opened by a group's first event at ``a`` and covering ``[a, a + timespan]``;
  it is decided when the watermark passes ``a + timespan``.
* A correlation's alert is fed at once to the correlations that reference it (a ``keyed`` engine
  lists it in :attr:`CorrelationEngine.chained` instead: the parent may live elsewhere).
"""

from __future__ import annotations

import heapq
import json
import math
from collections import ChainMap, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detectors.correlation.fields import as_number, key_part
from detectors.correlation.spec import NUMERIC_TYPES, SLOT_TYPES, CorrelationSpec
from detectors.correlation.windows import Entry, Window
from detectors.event import MISSING, get
from detectors.model import Event, Match

SNAPSHOT_VERSION = 1
SKIP_REASONS: tuple[str, ...] = (
    "missing_timestamp", "late", "missing_group_by", "missing_value_field", "non_numeric_value",
    "evicted", "buffer_overflow",
)
"""Counter names for inputs that did not count (``evicted`` = a group's state dropped by the LRU)."""

_SWEEP_EVERY = 1024
KEYED_SEPARATOR = "\x1f"
KEYED_NAMES = 4096
"""(correlation, rules) pairs whose indexed rule names :meth:`CorrelationEngine.apply_keyed` keeps."""


def _as_time(ts: Any) -> float | None:
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    return float(ts)


@dataclass(frozen=True, slots=True)
class Limits:
    max_keys: int = 100_000
    """Group keys kept per correlation; the least recently updated is evicted beyond it."""
    allowed_lateness: float = 0.0
    """Seconds of event-time disorder absorbed by buffering (alerts are delayed by as much)."""
    max_pending: int = 100_000
    """Events buffered for reordering; beyond it the oldest is applied at once."""
    evidence_cap: int = 20
    """Contributing events/alerts listed in an alert's details."""

    def __post_init__(self) -> None:
        if self.max_keys < 1 or self.max_pending < 1 or self.evidence_cap < 0:
            raise ValueError("max_keys and max_pending must be at least 1, evidence_cap at least 0")
        if not 0 <= self.allowed_lateness < math.inf:
            raise ValueError("allowed_lateness must be a finite number of seconds >= 0")


@dataclass(frozen=True, slots=True)
class Chained:
    """A correlation alert as an input of a correlation referencing it (``keyed`` engines)."""

    parent: CorrelationSpec
    child: str
    """The referenced correlation's id (the parent's slot)."""
    context: Mapping[str, Any]
    """The alert's group and value, then the firing input's fields: what the parent reads."""
    ts: float
    ref: str
    """The alert's key: the parent's evidence for it."""


class _Node:
    """One correlation at run time: its spec, its groups, and who consumes its alerts."""

    __slots__ = ("check", "deferred", "groups", "index", "numeric", "parents", "single", "span", "spec",
                 "suppressed", "sweep")

    def __init__(self, spec: CorrelationSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.groups: OrderedDict[Any, Window] = OrderedDict()
        self.parents: list[tuple[_Node, int]] = []
        self.deferred = spec.deferred
        self.check = spec.condition.check
        self.span = spec.span
        self.single = len(spec.group_by) == 1
        self.numeric = spec.type in NUMERIC_TYPES and not spec.frequency_mode
        self.suppressed = False
        self.sweep = 0


class CorrelationEngine:
    """Feed it every event (with the base-rule matches of that event) in roughly time order."""

    def __init__(self, specs: Sequence[CorrelationSpec], limits: Limits | None = None, *,
                 keyed: bool = False) -> None:
        self.limits = limits or Limits()
        self.keyed = keyed
        """Index the base rules by ``<correlation id> KEYED_SEPARATOR <rule id>`` (see :meth:`process_keyed`):
        each input feeds the one correlation it was keyed for (``state.scope: keyed``, stage 2).
        Referenced correlations are indexed the same way, and an alert is not fed to the
        correlations referencing it but listed in :attr:`chained` (their group key may differ)."""
        self.chained: list[Chained] = []
        """``keyed``: inputs for referencing correlations, to be re-keyed by the caller (and taken:
        the caller empties the list)."""
        self._nodes = [_Node(spec, i) for i, spec in enumerate(specs)]
        by_id = {node.spec.info.id: node for node in self._nodes}
        self._by_rule: dict[str, list[tuple[_Node, int]]] = {}
        generate_true: set[str] = set()
        generate_false: set[str] = set()
        for node in self._nodes:
            for slot_index, slot in enumerate(node.spec.slots):
                if slot.correlation:
                    by_id[slot.rule_id].parents.append((node, slot_index))
                    if keyed:
                        name = f"{node.spec.info.id}{KEYED_SEPARATOR}{slot.rule_id}"
                        self._by_rule.setdefault(name, []).append((node, slot_index))
                else:
                    name = f"{node.spec.info.id}{KEYED_SEPARATOR}{slot.rule_id}" if keyed else slot.rule_id
                    self._by_rule.setdefault(name, []).append((node, slot_index))
                (generate_true if node.spec.generate else generate_false).add(slot.rule_id)
        self.suppressed_rule_ids: frozenset[str] = frozenset(generate_false - generate_true)
        for node in self._nodes:
            node.suppressed = node.spec.info.id in self.suppressed_rule_ids
        self.counters: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        self._now = -math.inf
        self._max_seen = -math.inf
        self._seq = 0
        self._keyed_names: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self._pending: list[tuple[float, int, Event, list[str], Any]] = []
        self._deadlines: list[tuple[float, int, int, Any]] = []
        self._direct = self.limits.allowed_lateness <= 0

    # -- public API -----------------------------------------------------------------

    @property
    def specs(self) -> tuple[CorrelationSpec, ...]:
        return tuple(node.spec for node in self._nodes)

    @property
    def watermark(self) -> float:
        """Event time up to which everything has been applied and decided."""
        return self._now

    def active_keys(self) -> int:
        return sum(len(node.groups) for node in self._nodes)

    def process(self, event: Event, matches: Iterable[Match], ts: float | None, ref: Any = None) -> list[Match]:
        """Apply one event; returns the correlation alerts that became due (possibly of earlier events).

        Call it for every event, matching or not: events move event time forward,
        which closes deferred windows. ``ref`` identifies the event in alert
        evidence (e.g. its origin token); it must be JSON-serialisable.
        """
        rule_ids: list[str] | None = None
        by_rule = self._by_rule
        for match in matches:
            if match.rule.id in by_rule:
                if rule_ids is None:
                    rule_ids = [match.rule.id]
                else:
                    rule_ids.append(match.rule.id)
        return self._process(event, rule_ids, ts, ref)

    def process_keyed(self, correlation: str, rule_ids: Sequence[str], source: Mapping[str, Any],
                      ts: float | None, ref: Any = None) -> list[Match]:
        """Apply one state record of ``state.scope: keyed``: ``source`` (the fields the aggregation
        reads) matched ``rule_ids``, which feed ``correlation`` only (an engine made with ``keyed``).

        Unknown correlations or rules (a ruleset that changed under the record) are ignored.
        """
        prefix = correlation + KEYED_SEPARATOR
        by_rule = self._by_rule
        names = [prefix + rule for rule in rule_ids if prefix + rule in by_rule]
        return self._process(source, names or None, ts, ref)

    def apply_keyed(self, correlation: str, rule_ids: Sequence[str], source: Mapping[str, Any], ts: float,
                    ref: Any = None) -> list[Match]:
        """:meth:`process_keyed` then :meth:`release` of the record's own time, as stage 2 applies
        a record once its watermark passed it: the same matches, counters and state, without the
        buffer's round trip when nothing waits in it and its own watermark (``max_seen`` less the
        allowed lateness) would release nothing and move no time on (the calls themselves else)."""
        if (self._pending or type(ts) is not float or not math.isfinite(ts) or self.limits.max_pending < 1
                or not max(self._max_seen, ts) - self.limits.allowed_lateness < min(ts, self._now)
                or self._direct):
            return self.process_keyed(correlation, rule_ids, source, ts, ref) + self.release(ts)
        names = self._keyed_names.get((correlation, rule_ids)) if type(rule_ids) is tuple else None
        if names is None:
            prefix = correlation + KEYED_SEPARATOR
            by_rule = self._by_rule
            names = [prefix + rule for rule in rule_ids if prefix + rule in by_rule]
            if type(rule_ids) is tuple:
                if len(self._keyed_names) >= KEYED_NAMES:
                    self._keyed_names.clear()
                self._keyed_names[(correlation, rule_ids)] = names
        if names and ts < self._now:
            self.counters["late"] += 1
            names = []
        if ts > self._max_seen:
            self._max_seen = ts
        out: list[tuple[_Node, Match]] = []
        if names:  # buffered and released at once: its time is reached, then it applies
            self._seq += 1
            self._close_before(ts, out)
            self._now = ts
            self._apply(source, names, ts, ref, out)
        elif ts > self._now:
            self._close_before(ts, out)
            self._now = ts
        return self._visible(out) if out else []

    def release(self, watermark: float) -> list[Match]:
        """Apply buffered events up to ``watermark`` and decide the windows it closes, whatever
        ``allowed_lateness`` says (an external watermark: ``state.scope: keyed``)."""
        if not math.isfinite(watermark):
            return []
        out: list[tuple[_Node, Match]] = []
        self._release(watermark, out)
        return self._visible(out)

    def _process(self, event: Mapping[str, Any], rule_ids: list[str] | None, ts: float | None,
                 ref: Any) -> list[Match]:
        by_rule = self._by_rule
        if type(ts) is not float:
            ts = _as_time(ts)
        if ts is None or not -math.inf < ts < math.inf:
            if rule_ids is not None:
                self.counters["missing_timestamp"] += 1
            return []
        if rule_ids is not None and ts < self._now:
            self.counters["late"] += 1
            rule_ids = None
        if ts > self._max_seen:
            self._max_seen = ts
        out: list[tuple[_Node, Match]] = []
        if self._direct and not self._pending:
            if ts >= self._now:
                if self._deadlines and self._deadlines[0][0] < ts:
                    self._close_before(ts, out)
                self._now = ts
                if rule_ids is not None:
                    if len(rule_ids) == 1:
                        for node, slot in by_rule[rule_ids[0]]:
                            self._feed(node, slot, event, ts, ref, out)
                    else:
                        self._apply(event, rule_ids, ts, ref, out)
            return self._visible(out) if out else []
        if rule_ids is not None:
            self._seq += 1
            heapq.heappush(self._pending, (ts, self._seq, event, rule_ids, ref))
            if len(self._pending) > self.limits.max_pending:
                self.counters["buffer_overflow"] += 1
                self._release(self._pending[0][0], out)
        self._release(self._max_seen - self.limits.allowed_lateness, out)
        return self._visible(out)

    def advance(self, ts: float) -> list[Match]:
        """Assert that event time has reached ``ts`` (a heartbeat when no events flow)."""
        if not math.isfinite(ts):
            return []
        self._max_seen = max(self._max_seen, float(ts))
        out: list[tuple[_Node, Match]] = []
        self._release(self._max_seen - self.limits.allowed_lateness, out)
        return self._visible(out)

    def flush(self) -> list[Match]:
        """End of a finite stream: apply every buffered event and decide windows that ended.

        Windows still open at the last event's time are not decided (their end
        was never observed), the same rule a batch backend applies to its horizon.
        """
        out: list[tuple[_Node, Match]] = []
        self._release(self._max_seen, out)
        return self._visible(out)

    # -- time -----------------------------------------------------------------------

    def _release(self, watermark: float, out: list[tuple[_Node, Match]]) -> None:
        pending = self._pending
        while pending and pending[0][0] <= watermark:
            ts, _, event, rule_ids, ref = heapq.heappop(pending)
            if ts < self._now:  # only after a forced (overflow) release
                self.counters["late"] += 1
                continue
            self._close_before(ts, out)
            self._now = ts
            self._apply(event, rule_ids, ts, ref, out)
        if watermark > self._now:
            self._close_before(watermark, out)
            self._now = watermark

    def _close_before(self, ts: float, out: list[tuple[_Node, Match]]) -> None:
        """Decide every deferred window whose end is strictly before ``ts``, in end order."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] < ts:
            end, _, index, key = heapq.heappop(deadlines)
            node = self._nodes[index]
            window = node.groups.get(key)
            if window is None or window.anchor is None or window.anchor + node.spec.span != end:
                continue  # evicted, or already decided
            self._decide(node, key, window, out)

    def _decide(self, node: _Node, key: Any, window: Window, out: list[tuple[_Node, Match]]) -> None:
        anchor = window.anchor if window.anchor is not None else 0.0
        end = anchor + node.spec.span
        fired, value, extra = window.evaluate(node.spec.condition)
        if fired:
            self._emit(node, key, window, end, value, extra, anchor, None, out)
        window.clear()
        window.anchor = None

    # -- applying events ------------------------------------------------------------

    def _apply(self, event: Event, rule_ids: list[str], ts: float, ref: Any,
               out: list[tuple[_Node, Match]]) -> None:
        by_rule = self._by_rule
        if len(rule_ids) == 1:
            for node, slot in by_rule[rule_ids[0]]:
                self._feed(node, slot, event, ts, ref, out)
            return
        fed: set[int] = set()
        for rule_id in rule_ids:
            for node, slot in by_rule[rule_id]:
                # One event counts once for event/value types, once per rule for temporal types.
                if node.spec.type not in SLOT_TYPES:
                    if node.index in fed:
                        continue
                    fed.add(node.index)
                self._feed(node, slot, event, ts, ref, out)

    def _feed(self, node: _Node, slot_index: int, source: Mapping[str, Any], ts: float, ref: Any,
              out: list[tuple[_Node, Match]]) -> None:
        spec = node.spec
        slot = spec.slots[slot_index]
        shown: tuple[Any, ...]
        if node.single:
            name = slot.group_fields[0]
            raw = source.get(name, MISSING)
            if raw is MISSING or raw is None or type(raw) is list:
                raw = get(source, name)
                if raw is MISSING:
                    self.counters["missing_group_by"] += 1
                    return
            key: Any = raw.lower() if type(raw) is str else key_part(raw)
            shown = (raw,)
        else:
            shown = tuple(get(source, name) for name in slot.group_fields)
            if MISSING in shown:
                self.counters["missing_group_by"] += 1
                return
            key = tuple(key_part(v) for v in shown)
        value: Any = None
        if slot.value_fields:
            value = self._value(node.numeric, source, slot.value_fields)
            if value is MISSING:
                return

        groups = node.groups
        window = groups.get(key)
        if window is None:
            window = spec.new_window()
            groups[key] = window
            if len(groups) > self.limits.max_keys:
                groups.popitem(last=False)
                self.counters["evicted"] += 1
            node.sweep += 1
            if node.sweep >= _SWEEP_EVERY:
                node.sweep = 0
                self._sweep(node, ts)
        else:
            groups.move_to_end(key)
        window.shown = shown
        entry: Entry = (ts, slot_index, value, ref)
        if node.deferred:
            if window.anchor is not None and ts > window.anchor + spec.span:
                self._decide(node, key, window, out)
            if window.anchor is None:
                window.anchor = ts
                self._seq += 1
                heapq.heappush(self._deadlines, (ts + spec.span, self._seq, node.index, key))
            window.add(entry)
            return
        window.add(entry)
        cutoff = ts - node.span
        if window.entries[0][0] < cutoff:
            window.expire(cutoff)
        metric = window.metric()
        if node.check(metric):
            start = window.start()
            self._emit(node, key, window, ts, metric, None, ts if start is None else start, source, out)
            window.clear()

    def _value(self, numeric: bool, source: Mapping[str, Any], fields: tuple[str, ...]) -> Any:
        if len(fields) == 1:
            raw = source.get(fields[0], MISSING)
            if raw is MISSING or raw is None or type(raw) is list:
                raw = get(source, fields[0])
                if raw is MISSING:
                    self.counters["missing_value_field"] += 1
                    return MISSING
            if numeric:
                number = as_number(raw)
                if number is None:
                    self.counters["non_numeric_value"] += 1
                    return MISSING
                return number
            return raw.lower() if type(raw) is str else key_part(raw)
        raws = [get(source, name) for name in fields]
        if MISSING in raws:
            self.counters["missing_value_field"] += 1
            return MISSING
        return json.dumps([key_part(v) for v in raws], default=str)

    def _sweep(self, node: _Node, now: float) -> None:
        """Drop groups, least recently updated first, whose windows hold nothing alive."""
        cutoff = now - node.spec.span
        groups = node.groups
        while groups:
            key, window = next(iter(groups.items()))
            if window.anchor is not None or (window.entries and window.entries[-1][0] >= cutoff):
                return
            del groups[key]

    # -- alerts ---------------------------------------------------------------------

    def _emit(self, node: _Node, key: Any, window: Window, ts: float, value: float,
              extra: Mapping[str, Any] | None, start: float, source: Mapping[str, Any] | None,
              out: list[tuple[_Node, Match]]) -> None:
        spec = node.spec
        if window.last_start == start:
            window.same_start += 1
        else:
            window.last_start, window.same_start = start, 0
        key_text = json.dumps(key if isinstance(key, tuple) else [key], default=str, separators=(",", ":"))
        alert_key = f"{spec.info.id}|{key_text}|{start!r}"
        if window.same_start:
            alert_key += f"|{window.same_start}"
        group = dict(zip(spec.group_by, window.shown, strict=True))
        evidence = window.evidence(self.limits.evidence_cap)
        contributors = [
            {"rule": spec.slots[slot].rule_id, "ts": at, **({"ref": ref} if ref is not None else {})}
            for at, slot, _, ref in evidence
        ]
        details: dict[str, Any] = {
            "type": spec.type,
            "group": group,
            "value": value if not float(value).is_integer() else int(value),
            "condition": spec.condition.as_dict(),
            "timespan": spec.timespan,
            "window_start": start,
            "window_end": ts,
            "contributors": contributors,
            "contributor_count": len(window.entries),
            "alert_key": alert_key,
        }
        if spec.value_field:
            details["field"] = list(spec.value_field)
        if extra:
            details.update(extra)
        match = Match(rule=spec.info, fields=tuple(group.items()), details=details)
        out.append((node, match))
        if node.parents:
            context: Mapping[str, Any] = {**group, spec.type: details["value"]}
            if source is not None:
                context = ChainMap(dict(context), dict(source))
            if self.keyed:
                flat = dict(context)
                self.chained.extend(Chained(parent.spec, spec.info.id, flat, ts, alert_key)
                                    for parent, _ in node.parents)
                return
            for parent, slot_index in node.parents:
                self._feed(parent, slot_index, context, ts, alert_key, out)

    @staticmethod
    def _visible(out: list[tuple[_Node, Match]]) -> list[Match]:
        return [match for node, match in out if not node.suppressed]

    # -- snapshots ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state: windows, reorder buffer, clocks and counters."""
        from detectors.correlation.snapshot import dump

        return dump(self)

    def restore(self, state: Mapping[str, Any]) -> list[str]:
        """Load a :meth:`snapshot`; returns warnings (state of changed or removed rules is dropped)."""
        from detectors.correlation.snapshot import load

        return load(self, state)
