"""Paging receivers end to end over HTTP, checked by local receivers that
validate each service's documented format (see receivers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service import metrics
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from tests.support.alerts import Clock, alert, rule
from tests.support.waits import until

from .receivers import Opsgenie, PagerDuty, Slack, Webhook

pytestmark = pytest.mark.integration
FAST_RETRY = {"initial_backoff_s": 0.05, "max_backoff_s": 0.2, "breaker_failures": 3, "breaker_reset_s": 0.3}


def make_settings(receivers: list[dict[str, Any]], **extra: Any) -> AlertingSettings:
    for r in receivers:
        r.setdefault("retry", FAST_RETRY)
    return AlertingSettings.model_validate({
        "sinks": [{"type": "null"}], "receivers": receivers,
        "routes": [{"receivers": [r["name"] for r in receivers]}],
        "grouping": {"group_by": ["user"], "window_s": 60, "update_interval_s": 10},
        "alert_base_url": "https://pipesentry.example.org/", "spool": {"fsync": "never"}, **extra})


LONG = rule("pd-rule", "critical", ("attack.execution", "attack.t1059.004", *tuple(f"tag.{i}" for i in range(30))),
            title="A very long rule title " * 60)


async def test_pagerduty_trigger_update_resolve(tmp_path: Path) -> None:
    pd = await PagerDuty().start()
    clock = Clock()
    router = AlertRouter(make_settings([{"type": "pagerduty", "name": "pd", "url": f"{pd.url}/v2/enqueue",
                                         "routing_key": "R0UTINGKEY"}]), tmp_path, clock=clock)
    await router.start()
    try:
        await router.submit([alert(1, r=LONG, event={"user": "alice", "cmd": "x" * 5000}),
                             alert(2, r=LONG, event={"user": "alice"}), alert(3, r=LONG, event={"user": "bob"})])
        await until(lambda: len(pd.got.accepted) == 2, what="two triggers")
        clock.now += 11
        await router.tick()
        await until(lambda: len(pd.got.accepted) == 3, what="update")
        clock.now += 61
        await router.tick()
        await until(lambda: len(pd.got.accepted) == 5, what="resolves")
    finally:
        await router.stop()
        await pd.stop()
    assert pd.got.rejected == []
    first = pd.got.accepted[0]
    assert first["event_action"] == "trigger" and first["routing_key"] == "R0UTINGKEY"
    assert len(first["payload"]["summary"]) == 1024  # cut to PagerDuty's limit
    assert first["payload"]["severity"] == "critical"
    assert first["links"][0]["href"].startswith("https://pipesentry.example.org/alerts/")
    update = pd.got.accepted[2]
    assert update["event_action"] == "trigger" and update["payload"]["custom_details"]["count"] == 2
    assert update["dedup_key"] == first["dedup_key"]
    assert {k: v["status"] for k, v in pd.incidents.items()} == {first["dedup_key"]: "resolved",
                                                                pd.got.accepted[1]["dedup_key"]: "resolved"}


async def test_opsgenie_create_and_close(tmp_path: Path) -> None:
    og = await Opsgenie(api_key="og-key").start()
    clock = Clock()
    router = AlertRouter(make_settings([{"type": "opsgenie", "name": "og", "url": og.url, "api_key": "og-key",
                                         "responders": [{"type": "team", "name": "sec"}]}]), tmp_path, clock=clock)
    await router.start()
    try:
        await router.submit([alert(1, r=LONG, event={"user": "alice"})])
        await until(lambda: len(og.got.accepted) == 1, what="create")
        clock.now += 61
        await router.tick()
        await until(lambda: len(og.got.accepted) == 2, what="close")
    finally:
        await router.stop()
        await og.stop()
    assert og.got.rejected == []
    created = og.got.accepted[0]
    assert len(created["message"]) <= 130 and len(created["tags"]) == 20
    assert created["priority"] == "P1" and created["details"]["author"] == "Tester"
    assert [a["status"] for a in og.alerts.values()] == ["closed"]


async def test_slack_block_kit_message(tmp_path: Path) -> None:
    slack = await Slack().start()
    router = AlertRouter(make_settings([{"type": "slack", "name": "chat", "webhook_url": slack.webhook_url}]),
                         tmp_path)
    await router.start()
    try:
        a = alert(1, r=LONG, event={"user": "alice", "cmd": "<script>" * 400})
        await router.submit([a])
        await until(lambda: len(slack.got.accepted) == 1, what="slack message")
    finally:
        await router.stop()
        await slack.stop()
    assert slack.got.rejected == []
    blocks = slack.got.accepted[0]["blocks"]
    button = next(b for b in blocks if b["type"] == "actions")["elements"][0]
    assert button["url"] == f"https://pipesentry.example.org/alerts/{a.id}"
    assert any("Tester" in f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", []))


async def test_webhook_signed_and_recovers_from_500s(tmp_path: Path) -> None:
    hook = await Webhook(secret="s3cret").start()
    hook.fail_next, hook.fail_status = 5, 500
    router = AlertRouter(make_settings([{"type": "webhook", "name": "hook", "url": f"{hook.url}/hook",
                                         "secret": "s3cret", "headers": {"X-Team": "sec"}}]), tmp_path)
    await router.start()
    failures_before = metrics.REGISTRY.get_sample_value("pipesentry_sink_failures_total", {"sink": "hook"}) or 0
    try:
        batch = [alert(i, r=rule(f"hook-{i}")) for i in range(4)]  # four rules: four pages
        await router.submit(batch)
        worker = router.workers["hook"]
        await until(lambda: worker.breaker.open, what="circuit to open")
        assert metrics.REGISTRY.get_sample_value("pipesentry_sink_up", {"sink": "hook"}) == 0
        await until(lambda: len(hook.got.accepted) == 4, what="delivery after recovery")
        await router.wait_idle(10)
    finally:
        await router.stop()
        await hook.stop()
    assert hook.got.rejected == []
    assert sorted(p["rule"]["id"] for p in hook.got.accepted) == [f"hook-{i}" for i in range(4)]  # exactly once
    assert all(h.get("X-Team") == "sec" for h in hook.headers)
    assert (metrics.REGISTRY.get_sample_value("pipesentry_sink_failures_total", {"sink": "hook"}) or 0) \
        >= failures_before + 3
    assert metrics.REGISTRY.get_sample_value("pipesentry_sink_up", {"sink": "hook"}) == 1


async def test_a_refused_signature_waits_in_the_spool_until_the_key_is_fixed(tmp_path: Path) -> None:
    """401 is the operator's to fix (a rotated key): the page is kept, the sink shows down, and once the
    receiver accepts the key again the page is delivered, exactly once, with nothing dead-lettered."""
    hook = await Webhook(secret="rotated").start()
    router = AlertRouter(make_settings([{"type": "webhook", "name": "hook2", "url": f"{hook.url}/hook",
                                         "secret": "current"}]), tmp_path)
    await router.start()
    try:
        await router.submit([alert(1, r=rule("hook-1"))])
        await until(lambda: bool(hook.got.rejected), what="the refused delivery")
        await until(lambda: metrics.REGISTRY.get_sample_value("pipesentry_sink_up", {"sink": "hook2"}) == 0,
                         what="the sink to show down")
        hook.secret = "current"  # the operator fixed the receiver's key
        await until(lambda: len(hook.got.accepted) == 1, what="delivery once the key is fixed")
        await router.wait_idle(10)
    finally:
        await router.stop()
        await hook.stop()
    assert hook.got.rejected[0][1] == ["bad signature"]
    assert [p["rule"]["id"] for p in hook.got.accepted] == ["hook-1"]
    assert not (tmp_path / "alerting" / "dead-letter" / "hook2.jsonl").exists()
