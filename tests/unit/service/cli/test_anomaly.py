"""``pipesentry anomaly replay|check`` end to end through the CLI dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import main
from tests.conftest import ROOT

CHECKS = """
- id: brute
  type: threshold
  title: Failed logins
  level: high
  by: [user]
  selection: {outcome: failure}
  count: 3
  window: 1m
- id: quiet
  type: silence
  by: [host]
  timeout: 2m
  allowed_lateness: 0s
"""


def write(tmp_path: Path, lines: list[object]) -> Path:
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_replay_prints_one_json_object_per_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checks = tmp_path / "checks.yml"
    checks.write_text(CHECKS)
    t = "2030-01-05T00:00:{:02d}Z"  # later than the time of reading: an event without a time is late
    events = write(tmp_path, [
        {"@timestamp": t.format(0), "host": "a", "user": "u", "outcome": "failure"},
        "not json",
        {"host": "a", "outcome": "failure", "user": "u"},  # no time: read now, as run would, so late
        {"ts": t.format(10), "host": "a", "user": "u", "outcome": "failure"},  # a default time field
        {"@timestamp": t.format(20), "host": "a", "user": "u", "outcome": "success"},
        {"@timestamp": [t.format(30)], "host": "a", "user": "u", "outcome": "failure"},
        {"@timestamp": "2030-01-05T00:05:00Z", "host": "b"},
    ])
    assert main(["anomaly", "replay", "--checks", str(checks), str(events)]) == 1  # a bad line
    assert "1 bad lines (--allow-bad-lines accepts them)" in capsys.readouterr().err
    assert main(["anomaly", "replay", "--allow-bad-lines", "--checks", str(checks), str(events)]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["check"], r["key"], r["event_time"]) for r in records] == [
        ("brute", {"user": "u"}, "2030-01-05T00:00:30.000Z"),
        ("quiet", {"host": "a"}, "2030-01-05T00:02:30.000Z"),
    ]
    brute = records[0]
    assert brute["title"] == "Failed logins" and brute["level"] == "high"
    assert brute["observed"] == 3 and brute["expected"] == {"count": 3, "window_s": 60.0}
    assert brute["score"] == 1.0 and brute["alert_key"].startswith("brute|user=u|")
    assert len({r["alert_id"] for r in records}) == 2
    assert "line 2: invalid JSON" in err
    assert "6 events, 2 alerts, 1 bad lines, 1 events without a time (taken at the time read), 2 checks" in err
    assert "late=2" in err  # the event without a time, for each check
    assert ("1 events have no time field (looked for: @timestamp, timestamp, time, ts, event.created, UtcTime)"
            in err)


def test_replay_timestamp_field_replaces_the_default_list(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    checks = tmp_path / "checks.yml"
    checks.write_text(CHECKS)
    events = write(tmp_path, [{"@timestamp": 1893456000, "when": 1893456000 + 10 * i, "user": "u",
                               "outcome": "failure"} for i in range(3)])
    assert main(["anomaly", "replay", "--checks", str(checks), "--timestamp-field", "when", str(events)]) == 0
    out, _ = capsys.readouterr()
    assert [json.loads(line)["event_time"] for line in out.splitlines()] == ["2030-01-01T00:00:20.000Z"]


def test_replay_state_out_and_in_continue_a_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checks = tmp_path / "checks.yml"
    checks.write_text(CHECKS)
    state = tmp_path / "state.json"
    first = write(tmp_path, [{"@timestamp": 1767571200 + i, "host": "a"} for i in range(3)])
    assert main(["anomaly", "replay", "--checks", str(checks), "--state-out", str(state), str(first)]) == 0
    capsys.readouterr()
    second = tmp_path / "later.ndjson"
    second.write_text(json.dumps({"@timestamp": 1767571200 + 600, "host": "b"}) + "\n")
    assert main(["anomaly", "replay", "--checks", str(checks), "--state-in", str(state), str(second)]) == 0
    out, _ = capsys.readouterr()
    assert [json.loads(line)["key"] for line in out.splitlines()] == [{"host": "a"}]


def test_replay_until_closes_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checks = tmp_path / "checks.yml"
    checks.write_text(CHECKS)
    events = write(tmp_path, [{"@timestamp": 1767571200 + i, "host": "a"} for i in range(3)])
    assert main(["anomaly", "replay", "--checks", str(checks), "--until", "2026-01-05T01:00:00Z",
                 str(events)]) == 0
    out, _ = capsys.readouterr()
    assert [json.loads(line)["check"] for line in out.splitlines()] == ["quiet"]


def test_replay_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("{id: x, type: volume, bogus: 1}")
    events = write(tmp_path, [{"a": 1}])
    assert main(["anomaly", "replay", "--checks", str(bad), str(events)]) == 1
    assert "bogus: unknown field" in capsys.readouterr().err
    good = tmp_path / "good.yml"
    good.write_text(CHECKS)
    assert main(["anomaly", "replay", "--checks", str(good), str(tmp_path / "missing.ndjson")]) == 2
    assert main(["anomaly", "replay", "--checks", str(good), "--until", "whenever", str(events)]) == 2


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["anomaly", "check", str(ROOT / "docs" / "examples" / "anomaly-checks.yml")]) == 0
    assert capsys.readouterr().out.strip() == "7 checks valid, 0 errors"
    bad = tmp_path / "bad.yml"
    bad.write_text("- {id: t, type: threshold, count: 0, window: 1m}\n")
    assert main(["anomaly", "check", str(bad), str(tmp_path / "nope.yml")]) == 1
    err = capsys.readouterr().err
    assert "count: Input should be greater than or equal to 1" in err and "cannot read" in err


def test_replay_uses_the_configured_time_fields_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checks = tmp_path / "checks.yml"
    checks.write_text(CHECKS)
    events = write(tmp_path, [{"when": 1893456000 + 10 * i, "user": "u", "outcome": "failure"} for i in range(3)])
    config = tmp_path / "pipesentry.yml"
    config.write_text(f"events: {{timestamp_fields: [when]}}\nanomaly: {{checks: ['{checks}']}}\n")
    assert main(["anomaly", "replay", "--config", str(config), str(events)]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["check"] for line in out.splitlines()] == ["brute"]
    assert "0 events without a time" in err and "have no time field" not in err
    assert main(["anomaly", "replay", "--checks", str(checks), str(events)]) == 0  # defaults: no 'when'
    assert "3 events have no time field (looked for: @timestamp," in capsys.readouterr().err
    assert main(["anomaly", "replay", str(events)]) == 2  # no checks at all
    assert "give --checks" in capsys.readouterr().err
    bad = tmp_path / "bad.yml"
    bad.write_text("events: {timestamp_fieldz: [x]}\n")
    assert main(["anomaly", "replay", "--config", str(bad), str(events)]) == 2


def test_replay_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checks = tmp_path / "checks.yml"
    checks.write_text(CHECKS)
    events = write(tmp_path, [{"ts": 1893456000 + 10 * i, "user": "u", "outcome": "failure"} for i in range(3)])
    assert main(["anomaly", "replay", "--checks", str(checks), "--format", "table", str(events)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["EVENT_TIME", "LEVEL", "CHECK"] and "brute" in table[1]
    assert main(["anomaly", "replay", "--checks", str(checks), "--format", "csv", str(events)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split(",")[2] == "brute"
