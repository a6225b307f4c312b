"""What the store indexes beside an alert document: origin and log source, in both placements."""

from __future__ import annotations

from service.alerting import indexing
from tests.support.alerts import alert


def test_origin_and_logsource_come_from_the_pipesentry_namespace() -> None:
    doc = alert(7, topic="ci", product="github").to_document()
    assert "log" not in doc or "source" not in doc.get("log", {})
    assert indexing.origin_of(doc)["topic"] == "ci" and indexing.origin_of(doc)["offset"] == 7
    assert indexing.logsource_of(doc)["product"] == "github"
    assert indexing.index(doc).product == "github"


def test_alerts_stored_by_earlier_builds_keep_their_log_source_readable() -> None:
    old = {"log": {"source": {"input": "kafka", "topic": "ci", "partition": 0, "offset": 3, "product": "GitHub"}}}
    assert indexing.origin_of(old)["topic"] == "ci"
    assert indexing.logsource_of(old)["product"] == "GitHub"
    assert indexing.index(old).product == "github"
    assert indexing.origin_of({}) == {} and indexing.logsource_of({"pipesentry": {"origin": "x"}}) == {}
