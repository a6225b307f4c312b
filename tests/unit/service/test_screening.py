"""The native screen inside the service (``service/screening.py``, the Kafka runner, the pipeline core, the
HTTP API): the same alerts with and without it, what is never screened, stale verdicts dropped."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from detectors.model import LogSource
from detectors.sigma.screen import AVAILABLE
from service.config import EventSettings, KafkaSettings
from service.detection import Detector, compile_detection
from tests.support.kafka import FakeConsumer, FakeDeadLetters, Record
from tests.support.routers import FakeRouter
from tests.support.rules import REPEATED_LOGINS
from tests.support.sigma import rule_yaml
from tests.support.waits import until

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the native screen is not built (no Rust toolchain)")

RULES = (REPEATED_LOGINS.replace("category: ci_job_log", "category: auth")
         .replace("Repeated Failed Logins", "Lone Failed Login").replace("{gte: 3}", "{lt: 2}"))
"""The failed-login correlation of the input tests, over ``auth`` events and as ``lt``: its windows
close (and alert) only when later events move time on."""


def auth_records(count: int = 60) -> list[Record]:
    """A failed login per user every few minutes, the window of each closed by ordinary events."""
    out = []
    for i in range(count):
        user = f"u{i % 4}"
        message = "login failed" if i % 7 == 0 else "login ok"
        value = orjson.dumps({"message": message, "user": user, "ts": 1000 + 20 * i})
        out.append(Record(value, None, i, 1_700_000_000_000 + i, []))
    return out


async def run_loop(tmp_path: Path, screen: bool) -> tuple[list[Any], int]:
    from service import metrics
    from service.sources.kafka import KafkaSource

    tmp_path.mkdir()
    (tmp_path / "rules.yml").write_text(RULES)
    detection = compile_detection([tmp_path / "rules.yml"], [], skip_invalid=False).detection
    settings = KafkaSettings(bootstrap_servers=["unused:1"], commit_interval_s=0.02,
                             topics={"auth": {"logsource": {"category": "auth"}}})
    tp = TopicPartition("auth", 0)
    consumer = FakeConsumer({tp: auth_records()})
    router = FakeRouter()
    runner = KafkaSource(settings, EventSettings(timestamp_fields=["ts"], screen=screen), Detector(detection), router,
                         dead_letters=FakeDeadLetters(), consumer_factory=lambda **_: consumer)
    before = metrics.EVENTS_SCREENED.labels("kafka")._value.get()
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await until(lambda: consumer.commits and consumer.commits[-1].get(tp) == 60)
    stop.set()
    await task
    return router.accepted, int(metrics.EVENTS_SCREENED.labels("kafka")._value.get() - before)


async def test_kafka_loop_gives_the_same_alerts_with_the_screen(tmp_path):
    screened, cleared = await run_loop(tmp_path / "a", screen=True)
    plain, none_cleared = await run_loop(tmp_path / "b", screen=False)
    assert none_cleared == 0 and cleared >= 40
    assert [(a.id, a.rule.title) for a in screened] == [(a.id, a.rule.title) for a in plain]
    titles = {a.rule.title for a in screened}
    assert titles == {"Lone Failed Login"}  # deferred windows closed by cleared events' time


async def ingest_pushed(tmp_path: Path, screen: bool, with_time: bool = True) -> tuple[list[Any], int, int]:
    """The auth records pushed as file lines in batches of 10: alerts, events accepted, events cleared."""
    from detectors.model import Origin
    from service import metrics
    from service.decoders import build_decoder
    from service.pipeline import Pipeline
    from service.sources.base import InputSpec, RawMessage

    tmp_path.mkdir()
    (tmp_path / "rules.yml").write_text(RULES)
    detection = compile_detection([tmp_path / "rules.yml"], [], skip_invalid=False).detection
    router = FakeRouter()
    pipeline = Pipeline(Detector(detection), router, screen=screen)
    spec = InputSpec("file", build_decoder("json", {}), LogSource(category="auth"), ("ts",) if with_time else ())
    messages = [RawMessage(r.value, Origin("file", key=f"auth.log:{r.offset}"), 1000.0005 + 20 * r.offset)
                for r in auth_records(70)]  # the last failed login's window is closed by cleared events only
    before = metrics.EVENTS_SCREENED.labels("file")._value.get()
    accepted = 0
    for start in range(0, len(messages), 10):
        accepted += (await pipeline.ingest("file", messages[start:start + 10], spec)).accepted
    return router.accepted, accepted, int(metrics.EVENTS_SCREENED.labels("file")._value.get() - before)


@pytest.mark.parametrize("with_time", [True, False], ids=["event-time", "arrival-time"])
async def test_push_inputs_give_the_same_alerts_with_the_screen(tmp_path, with_time):
    screened, accepted, cleared = await ingest_pushed(tmp_path / "a", screen=True, with_time=with_time)
    plain, plain_accepted, none_cleared = await ingest_pushed(tmp_path / "b", screen=False, with_time=with_time)
    assert accepted == plain_accepted == 70  # cleared events count as accepted
    assert none_cleared == 0 and cleared >= 50 and len(plain) == 10
    assert [(a.id, a.rule.title) for a in screened] == [(a.id, a.rule.title) for a in plain]
    assert {a.rule.title for a in screened} == {"Lone Failed Login"}  # windows closed by cleared runs' ticks
    assert [a.timestamp for a in screened] == pytest.approx([a.timestamp for a in plain], abs=0.001)


async def test_events_the_screen_decides_skip_the_python_evaluation(tmp_path, monkeypatch):
    """The screen decides the failed logins (the rule matches) and the rest (no rule does): the engine
    makes the matches from its decisions, and evaluates no event itself; the alerts are the same."""
    from detectors.sigma import engine

    evaluated: list[object] = []
    route_evaluate = engine.Route.evaluate

    def counted(self: engine.Route, event: Any, atoms: Any) -> Any:
        evaluated.append(event)
        return route_evaluate(self, event, atoms)

    monkeypatch.setattr(engine.Route, "evaluate", counted)
    screened, _, _ = await ingest_pushed(tmp_path / "a", screen=True)
    assert evaluated == []
    plain, _, _ = await ingest_pushed(tmp_path / "b", screen=False)
    assert len(evaluated) == 70
    assert [(a.id, a.rule.title, a.matched) for a in screened] == \
        [(a.id, a.rule.title, a.matched) for a in plain]


async def test_cleared_push_messages_never_build_their_origin(tmp_path):
    """Origins (a content hash per line) are built only for what is decoded, plus one per cleared run."""
    from functools import partial

    from detectors.model import Origin
    from service.decoders import build_decoder
    from service.pipeline import Pipeline
    from service.sources.base import InputSpec, RawMessage

    built: list[int] = []

    def origin(position: int) -> Origin:
        built.append(position)
        return Origin("stdin", key=str(position))

    (tmp_path / "rules.yml").write_text(RULES)
    pipeline = Pipeline(Detector(compile_detection([tmp_path / "rules.yml"], [], skip_invalid=False).detection),
                        FakeRouter())
    lines = [{"message": "login ok", "user": "u1", "ts": 1000 + i} for i in range(20)]
    lines.append({"message": "login failed", "user": "u1", "ts": 1020})
    messages = [RawMessage(orjson.dumps(line), partial(origin, i), 1.0) for i, line in enumerate(lines)]
    spec = InputSpec("stdin", build_decoder("json", {}), LogSource(category="auth"), ("ts",))
    assert (await pipeline.ingest("stdin", messages, spec)).accepted == 21
    assert sorted(built) == [19, 20]  # the cleared run's tick, and the decoded failed login


def test_topics_an_anomaly_check_watches_are_not_screened(tmp_path):
    from service.sources.kafka import KafkaSource
    from tests.support.rules import BUILDS_SILENCE

    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "checks.yml").write_text(BUILDS_SILENCE)  # watches category ci_job_log
    outcome = compile_detection([tmp_path / "rules.yml"], [], skip_invalid=False,
                                anomaly_checks=[tmp_path / "checks.yml"])
    assert outcome.accepted and outcome.detection.anomaly is not None
    settings = KafkaSettings(bootstrap_servers=["unused:1"], topics={
        "auth": {"logsource": {"category": "auth"}}, "ci": {"logsource": {"category": "ci_job_log"}},
        "raw": {"logsource": {"category": "auth"}, "decoder": {"type": "syslog"}}})
    runner = KafkaSource(settings, EventSettings(), Detector(outcome.detection), FakeRouter(),
                         dead_letters=FakeDeadLetters(), consumer_factory=lambda **_: None)
    current = runner.detector.current
    assert runner._screen(runner.spec("auth"), current) is not None
    assert runner._screen(runner.spec("ci"), current) is None  # the silence check sees every event
    assert runner._screen(runner.spec("raw"), current) is None  # only JSON objects are screened


def auth_runner(tmp_path: Path):
    from service.sources.kafka import KafkaSource

    (tmp_path / "rules.yml").write_text(RULES)
    settings = KafkaSettings(bootstrap_servers=["unused:1"], topics={"auth": {"logsource": {"category": "auth"}}})
    tp = TopicPartition("auth", 0)
    consumer = FakeConsumer({tp: auth_records()})
    detector = Detector(compile_detection([tmp_path / "rules.yml"], [], skip_invalid=False).detection)
    runner = KafkaSource(settings, EventSettings(timestamp_fields=["ts"]), detector, FakeRouter(),
                         dead_letters=FakeDeadLetters(), consumer_factory=lambda **_: consumer)
    return runner, consumer, {tp: auth_records()}


async def test_screen_results_of_a_replaced_ruleset_are_not_used(tmp_path):
    from service import metrics

    def cleared_by(screened: Any) -> int:
        before = metrics.EVENTS_SCREENED.labels("kafka")._value.get()
        assert runner._process(batches, consumer, screened).accepted == 60
        return int(metrics.EVENTS_SCREENED.labels("kafka")._value.get() - before)

    runner, consumer, batches = auth_runner(tmp_path)
    assert cleared_by(await runner._screen_batches(batches)) > 40
    screened = await runner._screen_batches(batches)
    fresh = compile_detection([tmp_path / "rules.yml"], [], skip_invalid=False, generation=2).detection
    runner.detector.swap(fresh)  # a reload between screening and detection
    assert cleared_by(screened) == 0


async def test_a_batch_screened_across_a_rebalance_is_dropped(tmp_path, monkeypatch):
    import threading

    runner, _, batches = auth_runner(tmp_path)
    release = threading.Event()

    class SlowScreen:
        rules = ()

        def decide_records(self, records, *args):
            release.wait(5)
            return list(range(len(records))), [math.nan] * (len(records) + 1), [None] * len(records)

    monkeypatch.setattr(runner, "_screen", lambda spec, current: (SlowScreen(), None, 1 << 20, 64))
    pending = asyncio.create_task(runner._screen_batches(batches))
    await asyncio.sleep(0.01)
    runner._set_assigned(set())  # partitions revoked meanwhile: the records are the next owner's
    release.set()
    assert await pending is None


async def test_an_account_id_spelled_as_a_float_alerts_through_the_http_api(tmp_path):
    """The issue's reproduction: the screen read 4.4102019666278236e+18 as another integer."""
    from tests.support.api import ADMIN, auth, build_api

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "account.yml").write_text(rule_yaml({"sel": {"account_id": "4410201966627823616"}, "condition": "sel"},
                                                 logsource={"category": "ci_job_log"}, title="Watched Account"))
    client, router, _ = build_api(tmp_path)
    async with client:
        for body in (b'{"account_id": 4.4102019666278236e+18}', b'{"account_id": 4410201966627823616}'):
            resp = await client.post("/api/v1/events?category=ci_job_log", content=body, headers=auth(ADMIN))
            doc = resp.json()
            assert doc["accepted"] == 1 and [a["title"] for a in doc["alerts"]] == ["Watched Account"], body
    assert len(router.accepted) == 2
