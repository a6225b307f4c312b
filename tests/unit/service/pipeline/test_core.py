"""service.pipeline.core's ``alert_events=False`` (``eval``): events whose rules the native screen decided,
each matching one showing no field or the fields the decision shows, are left undecoded, and nothing else changes. Differentially, over generated
and hostile lines: the same alerts (line, rule, id, matched fields, details) in the same order, the same
rejects and the same event count as decoding every event; with stateful detection nothing is left undecoded."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.eventgen import generate
from detectors.alert import Alert
from detectors.sigma.screen import AVAILABLE
from service.config import EventSettings
from service.decoders import build_decoder
from service.detection import DetectionSet, compile_detection
from service.pipeline.replay import Replayed, logsource_spec, replay_file
from service.rules import default_rules_dir
from service.sources.base import InputSpec, Rejected
from tests.support.rules import failed_logins_in_a_minute
from tests.support.sigma import rule_yaml

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the native screen is not built (no Rust toolchain)")

BARE_RULES = [  # rules that match while showing no field: the events they alone match are left undecoded
    rule_yaml({"selection": {"EventID": 4625}, "condition": "not selection"}, {"product": "windows"},
              title="not a failed logon"),
    rule_yaml({"selection": {"user|contains": "adm"}, "condition": "not selection"}, title="no admin"),
    rule_yaml({"sel": {"host": None}, "condition": "not sel"}, title="has a host"),
    rule_yaml({"a": {"status": [500, 503]}, "b": {"path|startswith": "/api"}, "condition": "not (a or b)"},
              title="neither"),
]
FIELD_RULES = [  # rules that show fields, or that the screen may leave to Python
    rule_yaml({"selection": {"user|contains": "adm"}, "condition": "selection"}, title="admin"),
    rule_yaml({"selection": {"cmd|re": "(?i)curl.+\\|\\s*sh"}, "condition": "selection"}, title="piped"),
    rule_yaml({"keywords": ["mimikatz", "sekurlsa"], "condition": "keywords"}, title="keywords"),
    rule_yaml({"sel": {"host|endswith": ".example"}, "filter": {"user": "svc"}, "condition": "sel and not filter"},
              title="host"),
]


def _detection(tmp_path: Path, correlation: bool = False) -> DetectionSet:
    for number, text in enumerate([*BARE_RULES, *FIELD_RULES]):
        (tmp_path / f"r{number}.yml").write_text(text)
    if correlation:
        (tmp_path / "corr.yml").write_text(failed_logins_in_a_minute(generate=True))
    outcome = compile_detection([default_rules_dir(), tmp_path], [], skip_invalid=True, correlation=correlation)
    assert outcome.detection is not None and not [e for e in outcome.errors if str(tmp_path) in str(e)]
    return outcome.detection


def _run(data: bytes, detection: DetectionSet, *, alert_events: bool, routed: bool = False
         ) -> tuple[list[tuple[int, Alert]], list[tuple[int, str, str]], Replayed]:
    base = InputSpec("stdin", build_decoder("json", {}), None, tuple(EventSettings().timestamp_fields))
    rejects: list[tuple[int, str, str]] = []

    def on_reject(line: int, reject: Rejected) -> None:
        rejects.append((line, reject.reason, reject.error))

    correlation, anomaly = detection.new_engines()  # fresh state for each run
    fresh = DetectionSet(detection.ruleset, correlation, anomaly, detection.errors, detection.generation)
    replayed = replay_file(io.BytesIO(data), base, fresh, path=None, on_reject=on_reject, alert_events=alert_events,
                           spec_of=logsource_spec("logsource", base) if routed else None)
    return replayed.alerts, rejects, replayed


def _shown(alerts: list[tuple[int, Alert]]) -> list[tuple[Any, ...]]:
    """What ``eval`` prints of each alert."""
    return [(line, alert.rule.id, alert.id, alert.matched, alert.details) for line, alert in alerts]


HOSTILE = [b"{not json", b"[1, 2]", b'"text"', b"null", b"{}", b'{"a":1,"a":2}', b'{"user":"adm","user":"x"}',
           b'{"a":"\\ud800"}', b'{"a":"\xff"}', b'{"a":1e400}', b'{"a":NaN}', b'{"a":1}x', b"\xef\xbb\xbf{}",
           b'{"a":' + b"[" * 70 + b"]" * 70 + b"}", b'{"a":123456789012345678901234567890}', b'{"EventID":4625}',
           b'{"host":null}', b'{"status":500}', b'{"path":"/api/x"}', b'{"user":"ADMIN"}', b'{"":{"user":"adm"}}',
           b'{"user.name":"adm","user":{"name":"x"}}', b'{"cmd":"curl x | sh"}', b'{"msg":"MIMIKATZ"}', b"  {}\t"]


def _event_line(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


_EVENT = st.fixed_dictionaries({}, optional={
    "EventID": st.sampled_from([4625, 4624, "4625", None]),
    "user": st.sampled_from(["adm", "admin", "Administrator", "svc", "bob", "", None, 7]),
    "host": st.sampled_from(["a.example", "b.example.org", None, ["x.example"], {"name": "h"}]),
    "status": st.sampled_from([500, 503, 200, "500", 500.0, True]),
    "path": st.sampled_from(["/api/v1", "/home", "/API", ""]),
    "cmd": st.sampled_from(["curl http://x | sh", "ls", "CURL a|  SH", "wget"]),
    "msg": st.sampled_from(["mimikatz here", "sekurlsa::logonpasswords", "hello"]),
    "ts": st.sampled_from([1_700_000_000, "2026-11-01T00:00:00Z", "nonsense", 1_700_000_000_123]),
    "logsource": st.sampled_from([{"product": "windows"}, {"product": "linux"}, "product=test", None]),
})
_LINE = st.one_of(_EVENT.map(_event_line), st.sampled_from(HOSTILE), st.binary(max_size=40))


@pytest.fixture(scope="module")
def detection(tmp_path_factory: pytest.TempPathFactory) -> DetectionSet:
    return _detection(tmp_path_factory.mktemp("rules"))


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(_LINE, min_size=1, max_size=40), routed=st.booleans())
def test_undecoded_events_raise_what_decoded_ones_raised(detection: DetectionSet, lines: list[bytes],
                                                         routed: bool) -> None:
    data = b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n"
    full, full_rejects, full_run = _run(data, detection, alert_events=True, routed=routed)
    lean, lean_rejects, lean_run = _run(data, detection, alert_events=False, routed=routed)
    assert _shown(lean) == _shown(full)
    assert lean_rejects == full_rejects
    assert (lean_run.events, lean_run.lines, lean_run.bad_lines) == (full_run.events, full_run.lines,
                                                                     full_run.bad_lines)


def _generated(count: int) -> bytes:
    out = []
    for number, (logsource, event) in enumerate(generate(count, seed=7)):
        if number % 53 == 5:
            out.append(HOSTILE[number % len(HOSTILE)])
        else:
            out.append(orjson.dumps({**event, "logsource": logsource.as_dict()}))
    return b"\n".join(out) + b"\n"


@pytest.mark.parametrize("routed", [False, True], ids=["unrouted", "routed"])
def test_a_generated_stream_raises_the_same_alerts_with_most_events_left_undecoded(detection: DetectionSet,
                                                                                    routed: bool) -> None:
    data = _generated(1500)
    full, full_rejects, full_run = _run(data, detection, alert_events=True, routed=routed)
    lean, lean_rejects, lean_run = _run(data, detection, alert_events=False, routed=routed)
    assert _shown(lean) == _shown(full) and lean_rejects == full_rejects and lean_run.events == full_run.events
    events = {line: alert.event for line, alert in full}
    undecoded = {line for line, alert in lean if not alert.event and events[line]}
    assert len(undecoded) > 500  # the path under test was taken
    shown = {line for line, alert in lean if line in undecoded and alert.matched}
    assert shown  # and for events whose matched fields the screen showed


def test_with_stateful_detection_every_event_is_decoded(tmp_path: Path) -> None:
    detection = _detection(tmp_path, correlation=True)
    assert detection.stateful
    data = _generated(800)
    full, _, _ = _run(data, detection, alert_events=True)
    lean, _, _ = _run(data, detection, alert_events=False)
    assert [(line, a.id, a.event) for line, a in lean] == [(line, a.id, a.event) for line, a in full]
    assert sum(1 for _, alert in lean if alert.event) > 500
