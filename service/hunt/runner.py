"""Run converted rules over the cluster: one scroll per rule, pages of bounded size, hits -> alerts.

A rule the cluster refuses (a 4xx: a query the node cannot parse, a regular expression Lucene does
not accept) is reported for that rule and the hunt goes on; a cluster that cannot be reached or
fails (connection errors, 5xx, 429) stops the hunt with :class:`~service.hunt.client.SearchError`:
every further rule would fail the same way.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from detectors.alert import Alert
from service.errors import ServiceError
from service.hunt.alerts import hit_alert
from service.hunt.client import SearchClient, SearchError
from service.hunt.convert import Failure, Query
from service.hunt.settings import HuntSettings
from service.hunt.timerange import TimeRange


@dataclass
class RuleRun:
    """What one rule found."""

    rule_id: str
    title: str
    index: str
    hits: int = 0
    truncated: bool = False
    """Stopped on reaching ``hunt.max_hits_per_rule`` (there may be more)."""
    error: str | None = None


@dataclass
class Progress:
    rules_done: int
    rules_total: int
    hits: int
    current: str


@dataclass
class HuntReport:
    runs: list[RuleRun] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    """Rules the backend could not convert."""
    hits: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "seconds": round(self.seconds, 3),
                "rules_run": len(self.runs), "rules_failed": sum(1 for r in self.runs if r.error),
                "not_converted": [{"rule_id": f.rule.id, "title": f.rule.title, "reason": f.reason}
                                  for f in self.failures],
                "errors": [{"rule_id": r.rule_id, "index": r.index, "reason": r.error}
                           for r in self.runs if r.error],
                "truncated": [r.rule_id for r in self.runs if r.truncated]}


AlertSink = Callable[[list[Alert]], Awaitable[None] | None]


def build_query(query: Query, time_filter: dict[str, Any] | None) -> dict[str, Any]:
    """The search body's query: the rule's Lucene (several: any of them) inside the time range."""
    clauses = [{"query_string": {"query": text, "analyze_wildcard": True}} for text in query.lucene]
    body: dict[str, Any] = {"bool": {"filter": [time_filter] if time_filter else []}}
    if len(clauses) == 1:
        body["bool"]["must"] = clauses
    else:
        body["bool"]["should"] = clauses
        body["bool"]["minimum_should_match"] = 1
    return body


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    meta = getattr(exc, "meta", None)
    value = getattr(meta, "status", None)
    return value if isinstance(value, int) else None


def _refused(exc: BaseException) -> bool:
    """A request the node refuses for its content (4xx but 429): that rule's problem, not the hunt's."""
    status = _status(exc)
    return status is not None and 400 <= status < 500 and status != 429


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:499] + "…"


class _Refused(ServiceError):
    """The node refused one rule's request for its content; the reason is the text."""


async def _ask(call: Awaitable[dict[str, Any]], query: Query, index: str) -> dict[str, Any]:
    """A client call's answer; its failure as :class:`_Refused` (a 4xx but 429) or :class:`SearchError`.
    The sink's own failures (the store, stdout) are not classified here: they pass as they are."""
    try:
        return await call
    except Exception as exc:  # the clients raise their own types; classified by status
        if _refused(exc):
            raise _Refused(_reason(exc)) from None
        raise SearchError(f"search failed for rule {query.rule.id} on {index}: {_reason(exc)}") from None


async def _deliver(sink: AlertSink, alerts: list[Alert]) -> None:
    result = sink(alerts)
    if inspect.isawaitable(result):
        await result


async def run_queries(client: SearchClient, queries: Sequence[Query], settings: HuntSettings,
                      time_range: TimeRange, sink: AlertSink, *, index: str | None = None,
                      progress: Callable[[Progress], None] | None = None,
                      clock: Callable[[], float] = time.time) -> HuntReport:
    """Every query over the indices of its log source (``index`` overrides them, with
    ``hunt.time_field``); alerts go to ``sink`` a page at a time."""
    report = HuntReport()
    started = time.perf_counter()
    for number, query in enumerate(queries):
        targets = [(index, settings.time_field)] if index is not None else settings.targets_for(query.rule.logsource)
        if progress is not None:
            progress(Progress(number, len(queries), report.hits, query.rule.title))
        for target, time_field in targets:
            run = RuleRun(query.rule.id, query.rule.title, target)
            report.runs.append(run)
            try:
                await _scroll(client, query, settings, target, time_field, time_range, sink, run, clock)
            except _Refused as exc:
                run.error = str(exc)
            report.hits += run.hits
    if progress is not None:
        progress(Progress(len(queries), len(queries), report.hits, ""))
    report.seconds = time.perf_counter() - started
    return report


async def _scroll(client: SearchClient, query: Query, settings: HuntSettings, index: str, time_field: str | None,
                  time_range: TimeRange, sink: AlertSink, run: RuleRun, clock: Callable[[], float]) -> None:
    body = build_query(query, time_range.range_filter(time_field))
    keep_alive = settings.scroll_keep_alive
    limit = settings.max_hits_per_rule
    page = await _ask(client.search(index=index, query=body, size=settings.page_size, scroll=keep_alive),
                      query, index)
    scroll_id: str | None = page.get("_scroll_id")
    try:
        while True:
            hits = page.get("hits", {}).get("hits", [])
            if not hits:
                return
            room = limit - run.hits
            if len(hits) >= room:  # the limit is reached with this page: stop here
                hits, run.truncated = hits[:room], True
            now = clock()
            await _deliver(sink, [hit_alert(query.rule, hit, time_field, now) for hit in hits])
            run.hits += len(hits)
            if run.truncated or scroll_id is None:
                return
            page = await _ask(client.scroll(scroll_id=scroll_id, scroll=keep_alive), query, index)
            scroll_id = page.get("_scroll_id", scroll_id)
    finally:
        if scroll_id is not None:
            try:
                await client.clear_scroll(scroll_id=scroll_id)
            except Exception:  # the scroll expires on its own after keep_alive
                pass
