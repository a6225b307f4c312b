"""service.pipeline.replay's lazy batches: a line file's batch is its lines as bytes (``LazyMessages``), and a
message with its origin is built only for a line the screen picks (or a cleared run's tick, or a reject).
Differentially, over generated and hostile lines: the same alerts (line, rule, id, matched fields, details, origin)
in the same order, the same rejects and counts as a batch whose every message is built first and read as plain
messages; routed and not, lean and not, stateless and stateful, stdin and a file."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.sigma.screen import AVAILABLE
from service.config import EventSettings
from service.decoders import build_decoder
from service.detection import DetectionSet, compile_detection
from service.pipeline import replay
from service.pipeline.replay import LineFileSource, logsource_spec, replay_file
from service.sources.base import InputSpec, LazyMessages, RawMessage, Rejected
from service.sources.filetail import line_origin
from service.sources.http import content_origin
from tests.support.sigma import rule_yaml
from tests.unit.service.pipeline.test_core import _LINE, _detection, _generated
from tests.unit.service.pipeline.test_replay import _plain

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the native screen is not built (no Rust toolchain)")


class _Eager(LazyMessages):
    """Every message built up front; not a ``LazyMessages`` to the core, which reads them one by one."""

    def __init__(self, values: list[bytes], times: list[float],
                 build: Callable[[Sequence[int]], list[RawMessage]]) -> None:
        super().__init__(values, times, build)
        self.at(range(len(values)))


def _run(data: bytes, detection: DetectionSet, *, eager: bool, routed: bool, alert_events: bool,
         path: Path | None) -> tuple[list[tuple[Any, ...]], list[tuple[int, str, str]], tuple[int, int, int]]:
    base = InputSpec("stdin", build_decoder("json", {}), None, tuple(EventSettings().timestamp_fields))
    rejects: list[tuple[int, str, str]] = []

    def on_reject(line: int, reject: Rejected) -> None:
        rejects.append((line, reject.reason, reject.error))

    correlation, anomaly = detection.new_engines()  # fresh state for each run
    fresh = DetectionSet(detection.ruleset, correlation, anomaly, detection.errors, detection.generation)
    with pytest.MonkeyPatch.context() as patch:
        if eager:
            patch.setattr(replay, "LazyMessages", _Eager)
        if path is not None:
            path.write_bytes(data)
        stream = path.open("rb") if path is not None else io.BytesIO(data)
        with stream:
            replayed = replay_file(stream, base, fresh, path=str(path) if path is not None else None,
                                   on_reject=on_reject, alert_events=alert_events,
                                   spec_of=logsource_spec("logsource", base) if routed else None)
    alerts = [(line, alert.rule.id, alert.id, alert.matched, alert.details, alert.origin)
              for line, alert in replayed.alerts]
    # and, independently of the reader, each alert names its own line by its origin
    origins = {number: (content_origin("stdin", line) if path is None
                        else line_origin(f"{path}:{os.stat(path).st_ino}", start, line))
               for number, start, line in _plain(io.BytesIO(data))}
    assert all(origin == origins[line] for line, *_, origin in alerts)
    return alerts, rejects, (replayed.events, replayed.lines, replayed.bad_lines)


@pytest.fixture(scope="module")
def detection(tmp_path_factory: pytest.TempPathFactory) -> DetectionSet:
    return _detection(tmp_path_factory.mktemp("rules"))


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(_LINE, min_size=1, max_size=40), routed=st.booleans(), lean=st.booleans(),
       from_file=st.booleans())
def test_lazy_batches_raise_what_built_messages_raise(detection: DetectionSet, tmp_path_factory: pytest.TempPathFactory,
                                                      lines: list[bytes], routed: bool, lean: bool,
                                                      from_file: bool) -> None:
    data = b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n"
    path = tmp_path_factory.mktemp("events") / "events.ndjson" if from_file else None
    kwargs: dict[str, Any] = {"routed": routed, "alert_events": not lean, "path": path}
    assert _run(data, detection, eager=False, **kwargs) == _run(data, detection, eager=True, **kwargs)


@pytest.mark.parametrize("routed", [False, True], ids=["unrouted", "routed"])
def test_a_generated_stream_with_stateful_detection_ticks_and_raises_the_same(tmp_path: Path, routed: bool) -> None:
    detection = _detection(tmp_path, correlation=True)
    assert detection.stateful
    data = _generated(1500)
    lazy = _run(data, detection, eager=False, routed=routed, alert_events=True, path=None)
    assert lazy == _run(data, detection, eager=True, routed=routed, alert_events=True, path=None)
    assert len(lazy[0]) > 100 and lazy[1]  # alerts and rejects both compared


def test_only_the_picked_lines_are_built(tmp_path: Path) -> None:
    """The point of the lazy batch: with a screen that clears most lines, most messages are never built."""
    (tmp_path / "adm.yml").write_text(rule_yaml({"selection": {"user": "adm"}, "condition": "selection"}, title="adm"))
    outcome = compile_detection([tmp_path], [], skip_invalid=True, correlation=False)
    assert outcome.detection is not None
    built: list[int] = []
    real = replay._builder

    def counting(*args: Any) -> Callable[[Sequence[int]], list[RawMessage]]:
        build = real(*args)

        def wrapped(positions: Sequence[int]) -> list[RawMessage]:
            built.extend(positions)
            return build(positions)

        return wrapped

    data = b"".join(b'{"user":"%s"}\n' % (b"adm" if n % 100 == 0 else b"bob") for n in range(1000))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(replay, "_builder", counting)
        replayed = replay_file(io.BytesIO(data), InputSpec("stdin", build_decoder("json", {}), None, ()),
                               outcome.detection, path=None, on_reject=lambda line, reject: None)
    assert [line for line, _ in replayed.alerts] == list(range(1, 1001, 100))
    assert len(built) == 10


def test_a_lazy_batch_builds_each_message_once_and_in_any_order() -> None:
    calls: list[list[int]] = []

    def build(positions: Sequence[int]) -> list[RawMessage]:
        calls.append(list(positions))
        return [RawMessage(b"v%d" % p, lambda: None, float(p)) for p in positions]  # type: ignore[arg-type, return-value]

    messages = LazyMessages([b"v0", b"v1", b"v2", b"v3"], [0.0, 1.0, 2.0, 3.0], build)
    picked = messages.at([1, 3])
    assert [m.value for m in picked] == [b"v1", b"v3"]
    assert messages[3] is picked[1] and messages[-3] is picked[0]
    assert [m.value for m in messages[::-1]] == [b"v3", b"v2", b"v1", b"v0"]
    assert [m.value for m in messages] == [b"v0", b"v1", b"v2", b"v3"] and len(messages) == 4
    assert calls == [[1, 3], [2, 0]]  # built once each
    assert sorted(messages.built()) == [0, 1, 2, 3]
    with pytest.raises(IndexError):
        messages[4]
    with pytest.raises(IndexError):
        messages[-5]


def test_the_source_reads_on_until_stop_once_a_batch_is_out() -> None:
    stop = asyncio.Event()
    data = b"".join(b'{"n":%d}\n' % n for n in range(10))
    source = LineFileSource(io.BytesIO(data), InputSpec("stdin", build_decoder("json", {}), None, ()),
                            lambda alerts, rejects: None, batch_lines=3)

    async def read() -> list[int]:
        sizes = []
        async for batch in source.batches(stop):
            sizes.append(len(batch.messages))
            stop.set()
        return sizes

    assert asyncio.run(read()) == [3, 1]  # the line after the first batch is read, then the stop is seen
