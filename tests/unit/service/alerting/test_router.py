"""The router end to end with local sinks: durability, suppression counts, routing, pages."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from service import metrics
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter, RouterError
from service.alerting.silences import SilenceMatch, SilenceRequest
from service.alerting.sinks.stdout import StdoutSink
from tests.support.alerts import Clock, alert, rule


def suppressed(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("pipesentry_alerts_suppressed_total", {"reason": reason}) or 0.0


def settings(**kw: Any) -> AlertingSettings:
    return AlertingSettings.model_validate(kw)


async def test_default_settings_store_and_stdout(tmp_path: Path) -> None:
    router = AlertRouter(AlertingSettings(), tmp_path)
    await router.start()
    out = io.BytesIO()
    stdout_sink = router.workers["stdout"].sink
    assert isinstance(stdout_sink, StdoutSink)
    stdout_sink._stream = out
    alerts = [alert(i) for i in range(5)]
    await router.submit(alerts)
    await router.wait_idle(5)
    assert router.store.count() == 5
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [line["alert_id"] for line in lines] == [a.id for a in alerts]
    assert lines[0]["rule"]["author"] == "Tester"
    before = metrics.REGISTRY.get_sample_value("pipesentry_alerts_total", {"rule_id": "r1", "level": "high"})
    await router.submit(alerts)  # re-delivery: same ids, no new rows
    await router.wait_idle(5)
    assert router.store.count() == 5
    assert metrics.REGISTRY.get_sample_value("pipesentry_alerts_total",
                                             {"rule_id": "r1", "level": "high"}) == (before or 0) + 5
    await router.stop()


async def test_spooled_alerts_survive_restart(tmp_path: Path) -> None:
    s = settings(sinks=[{"type": "store"}])
    router = AlertRouter(s, tmp_path)
    await router.start()
    worker = router.workers["store"]
    # simulate a crash before delivery: stop the delivery loop, then spool
    assert worker._task is not None
    worker._task.cancel()
    await router.submit([alert(i) for i in range(3)])
    assert worker.spool is not None and worker.spool.pending == 3
    worker.spool.close()
    router.store.close()
    again = AlertRouter(s, tmp_path)
    await again.start()
    await again.wait_idle(5)
    assert again.store.count() == 3
    await again.stop()


async def test_suppression_counts_on_first_alert(tmp_path: Path) -> None:
    clock = Clock()
    s = settings(sinks=[{"type": "store"}],
                 suppression={"policies": [{"rules": ["r1"], "group_by": ["user"], "window_s": 60}]})
    router = AlertRouter(s, tmp_path, clock=clock)
    await router.start()
    before = suppressed("window")
    a1 = alert(1, event={"user": "alice", "cmd": "x"})
    await router.submit([a1, alert(2, event={"user": "alice", "cmd": "x"}),
                         alert(3, event={"user": "bob", "cmd": "x"}), alert(4, event={"user": "alice", "cmd": "y"}),
                         alert(5, r=rule("r2"), event={"user": "alice"})])
    await router.wait_idle(5)
    assert router.store.count() == 3  # alice (r1), bob (r1), alice (r2)
    assert suppressed("window") == before + 2
    await router.submit([a1])  # the same alert again (retried batch) is not a repeat
    clock.now += 61
    await router.tick()
    await router.wait_idle(5)
    doc = router.store.get(a1.id)
    assert doc is not None and doc["pipesentry"]["suppressed_count"] == 2
    await router.submit([alert(6, event={"user": "alice", "cmd": "x"})])  # new window: goes out
    await router.wait_idle(5)
    assert router.store.count() == 4
    await router.stop()


def test_routing_min_level_rate_limit_silences_grouping(tmp_path: Path) -> None:
    clock = Clock()
    s = settings(
        sinks=[{"type": "null"}],
        receivers=[
            {"type": "webhook", "name": "oncall", "url": "http://127.0.0.1:9/x", "min_level": "high",
             "rate_limit_per_min": 1, "burst": 2},
            {"type": "slack", "name": "chat", "webhook_url": "http://127.0.0.1:9/s"},
        ],
        routes=[
            {"match": {"tags": ["attack.t1059*"], "logsource": {"product": "github"}}, "receivers": ["oncall"],
             "continue": False},
            {"match": {"fields": {"user": ["bob", "carol"]}}, "receivers": ["chat"]},
            {"match": {"min_level": "critical"}, "receivers": ["oncall"]},
        ],
        grouping={"group_by": ["user"], "window_s": 300, "update_interval_s": 30},
    )
    router = AlertRouter(s, tmp_path, clock=clock)
    router.store.open()  # decisions by hand, not started: the silences below are saved in the store
    exec_rule = rule("r-exec", "high", ("attack.t1059.004",))
    low_rule = rule("r-low", "low", ("attack.t1059",))
    crit = rule("r-crit", "critical", ())
    d = router.decide([alert(1, r=exec_rule, event={"user": "alice"}),
                       alert(2, r=exec_rule, event={"user": "alice"}),
                       alert(3, r=exec_rule, event={"user": "bob"}),
                       alert(4, r=low_rule, event={"user": "bob"}),
                       alert(5, r=crit, event={"user": "carol"})], clock.now)
    assert len(d.documents) == 5
    oncall = d.pages["oncall"]
    # alice and bob (exec) open two groups; low level is below min_level; crit opens a third -> rate limit
    assert [(p["action"], p["group"]["user"], p["rule"]["id"]) for p in oncall] == [
        ("trigger", "alice", "r-exec"), ("trigger", "bob", "r-exec")]
    assert [p["rule"]["id"] for p in d.pages["chat"]] == ["r-crit"]  # t1059 route had continue: false
    assert oncall[0]["url"].endswith(f"/alerts/{oncall[0]['alert_id']}") and "/api/" not in oncall[0]["url"]

    # repeats fold into the group; an update after the interval, a resolve when quiet
    clock.now += 40
    d2 = router.decide([alert(6, r=exec_rule, event={"user": "alice"})], clock.now)
    assert "oncall" not in d2.pages
    updates = router.grouper.tick(clock.now)
    assert [(u["action"], u["count"]) for u in updates] == [("update", 3)]
    clock.now += 301
    resolves = router.grouper.tick(clock.now)
    assert sorted((r["receiver"], r["action"]) for r in resolves) == [
        ("chat", "resolve"), ("oncall", "resolve"), ("oncall", "resolve")]

    # silences mute pages, not records
    router.silences.create(SilenceRequest(match=SilenceMatch(rule_ids=["r-ex*"], fields={"user": "alice"}),
                                          duration_s=60, comment="alice's exec is planned"), clock.now,
                           created_by="ops")
    before = suppressed("silence")
    d3 = router.decide([alert(7, r=exec_rule, event={"user": "alice"})], clock.now)
    assert d3.pages == {} and len(d3.documents) == 1
    assert suppressed("silence") == before + 1
    clock.now += 61
    d4 = router.decide([alert(8, r=exec_rule, event={"user": "alice"})], clock.now)
    assert [p["action"] for p in d4.pages["oncall"]] == ["trigger"]
    router.store.close()


async def test_submit_raises_when_spool_full(tmp_path: Path) -> None:
    s = settings(sinks=[{"type": "store"}], spool={"max_bytes": 4096})
    router = AlertRouter(s, tmp_path)
    await router.start()
    worker = router.workers["store"]
    assert worker._task is not None
    worker._task.cancel()  # the sink is stuck: nothing drains
    with pytest.raises(RouterError):
        for i in range(50):
            await router.submit([alert(i)])
    await router.stop(drain_s=0)


async def test_reload_swaps_routes_and_sinks(tmp_path: Path) -> None:
    router = AlertRouter(settings(sinks=[{"type": "null"}]), tmp_path)
    await router.start()
    assert router.decide([alert(1)]).pages == {}
    router.reload(settings(sinks=[{"type": "null"}, {"type": "store"}],
                           receivers=[{"type": "webhook", "name": "w", "url": "http://127.0.0.1:9/"}],
                           routes=[{"receivers": ["w"]}]))
    assert list(router.decide([alert(2)]).pages) == ["w"]
    assert set(router.workers) == {"null", "store", "w"}
    router.reload(settings(sinks=[{"type": "store"}]))  # the webhook and null sink go away
    await router.submit([alert(3)])  # straight after the reload: the new store sink takes it
    await router.wait_idle(5)
    assert router.store.get(alert(3).id) is not None
    assert set(router.workers) == {"store"}
    await router.stop(drain_s=0)


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="unknown receivers"):
        settings(routes=[{"receivers": ["nope"]}])
    with pytest.raises(ValueError, match="unique"):
        settings(sinks=[{"type": "store"}, {"type": "store"}])
    s = settings(receivers=[{"type": "pagerduty", "routing_key": "secret-key"}])
    assert "secret-key" not in s.model_dump_json()


async def test_store_retention_prunes_old_alerts(tmp_path: Path) -> None:
    clock = Clock(1_700_000_000.0 + 40 * 86_400)
    router = AlertRouter(settings(sinks=[{"type": "store"}], store_retention_days=30), tmp_path, clock=clock)
    router.store.open()  # ticked by hand, not started
    old, recent = alert(1, ts=1_700_000_000.0), alert(2, ts=clock.now - 86_400)
    router.store.upsert([old.to_document(), recent.to_document()])
    await router.tick()
    assert router.store.get(old.id) is None and router.store.get(recent.id) is not None
    router.store.close()


async def test_open_page_groups_survive_restart(tmp_path: Path) -> None:
    clock = Clock()
    s = settings(sinks=[{"type": "null"}],
                 receivers=[{"type": "webhook", "name": "w", "url": "http://127.0.0.1:9/"}],
                 routes=[{"receivers": ["w"]}], grouping={"window_s": 60})
    router = AlertRouter(s, tmp_path, clock=clock)
    await router.start()
    trigger = router.decide([alert(1), alert(2)]).pages["w"][0]
    await router.stop(drain_s=0)
    again = AlertRouter(s, tmp_path, clock=clock)
    await again.start()
    assert again.decide([alert(3)]).pages == {}  # still the same open group
    clock.now += 61
    resolves = again.grouper.tick(clock.now)
    assert [(r["action"], r["dedup_key"], r["count"]) for r in resolves] == [
        ("resolve", trigger["dedup_key"], 3)]
    await again.stop(drain_s=0)


async def test_corrupt_spool_record_skipped_on_replay(tmp_path: Path) -> None:
    s = settings(sinks=[{"type": "store"}])
    router = AlertRouter(s, tmp_path)
    await router.start()
    worker = router.workers["store"]
    assert worker._task is not None and worker.spool is not None
    worker._task.cancel()  # down before delivering: three alerts stay spooled
    alerts = [alert(i) for i in range(3)]
    await router.submit(alerts)
    worker.spool.close()
    router.store.close()
    seg = next((tmp_path / "alerting" / "spool" / "store").glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[data.find(alerts[1].id.encode()) + 3] ^= 0x01  # damage the middle record
    seg.write_bytes(bytes(data))
    before = metrics.REGISTRY.get_sample_value("pipesentry_spool_corrupt_records_total", {"sink": "store"}) or 0
    again = AlertRouter(s, tmp_path)
    await again.start()
    await again.wait_idle(5)
    assert again.store.get(alerts[0].id) is not None and again.store.get(alerts[2].id) is not None
    assert again.store.count() == 2
    assert metrics.REGISTRY.get_sample_value("pipesentry_spool_corrupt_records_total", {"sink": "store"}) == before + 1
    await again.stop()
