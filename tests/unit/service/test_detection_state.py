"""Stateful detectors in the service: settings, per-scope clocks and heartbeat, alert times, metrics,
restore warnings and snapshots of the local scope. Deterministic: every clock is passed in."""

from __future__ import annotations

import logging

import pytest

from detectors.model import LogSource, Origin
from service.config import CorrelationSettings, RulesSettings, Settings
from service.detection import Detector, compile_detection
from service.local_state import LocalState
from service.reload import compile_configured
from service.sources.base import Item
from service.state_store import StateStore
from tests.support.faults import sample
from tests.support.rules import BUILDS_SILENCE, CURL_RULE, REPEATED_LOGINS

FEW_LOGINS = REPEATED_LOGINS.replace("Repeated Failed Logins", "Few Failed Logins").replace(
    "6f1d1a4e-0000-4000-8000-000000000011", "6f1d1a4e-0000-4000-8000-000000000012").replace(
    "condition: {gte: 3}", "condition: {lt: 3}")
T0 = 1_000_000.0  # event times
WALL = 9_000_000.0  # wall clock of the batches


def login(ts: float, user: str = "bob", scope: tuple[str, int] | None = None, offset: int = 0) -> Item:
    origin = ("ci", scope[1], offset) if scope else Origin("http", key=f"{user}-{ts}")
    if scope and scope[0] != "ci":
        origin = Origin("kafka", scope[0], scope[1], offset)
    return Item({"message": "login failed", "user": user, "ts": ts}, origin, LogSource(category="ci_job_log"),
                ("ts",), 0.0)


def build(tmp_path, text: str = REPEATED_LOGINS, checks: str | None = None, **kwargs) -> Detector:
    (tmp_path / "rules.yml").write_text(text)
    paths = []
    if checks is not None:
        (tmp_path / "checks.yml").write_text(checks)
        paths = [tmp_path / "checks.yml"]
    outcome = compile_detection([tmp_path / "rules.yml"], [], skip_invalid=False, anomaly_checks=paths, **kwargs)
    assert outcome.accepted, outcome.errors
    return Detector(outcome.detection)


# --- settings reach the engines -------------------------------------------------------------

def test_correlation_settings_defaults_and_validation():
    settings = Settings()
    assert settings.correlation.max_keys == 100_000 and settings.correlation.allowed_lateness == 5.0
    assert settings.state.snapshot_interval_s == 60.0
    with pytest.raises(ValueError):
        CorrelationSettings(max_keys=0)
    with pytest.raises(ValueError):
        CorrelationSettings(allowed_lateness=-1)


def test_configured_limits_reach_local_and_per_partition_engines(tmp_path):
    (tmp_path / "rules.yml").write_text(REPEATED_LOGINS)
    outcome = compile_configured(RulesSettings(paths=[tmp_path / "rules.yml"]),
                                 CorrelationSettings(max_keys=7, allowed_lateness=2.5),
                                 Settings().anomaly, 1)
    detection = outcome.detection
    for engine in (detection.correlation, detection.new_engines()[0]):
        assert engine.limits.max_keys == 7 and engine.limits.allowed_lateness == 2.5


def test_allowed_lateness_absorbs_interleaved_event_times(tmp_path):
    """Two topics read from a backlog interleave event times; with lateness nothing is dropped."""
    events = [login(T0 + t) for t in (0.0, 3.0, 1.0, 4.0, 2.0)]  # never more than 3 s out of order
    five = REPEATED_LOGINS.replace("condition: {gte: 3}", "condition: {gte: 5}")
    strict = build(tmp_path, five, correlation_lateness_s=0.0)
    assert strict.process(events, now=WALL) + strict.heartbeat(WALL + 10) == []  # 1.0 and 2.0 dropped as late
    assert strict.current.correlation.counters["late"] == 2
    tolerant = build(tmp_path, five, correlation_lateness_s=5.0)
    fired = tolerant.process(events, now=WALL) + tolerant.heartbeat(WALL + 10)
    assert tolerant.current.correlation.counters["late"] == 0
    assert [a.rule.title for a in fired] == ["Repeated Failed Logins"]


# --- alert times and heartbeat --------------------------------------------------------------

def test_deferred_correlation_alert_is_at_the_window_end_without_the_unrelated_closing_event(tmp_path):
    detector = build(tmp_path, FEW_LOGINS)
    assert detector.process([login(T0)], now=WALL) == []
    closing = Item({"message": "build ok", "ts": T0 + 500}, Origin("http", key="x"),
                   LogSource(category="ci_job_log"), ("ts",), 0.0)
    [alert] = detector.process([closing], now=WALL + 1)
    assert alert.rule.title == "Few Failed Logins"
    assert alert.timestamp == pytest.approx(T0 + 60)  # window end, not the closing event
    assert alert.details["window_end"] == pytest.approx(T0 + 60)
    assert "build ok" not in str(alert.to_document())


SLOW_MEANS = """
id: slow
type: metric
by: [host]
field: ms
aggregate: mean
window: 1m
seasonality: []
learning: 0s
learn_for: 0s
min_samples: 8
allowed_lateness: 0s
"""


MINUTE = T0 + 20  # a whole minute (13:47 UTC): the windows start at its multiples


def latency(minute: int, second: int, ms: float, offset: int) -> Item:
    """A response time of host ``api`` from Kafka partition ``ci``/0 (its origin a record position)."""
    return Item({"host": "api", "ms": ms, "ts": MINUTE + minute * 60 + second}, ("ci", 0, offset),
                LogSource(category="ci_job_log"), ("ts",), 0.0)


@pytest.mark.parametrize("closed_by", ["event", "heartbeat"])
def test_a_window_alert_is_about_its_first_event_with_its_kafka_position(tmp_path, closed_by):
    """The slow minute's alert carries its first event's time and record position, not the event or
    timer that closed the window, and shows no unrelated event."""
    detector = build(tmp_path, checks=SLOW_MEANS)
    items = [latency(minute, second, 900 + second if minute == 12 else 100 + (7 * minute + second) % 5, 100 + 3 * minute + n)
             for minute in range(13) for n, second in enumerate((7, 27, 47))]
    assert detector.process(items, now=WALL) == []
    if closed_by == "event":
        [alert] = detector.process([latency(14, 0, 101, 999)], now=WALL + 1)
    else:
        [alert] = detector.heartbeat(WALL + 120)
    assert alert.rule.id == "slow" and alert.details["window_end"] == "1970-01-12T14:00:00.000Z"
    assert alert.origin == Origin("kafka", "ci", 0, 136)  # minute 12's first record
    assert alert.timestamp == pytest.approx(MINUTE + 12 * 60 + 7)
    assert alert.details["event_time"] == "1970-01-12T13:59:07.000Z"
    assert alert.event == {} and "101" not in alert.original


def test_heartbeat_closes_deferred_windows_when_no_event_arrives(tmp_path):
    detector = build(tmp_path, FEW_LOGINS, correlation_lateness_s=5.0)
    detector.process([login(T0), login(T0 + 1)], now=WALL)
    assert detector.heartbeat(WALL + 60) == []  # event time T0+61: the window end is not past the lateness
    [alert] = detector.heartbeat(WALL + 70)  # event time T0+71 - 5 > T0+60
    assert alert.rule.title == "Few Failed Logins" and alert.details["value"] == 2
    assert alert.timestamp == pytest.approx(T0 + 60)


def test_each_partition_keeps_its_own_clock_and_a_quiet_one_goes_silent(tmp_path):
    detector = build(tmp_path, CURL_RULE, checks=BUILDS_SILENCE)
    a, b = ("ci", 0), ("ci", 1)
    detector.process([login(T0, scope=a, offset=0), login(T0 + 10, scope=a, offset=1)], now=WALL)
    # partition b replays data three days newer: its clock must not drag partition a along
    detector.process([login(T0 + 3 * 86_400, scope=b, offset=0), login(T0 + 3 * 86_400 + 5, scope=b, offset=1)],
                     now=WALL)
    assert detector.scope_clock(a) == (T0 + 10, WALL)
    assert detector.heartbeat(WALL + 60) == []
    late_before = sample("pipesentry_detector_skips_total", detector="anomaly", reason="late")
    detector.process([login(T0 + 40, scope=a, offset=2)], now=WALL + 61)  # a's next event is not late
    assert sample("pipesentry_detector_skips_total", detector="anomaly", reason="late") == late_before
    # then a goes completely quiet while b keeps flowing
    fired = []
    for i in range(10):
        detector.process([login(T0 + 3 * 86_400 + 100 + i * 60, scope=b, offset=3 + i)], now=WALL + 100 + i * 60)
        fired += detector.heartbeat(WALL + 100 + i * 60)
    silent = [x for x in fired if x.rule.id == "builds-silent"]
    assert len(silent) == 1 and silent[0].origin.key == "kafka:ci:0"
    assert silent[0].timestamp == pytest.approx(T0 + 40 + 300, abs=60)  # within one heartbeat of the deadline


def test_heartbeat_skips_scopes_with_unread_input(tmp_path):
    detector = build(tmp_path, FEW_LOGINS)
    detector.process([login(T0, scope=("ci", 0))], now=WALL)
    assert detector.heartbeat(WALL + 500, skip={("ci", 0)}) == []
    assert [x.rule.title for x in detector.heartbeat(WALL + 500)] == ["Few Failed Logins"]


def test_heartbeat_moves_the_local_scope(tmp_path):
    detector = build(tmp_path, CURL_RULE, checks=BUILDS_SILENCE)
    detector.process([login(T0), login(T0 + 10)], now=WALL)
    assert detector.heartbeat(WALL + 200) == []
    [alert] = detector.heartbeat(WALL + 400)
    assert alert.rule.id == "builds-silent" and alert.origin.key == "local"


# --- metrics ----------------------------------------------------------------------------------

def test_counters_are_exported_as_increases_per_engine_without_double_counting(tmp_path):
    detector = build(tmp_path, correlation_max_keys=1)
    key = ("ci", 5)
    late0 = sample("pipesentry_detector_skips_total", detector="correlation", reason="late")
    evicted0 = sample("pipesentry_state_evictions_total", detector="correlation")
    detector.process([login(T0 + 10, "bob", key, 0), login(T0, "bob", key, 1), login(T0 + 11, "amy", key, 2)],
                     now=WALL)
    detector.heartbeat(WALL)
    detector.heartbeat(WALL + 1)  # a second export adds nothing
    assert sample("pipesentry_detector_skips_total", detector="correlation", reason="late") == late0 + 1
    assert sample("pipesentry_state_evictions_total", detector="correlation") == evicted0 + 1
    assert sample("pipesentry_detector_skips_total", detector="correlation", reason="evicted") == 0
    assert sample("pipesentry_state_keys", detector="correlation") == 1
    # the partition moves away and comes back from its snapshot: restored totals are not counted again
    saved = detector.export_scope(key)
    detector.drop_scope(key)
    detector.import_scope(key, saved)
    detector.heartbeat(WALL + 2)
    assert sample("pipesentry_detector_skips_total", detector="correlation", reason="late") == late0 + 1
    assert sample("pipesentry_state_evictions_total", detector="correlation") == evicted0 + 1
    # and a reload that carries the totals over neither
    (tmp_path / "rules.yml").write_text(REPEATED_LOGINS)
    detector.swap(compile_detection([tmp_path / "rules.yml"], [], skip_invalid=False, generation=2,
                                    correlation_max_keys=1).detection)
    detector.heartbeat(WALL + 3)
    assert sample("pipesentry_detector_skips_total", detector="correlation", reason="late") == late0 + 1


def test_anomaly_learning_gauge_and_only_skips_exported(tmp_path):
    checks = BUILDS_SILENCE + "---\nid: deploys-new\ntype: new_value\nfields: [user]\nlearning: 1h\n"
    detector = build(tmp_path, CURL_RULE, checks=checks)
    alerts0 = sample("pipesentry_detector_skips_total", detector="anomaly", reason="alerts")
    detector.process([login(T0), login(T0 + 1)], now=WALL)
    detector.heartbeat(WALL + 400)  # silence fires: an alert, not a skip
    assert sample("pipesentry_anomaly_check_learning", check="deploys-new") == 1
    assert sample("pipesentry_anomaly_check_learning", check="builds-silent") == 0
    assert sample("pipesentry_detector_skips_total", detector="anomaly", reason="alerts") == alerts0 == 0


# --- restore ------------------------------------------------------------------------------------

def test_restore_warnings_are_logged_and_an_unusable_snapshot_starts_empty(tmp_path, caplog):
    detector = build(tmp_path, CURL_RULE, checks=BUILDS_SILENCE)
    with caplog.at_level(logging.WARNING, logger="service.detection"):
        detector.import_scope(("ci", 0), {"anomaly": {"format": "pipesentry-state", "kind": "correlation",
                                                      "version": 1, "body": {}}})
    assert any("cannot restore anomaly state" in r.getMessage() for r in caplog.records)
    assert detector.export_scope(("ci", 0))["anomaly"]["kind"] == "anomaly"  # the partition still runs


def test_restore_reports_checks_whose_configuration_changed(tmp_path, caplog):
    detector = build(tmp_path, CURL_RULE, checks=BUILDS_SILENCE)
    detector.process([login(T0)], now=WALL)
    saved = detector.export_scope(None)
    changed = build(tmp_path, CURL_RULE, checks=BUILDS_SILENCE.replace("timeout: 5m", "timeout: 7m"))
    with caplog.at_level(logging.WARNING, logger="service.detection"):
        changed.import_scope(None, saved)
    assert any("partly dropped" in r.getMessage() and getattr(r, "detail", "") == "builds-silent"
               for r in caplog.records)


def test_anomaly_files_are_read_by_the_shared_loader(tmp_path):
    from service.anomaly_checks import load_check_files
    from service.cli import anomaly_cmd

    assert anomaly_cmd.load_check_files is load_check_files
    (tmp_path / "rules.yml").write_text(CURL_RULE)
    (tmp_path / "checks.yml").write_text(BUILDS_SILENCE + "---\n" + BUILDS_SILENCE)  # duplicate id: an engine error
    outcome = compile_detection([tmp_path / "rules.yml"], [], skip_invalid=False,
                                anomaly_checks=[tmp_path / "checks.yml"])
    assert not outcome.accepted
    assert [(e.rule_id, "duplicate" in e.reason) for e in outcome.errors] == [("builds-silent", True)]


# --- the local scope's snapshots ------------------------------------------------------------------

async def test_local_state_survives_a_restart_and_its_clock_keeps_running(tmp_path):
    store = StateStore(tmp_path / "state")
    checks = BUILDS_SILENCE
    first = build(tmp_path, REPEATED_LOGINS, checks=checks)
    first.process([login(T0), login(T0 + 1)], now=WALL)
    assert await LocalState(first, store).save()
    saved = store.load("local", "correlation")
    assert saved["clock"] == [T0 + 1, WALL] and "offset" not in saved

    second = build(tmp_path, REPEATED_LOGINS, checks=checks)
    assert await LocalState(second, store).restore()
    # the correlation counts on from the two logins before the restart
    assert [a.rule.title for a in second.process([login(T0 + 2)], now=WALL + 5)] == ["Repeated Failed Logins"]

    third = build(tmp_path, REPEATED_LOGINS, checks=checks)
    assert await LocalState(third, store).restore()
    # no event since the restart: the restored clock still lets the silence check fire
    assert third.heartbeat(WALL + 200) == []
    assert [a.rule.id for a in third.heartbeat(WALL + 400)] == ["builds-silent"]


async def test_local_state_restore_without_snapshot_or_stateful_detectors(tmp_path):
    store = StateStore(tmp_path / "state")
    assert not await LocalState(build(tmp_path, REPEATED_LOGINS), store).restore()
    plain = build(tmp_path, CURL_RULE)
    assert not await LocalState(plain, store).save() and store.scopes() == []


async def test_service_saves_the_local_state_at_shutdown_and_restores_it_at_start(tmp_path):
    import asyncio

    from service.app import Service

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "c.yml").write_text(REPEATED_LOGINS)
    settings = Settings(data_dir=tmp_path / "data", rules={"paths": [str(rules)], "watch": False},
                        api={"enabled": False}, stdin={"enabled": False}, alerting={"sinks": [{"type": "store"}]})
    first = Service(settings)
    await first.build()
    first.detector.process([login(T0), login(T0 + 1)], now=WALL)
    task = asyncio.create_task(first.run(install_signals=False))
    first.request_stop()
    await asyncio.wait_for(task, 30)
    assert StateStore(tmp_path / "data" / "state").load("local", "correlation")["clock"] == [T0 + 1, WALL]

    second = Service(settings)
    await second.build()
    # the first two logins were still in the 5 s lateness buffer when saved: they come back with it
    fired = second.detector.process([login(T0 + 2)], now=WALL + 1) + second.detector.heartbeat(WALL + 10)
    assert [a.rule.title for a in fired] == ["Repeated Failed Logins"]
