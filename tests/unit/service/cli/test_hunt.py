"""``pipesentry hunt`` through service.cli.main with a fake cluster (the real one: tests/integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from detectors.alert import alert_id
from service.cli import main
from tests.support.fixtures import rule_text
from tests.support.search import FakeSearchClient

RULE = rule_text("curl_in_ci_log")
RULE_ID = "11111111-1111-4111-8111-111111111111"
DOCS = {"ci-logs": [{"_id": "a", "@timestamp": "2026-11-24T10:00:00Z", "message": "curl x | sh"},
                    {"_id": "b", "@timestamp": "2026-11-24T10:00:01Z", "message": "curl y | sh"}]}


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeSearchClient:
    fake = FakeSearchClient(DOCS)
    monkeypatch.setattr("service.hunt.client.open_client", lambda settings, target, url: fake)
    return fake


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "curl.yml").write_text(RULE)
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "rules": {"paths": [str(rules)]},
                                      "hunt": {"indices": [{"category": "ci_job_log", "index": "ci-*"}]}}))
    return rules, config


def test_alerts_are_printed_with_stable_ids(tmp_path: Path, cluster: FakeSearchClient,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, config = _setup(tmp_path)
    assert main(["hunt", "--config", str(config), "--since", "30d", "--target", "opensearch"]) == 0
    out, err = capsys.readouterr()
    records = [orjson.loads(line) for line in out.splitlines()]
    assert [(r["index"], r["document_id"], r["rule_author"]) for r in records] == [
        ("ci-logs", "a", "Jane Doe"), ("ci-logs", "b", "Jane Doe")]
    assert records[0]["alert_id"] == alert_id(RULE_ID, "hunt:ci-logs/a")
    assert cluster.searches[0]["index"] == "ci-*" and cluster.closed
    assert "1 rules converted for opensearch" in err and "2 hits from 1 rules" in err


def test_store_twice_keeps_one_copy(tmp_path: Path, cluster: FakeSearchClient,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, config = _setup(tmp_path)
    for _ in range(2):
        assert main(["hunt", "--config", str(config), "--store", "-q"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "2 alerts stored" in err
    from service.alerting.store import AlertStore

    store = AlertStore(tmp_path / "data" / "alerting" / "alerts.db")
    store.open()
    try:
        assert store.count() == 2
    finally:
        store.close()


@pytest.mark.parametrize(("argv", "code", "says"), [
    (["--since", "yesterday"], 2, "expected a duration"),
    (["--since", "1d", "--until", "2d"], 2, "time range is empty"),
    (["--backend-pipeline", "nope"], 2, "no backend pipeline 'nope'"),
    (["--pipeline", "/nonexistent.yml"], 2, "cannot read pipeline"),
    (["--url", "http://user:pw@search:9200"], 2, "--url: no credentials in the URL"),
])
def test_usage_errors(tmp_path: Path, cluster: FakeSearchClient, capsys: pytest.CaptureFixture[str],
                      argv: list[str], code: int, says: str) -> None:
    _, config = _setup(tmp_path)
    assert main(["hunt", "--config", str(config), *argv]) == code
    assert says in capsys.readouterr().err
    assert not cluster.searches


def test_no_rules_or_config_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hunt"]) == 2
    assert "give --rules or --config" in capsys.readouterr().err


def test_nothing_converted_and_refused_queries_are_problems(tmp_path: Path, cluster: FakeSearchClient,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    rules, config = _setup(tmp_path)
    (rules / "curl.yml").write_text(RULE.replace("message|contains: 'curl '", "message|fieldref: other"))
    assert main(["hunt", "--config", str(config)]) == 1
    assert "not converted: 11111111" in capsys.readouterr().err
    (rules / "curl.yml").write_text(RULE)
    cluster.refuse = {"curl": 400}
    assert main(["hunt", "--config", str(config)]) == 1
    assert "query refused: 11111111-1111-4111-8111-111111111111 on ci-*" in capsys.readouterr().err


def test_a_failing_cluster_is_unavailable(tmp_path: Path, cluster: FakeSearchClient,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _, config = _setup(tmp_path)
    cluster.refuse = {"curl": 503}
    assert main(["hunt", "--config", str(config), "--format", "table"]) == 3
    assert "search failed for rule" in capsys.readouterr().err


def test_table_output(tmp_path: Path, cluster: FakeSearchClient, capsys: pytest.CaptureFixture[str]) -> None:
    _, config = _setup(tmp_path)
    assert main(["hunt", "--config", str(config), "--format", "csv", "-q"]) == 0
    lines: list[Any] = capsys.readouterr().out.splitlines()
    assert lines[0] == "TIME,LEVEL,RULE_ID,TITLE,AUTHOR,INDEX,DOCUMENT" and len(lines) == 3


def test_an_unusable_store_is_unavailable(tmp_path: Path, cluster: FakeSearchClient,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _, config = _setup(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "alerting").write_text("not a directory")
    assert main(["hunt", "--config", str(config), "--store"]) == 3
    assert "cannot open the alert store" in capsys.readouterr().err
    assert not cluster.searches
