"""``AnomalyEngine``: runs a set of checks over one ordered stream (one scope).

Why one engine per scope: state and watermarks are per stream; the runtime
keeps one engine per Kafka partition (or one for a local input) and persists
``snapshot()`` with ``service/state_store.py`` so another instance can take
the partition over with its state.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from detectors.anomaly.base import Check
from detectors.anomaly.cardinality import CardinalityCheck
from detectors.anomaly.metric import MetricCheck
from detectors.anomaly.new_value import NewValueCheck
from detectors.anomaly.selection import Matcher, MatcherFactory, sigma_matcher
from detectors.anomaly.silence import SilenceCheck
from detectors.anomaly.spec import (
    CardinalitySpec,
    CheckCommon,
    CheckError,
    MetricSpec,
    NewValueSpec,
    RatioSpec,
    SilenceSpec,
    ThresholdSpec,
    VolumeSpec,
)
from detectors.anomaly.threshold import RatioCheck, ThresholdCheck
from detectors.anomaly.volume import VolumeCheck
from detectors.model import Event, LogSource, Match, OriginRef
from detectors.state import StateError, unwrap, wrap

log = logging.getLogger(__name__)

SNAPSHOT_KIND = "anomaly"
SNAPSHOT_VERSION = 3
"""2: metric baselines forget by event time (per-key layout 2). Version 1 snapshots still load:
every other check's state is unchanged, their metric checks restart learning (see ``restore``).
3: open windows (metric with ``aggregate``, volume, cardinality, ratio slices) keep the time and
origin of their first event, which an alert about them names. Version 2 snapshots load as they
are: their open windows' alerts name no event (the window start as its time)."""
READABLE_VERSIONS = (1, 2, 3)
DEFAULT_MAX_KEYS = 100_000


def build_check(spec: CheckCommon, max_keys: int, matcher_factory: MatcherFactory) -> Check:
    """The check object for ``spec``; ``ValueError`` when its selection does not compile."""
    match spec:
        case VolumeSpec():
            return VolumeCheck(spec, max_keys)
        case SilenceSpec():
            return SilenceCheck(spec, max_keys)
        case MetricSpec():
            return MetricCheck(spec, max_keys)
        case NewValueSpec():
            return NewValueCheck(spec, max_keys)
        case CardinalitySpec():
            return CardinalityCheck(spec, max_keys)
        case ThresholdSpec():
            matcher = None if spec.selection is None else matcher_factory(spec.id, spec.selection)
            return ThresholdCheck(spec, max_keys, matcher)
        case RatioSpec():
            return RatioCheck(spec, max_keys, matcher_factory(spec.id, spec.selection))
        case _:
            raise TypeError(f"unknown check spec {type(spec).__name__}")


class AnomalyEngine:
    """Feed events in (roughly) event-time order; call ``advance`` when time passes without events.

    ``errors`` lists checks that could not be built (bad selection, duplicate
    id); the other checks run. ``counters`` sums skips by reason over all
    checks plus ``evictions``.
    """

    def __init__(self, specs: Sequence[CheckCommon], max_keys_per_check: int = DEFAULT_MAX_KEYS,
                 matcher_factory: MatcherFactory = sigma_matcher) -> None:
        self.errors: list[CheckError] = []
        self.checks: dict[str, Check] = {}
        for spec in specs:
            if spec.id in self.checks:
                self.errors.append(CheckError("engine", spec.id, "id: duplicate check id"))
                continue
            try:
                self.checks[spec.id] = build_check(spec, max_keys_per_check, matcher_factory)
            except ValueError as exc:
                self.errors.append(CheckError("engine", spec.id, str(exc)))
        self._all = tuple(self.checks.values())
        self._routes: dict[LogSource, tuple[Check, ...]] = {}
        self._engine_counters: Counter[str] = Counter()

    @property
    def specs(self) -> tuple[CheckCommon, ...]:
        """Specs of the checks that run (those in ``errors`` excluded)."""
        return tuple(check.spec for check in self._all)

    def _route(self, logsource: LogSource | None) -> tuple[Check, ...]:
        if logsource is None:
            return self._all
        route = self._routes.get(logsource)
        if route is None:
            route = tuple(c for c in self._all if c.rule_logsource.covers(logsource))
            if len(self._routes) < 10_000:
                self._routes[logsource] = route
        return route

    def watches(self, logsource: LogSource | None) -> bool:
        """Whether some check sees events of ``logsource`` (the others' events change nothing here)."""
        return bool(self._route(logsource))

    def process(self, event: Event, ts: float, logsource: LogSource | None = None,
                origin: OriginRef | None = None) -> list[Match]:
        """Matches caused by one event (including windows its time closes).

        ``origin``: where the event came from. Windowed checks keep it (with the event time) for
        the first event of each key's open window, and an alert about that window carries it as
        ``Match.about``: the alert is about its first event, not the one that closed it."""
        if not isinstance(event, Mapping):
            self._engine_counters["not_object"] += 1
            return []
        out: list[Match] = []
        for check in self._route(logsource):
            found = check.process(event, ts, logsource, origin)
            if found:
                out.extend(found)
        return out

    def advance(self, ts: float) -> list[Match]:
        """Matches due once time reaches ``ts`` (closed intervals, silent keys)."""
        out: list[Match] = []
        for check in self._all:
            out.extend(check.advance(ts))
        return out

    def learning(self) -> dict[str, bool]:
        """Per check: still learning its baseline (feeds the ``anomaly_check_learning`` gauge)."""
        return {cid: check.learning() for cid, check in self.checks.items()}

    @property
    def counters(self) -> dict[str, int]:
        total: Counter[str] = Counter(self._engine_counters)
        evictions = 0
        for check in self._all:
            total.update(check.counters)
            evictions += check.evictions
        total["evictions"] = evictions
        return dict(total)

    def counters_by_check(self) -> dict[str, dict[str, int]]:
        return {cid: {**check.counters, "evictions": check.evictions} for cid, check in self.checks.items()}

    def key_counts(self) -> dict[str, int]:
        return {cid: len(check.keys) for cid, check in self.checks.items()}

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state of every check (versioned envelope, see ``detectors.state``)."""
        return wrap(SNAPSHOT_KIND, SNAPSHOT_VERSION,
                    {"checks": {cid: check.snapshot() for cid, check in self.checks.items()}})

    def restore(self, snapshot: Mapping[str, Any]) -> list[str]:
        """Load a snapshot; returns the ids of checks whose saved state was dropped.

        A check's state is dropped (the check starts fresh, counted as
        ``restore_dropped``) when its configuration changed since the snapshot
        or the saved state is malformed. A snapshot that is not an anomaly
        snapshot raises :class:`detectors.state.StateError`.
        """
        body = unwrap(snapshot, SNAPSHOT_KIND, READABLE_VERSIONS)
        saved = body.get("checks")
        if not isinstance(saved, Mapping):
            raise StateError("anomaly snapshot has no checks mapping")
        dropped: list[str] = []
        for cid, state in saved.items():
            check = self.checks.get(cid)
            if check is None:
                continue  # check removed from the configuration
            if snapshot["version"] == 1 and check.kind == "metric":
                log.warning("anomaly check %s: snapshot version 1 holds sample-counted metric baselines; "
                            "the check learns again", cid)
                dropped.append(cid)
                continue
            if not isinstance(state, Mapping) or state.get("fingerprint") != check.spec.fingerprint():
                dropped.append(cid)
                continue
            try:
                check.restore(dict(state))
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                log.warning("anomaly check %s: saved state unusable (%s); starting fresh", cid, exc)
                self.checks[cid] = build_check(check.spec, check.max_keys, _reuse(check))
                self._all = tuple(self.checks.values())
                self._routes.clear()
                dropped.append(cid)
        if dropped:
            self._engine_counters["restore_dropped"] += len(dropped)
        return dropped


def _never(event: Event) -> bool:
    return False


def _reuse(check: Check) -> MatcherFactory:
    """A factory handing back ``check``'s compiled matcher (rebuilding a check after a bad restore)."""
    matcher: Matcher = getattr(check, "matcher", None) or _never
    return lambda _check_id, _selection: matcher
