"""A real Alertmanager (Debian package) receives pages, lists them with the
expected labels, and a resolve ends them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devservices.alertmanager import AlertmanagerServer
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from tests.support.alerts import alert, rule

pytestmark = pytest.mark.integration


async def poll(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(fetch)
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met; last value: {value!r}")
        await asyncio.sleep(0.2)


async def test_alertmanager_receives_lists_and_resolves(alertmanager_server: AlertmanagerServer,
                                                       tmp_path: Path) -> None:
    settings = AlertingSettings.model_validate({
        "sinks": [{"type": "null"}],
        "receivers": [{"type": "alertmanager", "name": "am", "url": alertmanager_server.url}],
        "routes": [{"match": {"levels": ["high", "critical"]}, "receivers": ["am"]}],
        "grouping": {"group_by": ["host.name"], "window_s": 3, "update_interval_s": 1},
        "spool": {"fsync": "never"}})
    router = AlertRouter(settings, tmp_path)  # wall clock: the router's own tick loop runs
    await router.start()
    r = rule("am-rule-1", "critical", title="Secrets exfiltration from CI")
    try:
        await router.submit([alert(1, r=r, event={"host": {"name": "runner-7"}}),
                             alert(2, r=r, event={"host": {"name": "runner-7"}}),
                             alert(3, r=rule("am-low", "low"), event={"host": {"name": "runner-7"}})])
        listed = await poll(lambda: alertmanager_server.alerts(rule_id="am-rule-1"), lambda v: len(v) == 1)
        labels = listed[0]["labels"]
        assert labels["alertname"] == "Secrets exfiltration from CI"
        assert labels["severity"] == "critical"
        assert labels["host_name"] == "runner-7"
        assert listed[0]["annotations"]["author"] == "Tester"
        assert listed[0]["status"]["state"] == "active"
        assert alertmanager_server.alerts(rule_id="am-low") == []  # not routed
        # the repeat folded into the group: an update refreshes the same alert
        await poll(lambda: alertmanager_server.alerts(rule_id="am-rule-1"),
                   lambda v: len(v) == 1 and v[0]["annotations"]["count"] == "2")
        # quiet for window_s: resolve (endsAt = now) ends it
        await poll(lambda: alertmanager_server.alerts(rule_id="am-rule-1"), lambda v: v == [])
    finally:
        await router.stop()
