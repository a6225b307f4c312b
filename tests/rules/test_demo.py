"""The demo corpus and ``pipesentry demo``: determinism, a quiet normal day, stories detected, alert store."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import orjson
import pytest

from service.alerting.store import AlertQuery, AlertStore
from service.cli import main as cli_main
from service.demo.corpus import generate, write_ndjson
from service.demo.runner import NORMAL, DemoResult, build_detectors, run
from service.demo.sources import BY_NAME, SOURCES
from service.demo.stories import STORIES
from service.rules import load_rules
from tests.conftest import PROJECT_RULES

BUILDING_BLOCKS = {
    "SSH Authentication Failure", "SSH Successful Login", "Application Login Failure", "Application Login Success",
}
"""Rules meant to fire on normal traffic: inputs of correlations, suppressed there by generate: false."""


def _fingerprint(seed: int) -> str:
    digest = hashlib.sha256()
    for item in generate(seed):
        digest.update(orjson.dumps([item.source, item.ts, item.story, item.event], option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


def test_generation_is_deterministic_per_seed() -> None:
    assert _fingerprint(7) == _fingerprint(7)
    assert _fingerprint(7) != _fingerprint(8)


@pytest.fixture(scope="module")
def demo_result() -> DemoResult:
    # Fresh detectors per run: correlation and anomaly state lives in them, and a second day that
    # starts before the first one's watermark would be late.
    return run(generate(7), build_detectors())


def test_every_source_has_normal_traffic() -> None:
    counts = Counter(e.source for e in generate(3, stories=()))
    assert set(counts) == {s.name for s in SOURCES}
    assert min(counts.values()) >= 5


def test_normal_day_raises_no_alert_through_the_detection_stage() -> None:
    result = run(generate(1, stories=()), build_detectors())
    assert result.events > 5000
    assert [a.alert.rule.title for a in result.alerts] == []


def test_normal_day_per_rule_counts_only_building_blocks() -> None:
    """Raw rule matches (before correlation suppression): only correlation inputs fire."""
    rs = load_rules([PROJECT_RULES], [PROJECT_RULES / "pipelines" / "nginx.pipeline"]).ruleset
    envoy = load_rules([PROJECT_RULES / "web"], [PROJECT_RULES / "pipelines" / "envoy.pipeline"]).ruleset
    fired: Counter[str] = Counter()
    for item in generate(2, stories=()):
        ruleset = envoy if item.source == "envoy" else rs
        fired.update(m.rule.title for m in ruleset.evaluate(item.event, BY_NAME[item.source].logsource))
    assert set(fired) <= BUILDING_BLOCKS, fired


def test_each_story_raises_its_expected_detections(demo_result: DemoResult) -> None:
    by_story = demo_result.by_story()
    for story in STORIES:
        titles = {a.alert.rule.title for a in by_story.get(story.name, [])}
        missing = [t for t in story.expected if t not in titles]
        assert not missing, f"{story.name}: {missing}"
    assert NORMAL not in by_story


def test_correlation_and_anomaly_alerts_take_part(demo_result: DemoResult) -> None:
    kinds = Counter(a.alert.rule.kind for a in demo_result.alerts)
    assert kinds["correlation"] >= 5 and kinds["anomaly"] >= 2 and kinds["sigma"] >= 50
    ids = [a.alert.id for a in demo_result.alerts]
    assert len(ids) == len(set(ids))


def test_ndjson_files_per_source(tmp_path: Path) -> None:
    events = generate(5)
    paths = write_ndjson(events, tmp_path)
    assert set(paths) == {s.name for s in SOURCES}
    expected = Counter(e.source for e in events)
    for name, path in paths.items():
        lines = path.read_bytes().splitlines()
        assert len(lines) == expected[name]
        assert all(isinstance(orjson.loads(line), dict) for line in lines)


def test_cli_demo_writes_alerts_to_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["demo", "--data-dir", str(tmp_path), "--quiet", "--out", str(tmp_path / "corpus")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "story" in captured.out and "expected" in captured.out
    for story in STORIES:
        row = next(line for line in captured.out.splitlines() if line.startswith(story.name + " "))
        assert row.split()[-1] == f"{len(story.expected)}/{len(story.expected)}", row
    assert "100%" in captured.err
    written = int(captured.out.rsplit(" alerts written to ", 1)[0].split()[-1])
    store = AlertStore(tmp_path / "alerting" / "alerts.db")
    try:
        store.open()
        assert store.count() == written > 50
        page = store.query(AlertQuery(min_level="critical", limit=100))
        assert page.total >= 4
        assert all(doc["pipesentry"]["level"] == "critical" for doc in page.items)
    finally:
        store.close()
    assert len(list((tmp_path / "corpus").glob("*.ndjson"))) == len(SOURCES)
    # Running again upserts the same alert ids: the store does not grow.
    assert cli_main(["demo", "--data-dir", str(tmp_path), "--quiet"]) == 0
    capsys.readouterr()
    store = AlertStore(tmp_path / "alerting" / "alerts.db")
    try:
        store.open()
        assert store.count() == written
    finally:
        store.close()


def test_cli_demo_kafka_needs_a_bootstrap(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.upper().startswith("PIPESENTRY_KAFKA"):
            monkeypatch.delenv(name)
    assert cli_main(["demo", "--kafka", "--quiet"]) == 2
    assert "--bootstrap" in capsys.readouterr().err


def test_cli_demo_reports_an_unwritable_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    assert cli_main(["demo", "--data-dir", str(blocker), "--quiet"]) == 1
    assert "cannot write the alert store" in capsys.readouterr().err


def test_cli_demo_fails_when_rules_fail_to_load_or_expected_alerts_are_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yml").write_text("title: Broken\nlogsource: {product: github}\ndetection: {condition: nope}\n")
    code = cli_main(["demo", "--data-dir", str(tmp_path / "data"), "--quiet", "--rules", str(rules)])
    err = capsys.readouterr().err
    assert code == 1
    assert "rule error" in err and "expected alert not raised" in err
