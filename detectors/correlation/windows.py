"""Per-group window state, one class per correlation type.

A window holds the entries ``(ts, slot, value, ref)`` of one group key in
event-time order: ``slot`` is the index of the referenced rule that matched,
``value`` the (normalised) value field for value_* types, ``ref`` the caller's
reference of the event or the child correlation's ``alert_key``. Each class
keeps whatever running aggregate makes its metric cheap, and can rebuild it
from the entries (snapshots store entries only).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from typing import Any

from detectors.correlation.condition import Condition

Entry = tuple[float, int, Any, Any]


def _ts(entry: Entry) -> float:
    return entry[0]


class Window:
    """Entries of one group plus the bookkeeping the engine needs.

    ``anchor`` is the start of an open deferred window (None in immediate mode
    or when no window is open); ``shown`` the group values as last spelled in
    an event; ``last_start``/``same_start`` make alert keys unique when two
    alerts of one group share a window start.
    """

    __slots__ = ("anchor", "entries", "last_start", "same_start", "shown")

    TRACKS = False
    """True when removing an entry must update a running aggregate (``_removed``)."""

    def __init__(self) -> None:
        # A list, not a deque: an empty deque costs ~600 bytes, and windows are
        # trimmed from the front in batches with one ``del``.
        self.entries: list[Entry] = []
        self.anchor: float | None = None
        self.shown: tuple[Any, ...] = ()
        self.last_start: float | None = None
        self.same_start = 0

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)

    def expire(self, cutoff: float) -> None:
        """Drop entries older than ``cutoff`` (the window's inclusive lower edge)."""
        entries = self.entries
        if not entries or entries[0][0] >= cutoff:
            return
        n = bisect.bisect_left(entries, cutoff, key=_ts)
        if self.TRACKS:
            for entry in entries[:n]:
                self._removed(entry)
        del entries[:n]

    def _removed(self, entry: Entry) -> None:
        """Hook for subclasses keeping running aggregates."""

    def clear(self) -> None:
        self.entries.clear()

    def metric(self) -> float:
        return float(len(self.entries))

    def evaluate(self, condition: Condition) -> tuple[bool, float, dict[str, Any] | None]:
        """(condition holds, aggregated value, extra details) for the current entries."""
        value = self.metric()
        return condition.holds(value), value, None

    def evidence(self, cap: int) -> list[Entry]:
        """The entries that justify an alert, at most ``cap`` (the latest ones)."""
        return self.entries[-cap:]

    def rebuild(self) -> None:
        """Recompute running aggregates from ``entries`` (after a restore)."""

    def start(self) -> float | None:
        """Time of the earliest entry that justifies an alert (the reported window start)."""
        return self.entries[0][0] if self.entries else None


class CountWindow(Window):
    """event_count: the number of matching events."""

    __slots__ = ()


class DistinctWindow(Window):
    """value_count: the number of distinct values of the value field(s).

    Only the latest entry of each value matters (it stays in the window
    longest), so the window keeps one entry per distinct value: its size is
    bounded by the distinct values in the timespan, not by the event rate.
    """

    __slots__ = ("latest",)

    TRACKS = True

    def __init__(self) -> None:
        super().__init__()
        self.latest: dict[Any, Entry] = {}

    def add(self, entry: Entry) -> None:
        entries = self.entries
        latest = self.latest
        old = latest.get(entry[2])
        if old is not None:
            if entries[-1] is old:
                entries.pop()
            else:
                entries.remove(old)
        latest[entry[2]] = entry
        entries.append(entry)

    def _removed(self, entry: Entry) -> None:
        if self.latest.get(entry[2]) is entry:
            del self.latest[entry[2]]

    def clear(self) -> None:
        self.entries.clear()
        self.latest.clear()

    def metric(self) -> float:
        return float(len(self.latest))

    def rebuild(self) -> None:
        self.latest = {}
        kept: list[Entry] = []
        for entry in self.entries:
            old = self.latest.get(entry[2])
            if old is not None:
                kept.remove(old)
            self.latest[entry[2]] = entry
            kept.append(entry)
        self.entries = kept


class ValueCounts(Window):
    """Every entry kept, with how often each value occurs (base of the frequency mode)."""

    __slots__ = ("counts",)

    TRACKS = True

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[Any, int] = {}

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        counts = self.counts
        value = entry[2]
        counts[value] = counts.get(value, 0) + 1

    def _removed(self, entry: Entry) -> None:
        counts = self.counts
        left = counts[entry[2]] - 1
        if left:
            counts[entry[2]] = left
        else:
            del counts[entry[2]]

    def clear(self) -> None:
        self.entries.clear()
        self.counts.clear()

    def metric(self) -> float:
        return float(len(self.counts))

    def rebuild(self) -> None:
        self.counts = dict(Counter(entry[2] for entry in self.entries))


class TemporalWindow(Window):
    """temporal: the number of distinct referenced rules (slots) seen.

    Only the latest entry of each rule matters (it stays in the window
    longest), so the window keeps at most one entry per rule: its size is
    bounded by the number of referenced rules, whatever the event rate.
    """

    __slots__ = ()

    def add(self, entry: Entry) -> None:
        entries = self.entries
        slot = entry[1]
        for i, old in enumerate(entries):
            if old[1] == slot:
                del entries[i]
                break
        entries.append(entry)

    def evidence(self, cap: int) -> list[Entry]:
        return self.entries[:cap]


class OrderedWindow(Window):
    """temporal_ordered: the most referenced rules seen in the order they are listed.

    The metric is the length of the longest chain of entries whose slots
    strictly increase in event-time order (a longest increasing subsequence):
    with the default condition (``gte`` = number of rules) it fires exactly
    when every rule matched, in list order, within the window.
    """

    __slots__ = ()

    def add(self, entry: Entry) -> None:
        # Of consecutive matches of one rule only the last can matter: any chain
        # through an earlier one can use the later one instead (same order, later
        # start). Keeping the last bounds the window by rule alternations.
        entries = self.entries
        if entries and entries[-1][1] == entry[1]:
            entries[-1] = entry
        else:
            entries.append(entry)

    def _chain(self) -> list[Entry]:
        # Patience sorting with back-pointers; ties (same slot) do not extend a chain.
        tails: list[int] = []
        tail_idx: list[int] = []
        parent: list[int] = []
        entries = self.entries
        for i, entry in enumerate(entries):
            pos = bisect.bisect_left(tails, entry[1])
            if pos == len(tails):
                tails.append(entry[1])
                tail_idx.append(i)
            else:
                tails[pos] = entry[1]
                tail_idx[pos] = i
            parent.append(tail_idx[pos - 1] if pos else -1)
        chain: list[Entry] = []
        i = tail_idx[-1] if tail_idx else -1
        while i != -1:
            chain.append(entries[i])
            i = parent[i]
        chain.reverse()
        return chain

    def metric(self) -> float:
        return float(len(self._chain()))

    def evidence(self, cap: int) -> list[Entry]:
        return self._chain()[:cap]

    def start(self) -> float | None:
        chain = self._chain()
        return chain[0][0] if chain else None


class SumWindow(Window):
    """value_sum: the sum of the numeric value field."""

    __slots__ = ("total",)

    TRACKS = True

    def __init__(self) -> None:
        super().__init__()
        self.total = 0.0

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.total += entry[2]

    def _removed(self, entry: Entry) -> None:
        self.total -= entry[2]

    def clear(self) -> None:
        self.entries.clear()
        self.total = 0.0

    def metric(self) -> float:
        if not self.entries:
            self.total = 0.0
        return self.total

    def rebuild(self) -> None:
        self.total = math.fsum(entry[2] for entry in self.entries)


class AvgWindow(SumWindow):
    """value_avg: the arithmetic mean of the numeric value field (NaN when empty)."""

    __slots__ = ()

    def metric(self) -> float:
        if not self.entries:
            self.total = 0.0
            return math.nan
        return self.total / len(self.entries)


class PercentileWindow(Window):
    """value_percentile (with ``percentile: P``) and value_median (P = 50).

    Linear interpolation between closest ranks, like numpy's default and the
    pySigma SQLite backend: position ``(n - 1) * P / 100`` in the sorted values,
    kept sorted incrementally so the metric is O(1) per event.
    """

    __slots__ = ("ordered", "percent")

    TRACKS = True

    def __init__(self, percent: float) -> None:
        super().__init__()
        self.percent = percent
        self.ordered: list[float] = []

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        bisect.insort(self.ordered, entry[2])

    def _removed(self, entry: Entry) -> None:
        ordered = self.ordered
        del ordered[bisect.bisect_left(ordered, entry[2])]

    def clear(self) -> None:
        self.entries.clear()
        self.ordered.clear()

    def rebuild(self) -> None:
        self.ordered = sorted(entry[2] for entry in self.entries)

    def metric(self) -> float:
        values = self.ordered
        if not values:
            return math.nan
        position = (len(values) - 1) * self.percent / 100.0
        low = int(position)
        high = min(low + 1, len(values) - 1)
        fraction = position - low
        return float(values[low] + (values[high] - values[low]) * fraction)


class FrequencyWindow(ValueCounts):
    """value_percentile without ``percentile``: how often each value occurs, in percent.

    The specification's own example (``field: Image``, ``lte: 1``: an image
    name that makes up at most 1 % of a computer's processes) compares each
    distinct value's share of the window's events with the condition. The
    window fires when some value qualifies; the reported value is the share
    of the rarest qualifying value and ``values`` lists the qualifying ones.
    """

    __slots__ = ()

    VALUES_CAP = 20

    def evaluate(self, condition: Condition) -> tuple[bool, float, dict[str, Any] | None]:
        total = len(self.entries)
        if not total:
            return False, math.nan, None
        shares = sorted((100.0 * count / total, str(value)) for value, count in self.counts.items())
        qualifying = [(share, value) for share, value in shares if condition.holds(share)]
        if not qualifying:
            return False, shares[0][0], None
        values = {value: share for share, value in qualifying[: self.VALUES_CAP]}
        return True, qualifying[0][0], {"values": values, "events": total}
