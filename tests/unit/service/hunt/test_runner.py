"""Running converted rules: paging, id stability, refused queries and a failing cluster (fake client)."""

from __future__ import annotations

from typing import Any

import pytest

from detectors.alert import Alert, alert_id
from detectors.model import LogSource, RuleInfo
from service.hunt.alerts import hit_alert
from service.hunt.client import SearchError
from service.hunt.convert import Query
from service.hunt.runner import Progress, build_query, run_queries
from service.hunt.settings import HuntSettings
from service.hunt.timerange import TimeRange
from tests.support.search import FakeSearchClient

RULE = RuleInfo(id="r-1", title="Curl piped", level="high", author="Jane Doe",
                logsource=LogSource(category="ci_job_log"))
OTHER = RuleInfo(id="r-2", title="Audit", logsource=LogSource(product="github", service="audit"))


def _docs(n: int) -> list[dict[str, Any]]:
    return [{"_id": f"d{i}", "@timestamp": "2026-11-24T10:00:00Z", "message": f"line {i}"} for i in range(n)]


def _settings(**extra: Any) -> HuntSettings:
    return HuntSettings.model_validate({
        "indices": [{"product": "github", "category": "ci_job_log", "index": "logs-ci-*"},
                    {"product": "github", "service": "audit", "index": "logs-gh", "time_field": None}],
        "page_size": 3, **extra})


async def test_hits_are_paged_and_every_scroll_is_cleared() -> None:
    client = FakeSearchClient({"logs-ci-a": _docs(7), "logs-gh": _docs(2)})
    got: list[Alert] = []
    pages: list[int] = []

    def sink(alerts: list[Alert]) -> None:
        pages.append(len(alerts))
        got.extend(alerts)

    report = await run_queries(client, [Query(RULE, ("message:*curl*",)), Query(OTHER, ("action:x",))],
                               _settings(), TimeRange(0.0, 2e9), sink, clock=lambda: 5.0)
    assert pages == [3, 3, 1, 2]
    assert [s["size"] for s in client.searches] == [3, 3]
    assert [s["index"] for s in client.searches] == ["logs-ci-*", "logs-gh"]
    assert client.scrolls == 4  # 7 hits: two more pages, then the empty one; 2 hits: the empty one
    assert not client.open_scrolls
    assert report.hits == 9 and [r.hits for r in report.runs] == [7, 2]
    # the time range applies on the entry's time field, not where it has none
    ci_filter = client.searches[0]["query"]["bool"]["filter"]
    assert ci_filter == [{"range": {"@timestamp": {"format": "epoch_millis", "gte": 0, "lt": 2_000_000_000_000}}}]
    assert client.searches[1]["query"]["bool"]["filter"] == []
    assert got[0].rule is RULE and got[0].rule.author == "Jane Doe"
    assert got[0].origin.token() == "hunt:logs-ci-a/d0"
    assert got[0].timestamp == pytest.approx(1_795_514_400.0)


async def _hunt_ids() -> list[str]:
    ids: list[str] = []
    await run_queries(FakeSearchClient({"logs-ci-a": _docs(4), "logs-ci-b": _docs(1)}),
                      [Query(RULE, ("x",))], _settings(), TimeRange(), lambda a: ids.extend(x.id for x in a),
                      clock=lambda: float(len(ids)))  # a different "now" each page: ids do not depend on it
    return ids


async def test_ids_are_stable_for_rule_index_and_document() -> None:
    runs = [await _hunt_ids(), await _hunt_ids()]
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 5  # the same document id in two indices: two alerts
    assert runs[0][0] == alert_id("r-1", "hunt:logs-ci-a/d0")
    other = hit_alert(OTHER, {"_index": "logs-ci-a", "_id": "d0", "_source": {}}, None, 0.0)
    assert other.id != runs[0][0]  # another rule on the same document


async def test_a_refused_query_is_that_rules_problem() -> None:
    client = FakeSearchClient({"logs-ci-a": _docs(2), "logs-gh": _docs(1)}, refuse={"bad/regex": 400})
    report = await run_queries(client, [Query(RULE, ("message:/bad/regex/",)), Query(OTHER, ("ok",))],
                               _settings(), TimeRange(), lambda a: None)
    assert report.runs[0].error is not None and "400" in report.runs[0].error
    assert report.runs[1].hits == 1 and report.runs[1].error is None
    assert report.as_dict()["errors"] == [{"rule_id": "r-1", "index": "logs-ci-*", "reason": report.runs[0].error}]


async def test_a_failing_cluster_stops_the_hunt() -> None:
    client = FakeSearchClient({"logs-ci-a": _docs(2)}, refuse={"message": 503})
    with pytest.raises(SearchError, match="search failed for rule r-1 on logs-ci-\\*"):
        await run_queries(client, [Query(RULE, ("message:x",)), Query(OTHER, ("ok",))], _settings(),
                          TimeRange(), lambda a: None)
    assert len(client.searches) == 1


async def test_hits_per_rule_are_bounded() -> None:
    client = FakeSearchClient({"logs-ci-a": _docs(10)})
    got: list[Alert] = []
    report = await run_queries(client, [Query(RULE, ("x",))], _settings(max_hits_per_rule=4), TimeRange(),
                               got.extend)
    assert len(got) == 4 and report.runs[0].truncated
    assert report.as_dict()["truncated"] == ["r-1"]
    assert not client.open_scrolls


async def test_an_index_override_and_async_sink_and_progress() -> None:
    client = FakeSearchClient({"history": _docs(2)})
    seen: list[Progress] = []
    got: list[Alert] = []

    async def sink(alerts: list[Alert]) -> None:
        got.extend(alerts)

    await run_queries(client, [Query(RULE, ("a",)), Query(OTHER, ("b",))], _settings(), TimeRange(since=1.0),
                      sink, index="history", progress=seen.append)
    assert [s["index"] for s in client.searches] == ["history", "history"]
    assert len(got) == 4
    assert [(p.rules_done, p.hits) for p in seen] == [(0, 0), (1, 2), (2, 4)]


def test_a_rule_runs_over_every_index_its_log_source_covers() -> None:
    settings = HuntSettings.model_validate({"indices": [
        {"product": "github", "category": "ci_job_log", "index": "gh-ci"},
        {"product": "gitlab", "category": "ci_job_log", "index": "gl-ci"},
        {"product": "jenkins", "category": "ci_job_log", "index": "jk-ci", "time_field": "ts"},
        {"product": "github", "service": "audit", "index": "gh-audit"}], "default_index": "rest-*"})
    assert settings.targets_for(LogSource(category="ci_job_log")) == [("gh-ci,gl-ci", "@timestamp"), ("jk-ci", "ts")]
    assert settings.targets_for(LogSource(product="github")) == [("gh-ci,gh-audit", "@timestamp")]
    assert settings.targets_for(LogSource(product="aws")) == [("rest-*", "@timestamp")]
    assert settings.targets_for(LogSource()) == [("gh-ci,gl-ci,gh-audit", "@timestamp"), ("jk-ci", "ts")]


def test_several_queries_of_one_rule_are_alternatives() -> None:
    body = build_query(Query(RULE, ("a", "b")), None)
    assert body["bool"]["minimum_should_match"] == 1 and len(body["bool"]["should"]) == 2


async def test_a_failing_sink_is_not_taken_for_the_cluster() -> None:
    class Full(Exception):
        pass

    def sink(alerts: list[Alert]) -> None:
        raise Full("disk full")

    client = FakeSearchClient({"logs-ci-a": _docs(2)})
    with pytest.raises(Full):
        await run_queries(client, [Query(RULE, ("x",))], _settings(), TimeRange(), sink)
    assert not client.open_scrolls  # the scroll is cleared all the same
