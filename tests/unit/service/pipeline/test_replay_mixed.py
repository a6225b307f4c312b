"""service.pipeline.replay over a file that mixes log sources line by line (``eval --logsource-field``):
batches of many log sources (:class:`service.pipeline.core.MixedSpecs`) raise exactly the alerts, on
the same lines and in the same order, that one batch per change of log source raised."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.eventgen import generate
from service.config import EventSettings
from service.decoders import build_decoder
from service.detection import DetectionSet, compile_detection
from service.pipeline.core import Pipeline
from service.pipeline.replay import logsource_spec, replay_file
from service.rules import default_rules_dir
from service.sources.base import InputSpec, Rejected


def _lines(count: int, seed: int) -> bytes:
    out = []
    for number, (logsource, event) in enumerate(generate(count, seed=seed)):
        if number % 97 == 5:
            out.append(b"{not json")  # bad lines are reported on their own line
        elif number % 89 == 3:
            out.append(orjson.dumps(event))  # no log source: the input's
        else:
            out.append(orjson.dumps({**event, "logsource": logsource.as_dict()}))
    return b"\n".join(out) + b"\n"


def _detection(correlation: bool) -> DetectionSet:
    outcome = compile_detection([default_rules_dir()], [], skip_invalid=True, correlation=correlation)
    assert outcome.detection is not None
    return outcome.detection


def _replay(data: bytes, detection: DetectionSet, *, mixed: bool, screen: bool,
            calls: list[int] | None = None) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
    base = InputSpec("stdin", build_decoder("json", {}), None, tuple(EventSettings().timestamp_fields))
    rejects: list[tuple[int, str]] = []

    def on_reject(line: int, reject: Rejected) -> None:
        rejects.append((line, reject.reason))

    correlation, anomaly = detection.new_engines()  # fresh state for each run
    fresh = DetectionSet(detection.ruleset, correlation, anomaly, detection.errors, detection.generation)
    replayed = replay_file(io.BytesIO(data), base, fresh, path=None, on_reject=on_reject,
                           spec_of=logsource_spec("logsource", base), screen=screen, mixed_batches=mixed)
    alerts = [(line, alert.rule.id, alert.id) for line, alert in replayed.alerts]
    return alerts, rejects


@pytest.mark.parametrize("correlation", [False, True], ids=["stateless", "correlations"])
@pytest.mark.parametrize("screen", [True, False], ids=["screen", "no-screen"])
def test_mixed_batches_raise_what_one_batch_per_log_source_raised(correlation: bool, screen: bool) -> None:
    data = _lines(3000, seed=11)
    detection = _detection(correlation)
    assert detection.stateful == correlation
    before = _replay(data, detection, mixed=False, screen=screen)
    after = _replay(data, detection, mixed=True, screen=screen)
    assert after == before
    assert before[0] and before[1]
    assert [line for line, *_ in after[0]] == sorted(line for line, *_ in after[0])


def test_a_mixed_file_is_read_in_full_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _lines(2500, seed=12)
    detection = _detection(False)
    calls: list[int] = []
    original = Pipeline.detect_now

    def counting(self: Pipeline, source: str, messages: Any, spec: Any, content: Any = None) -> Any:
        calls.append(len(content.messages) if content is not None else len(messages))
        return original(self, source, messages, spec, content)

    monkeypatch.setattr(Pipeline, "detect_now", counting)
    _replay(data, detection, mixed=True, screen=True)
    assert calls == [1000, 1000, 500]
    calls.clear()
    _replay(data, detection, mixed=False, screen=True)
    assert len(calls) > 500  # one batch per change of log source


def test_the_eval_command_routes_a_mixed_file_as_before(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    data = _lines(3000, seed=11)
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(data)
    assert main(["eval", "--rules", str(default_rules_dir()), "--logsource-field", "logsource",
                 "--allow-bad-lines", str(path)]) == 0
    out = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    sigma = [(record["line"], record["rule_id"]) for record in out if record["rule_kind"] == "sigma"]
    before, _ = _replay(data, _detection(True), mixed=False, screen=True)
    assert sigma and sigma == [(line, rule) for line, rule, _ in before if rule in {r for _, r in sigma}]
    assert len(sigma) == len([a for a in before if a[1] in {r for _, r in sigma}])
