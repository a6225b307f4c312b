"""Alerts, rules, a clock and a list sink for the alerting tests; the alerts API over a local store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from detectors.alert import Alert, build_alert
from detectors.model import LogSource, Match, Origin, RuleInfo
from service.alerting.api import api_router
from service.alerting.config import AlertingSettings
from service.alerting.router import AlertRouter
from service.api.auth import guard
from service.config import ApiSettings


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rule(rule_id: str = "r1", level: str = "high", tags: tuple[str, ...] = ("attack.execution",),
         title: str | None = None) -> RuleInfo:
    return RuleInfo(id=rule_id, title=title or f"Rule {rule_id}", level=level, author="Tester", tags=tags,
                    description="test rule")


def alert(offset: int = 0, *, r: RuleInfo | None = None, event: dict[str, Any] | None = None,
          ts: float = 1_700_000_000.0, topic: str = "ci", product: str | None = "github") -> Alert:
    ev = event if event is not None else {"user": "alice", "host": "h1", "cmd": "curl | sh"}
    return build_alert(Match(rule=r or rule(), fields=(("cmd", ev.get("cmd")),)), ev,
                       Origin(input="kafka", topic=topic, partition=0, offset=offset), event_time=ts, now=ts,
                       logsource=LogSource(product=product))


class ListSink:
    """A record sink keeping what it was given; records whose ``n`` is in ``reject`` are refused for good."""

    kind = "record"

    def __init__(self, name: str = "list", reject: frozenset[int] = frozenset()) -> None:
        self.name = name
        self.reject = reject
        self.got: list[dict[str, Any]] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def deliver(self, records: list[dict[str, Any]]) -> Any:
        from service.alerting.sinks.base import Outcome

        rejected = [(r, "refused by the test") for r in records if r.get("n") in self.reject]
        self.got += [r for r in records if r.get("n") not in self.reject]
        return Outcome(done=len(records), rejected=rejected)


def make_client(tmp_path: Path) -> tuple[TestClient, AlertRouter, Clock]:
    """A test client of the alerts and silences API over a store-only router that is not started."""
    clock = Clock()
    router = AlertRouter(AlertingSettings.model_validate({"sinks": [{"type": "store"}]}), tmp_path, clock=clock)
    router.store.open()  # the API reads the store of a router that is not started here
    router.silences.load()
    app = FastAPI()
    app.include_router(api_router(router))
    guard(app, ApiSettings())  # no tokens: every caller is the anonymous admin
    # a script's client: a loopback host, and the header that marks a non-browser caller
    return TestClient(app, base_url="http://127.0.0.1", headers={"X-Pipesentry-Client": "tests"}), router, clock
