"""Routes: which paging receivers an alert goes to.

Routes are evaluated in order; each matching route adds its receivers, and a
route with ``continue: false`` ends the walk. Each receiver then applies its
own minimum level and rate limit (a token bucket over new pages).
"""

from __future__ import annotations

from collections.abc import Sequence

from detectors.alert import Alert
from detectors.model import level_rank

from .config import Route
from .matching import fields_match, glob_any


class CompiledRoute:
    """A route with its rule-only criteria (levels, rule ids, tags) cached per rule id."""

    __slots__ = ("_by_rule", "levels", "min_rank", "route")

    def __init__(self, route: Route) -> None:
        self.route = route
        self.levels = frozenset(level_rank(lv) for lv in route.match.levels)
        self.min_rank = level_rank(route.match.min_level) if route.match.min_level else 0
        self._by_rule: dict[str, bool] = {}

    def _rule_matches(self, alert: Alert) -> bool:
        m = self.route.match
        rank = alert.rank
        if (self.levels and rank not in self.levels) or rank < self.min_rank:
            return False
        if m.rule_ids and not glob_any(m.rule_ids, (alert.rule.id,)):
            return False
        return not (m.tags and not glob_any(m.tags, alert.rule.tags))

    def matches(self, alert: Alert) -> bool:
        rule_ok = self._by_rule.get(alert.rule.id)
        if rule_ok is None:
            rule_ok = self._by_rule[alert.rule.id] = self._rule_matches(alert)
            if len(self._by_rule) > 100_000:
                self._by_rule.clear()
        if not rule_ok:
            return False
        m = self.route.match
        if m.logsource:
            have = {**alert.logsource.as_dict(), "input": alert.origin.input, "topic": alert.origin.topic or ""}
            for key, want in m.logsource.items():
                if (have.get(key) or "").lower() != want.lower():
                    return False
        return not (m.fields and not fields_match(alert, m.fields))


class RouteTable:
    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = tuple(CompiledRoute(r) for r in routes)

    def receivers(self, alert: Alert) -> list[str]:
        out: list[str] = []
        for compiled in self._routes:
            if compiled.matches(alert):
                for name in compiled.route.receivers:
                    if name not in out:
                        out.append(name)
                if not compiled.route.continue_:
                    break
        return out

    def __len__(self) -> int:
        return len(self._routes)


class TokenBucket:
    """``rate_per_min`` tokens a minute, at most ``burst`` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate_per_min: float, burst: int, now: float) -> None:
        self.rate = rate_per_min / 60.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
