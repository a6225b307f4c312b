"""``pipesentry anomaly replay --explain`` and ``--plot``."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from pathlib import Path

import pytest

from detectors.anomaly import AnomalyEngine, parse_checks
from service.cli import anomaly_explain, main

T0 = 1767571200  # 2026-01-05 00:00 UTC, a Monday
CHECKS = """
- id: lat
  type: metric
  by: [host]
  field: ms
  learning: 0s
  learn_for: 2h
  min_samples: 20
"""


def stream(tmp_path: Path, hosts: tuple[str, ...] = ("a", "b")) -> Path:
    """Two days of one value per host each five minutes, then host b jumps by 20 sd at 15:02."""
    rng = random.Random(4)
    lines = []
    for i in range(2 * 288):
        t = T0 + i * 300
        lines += [json.dumps({"ts": t, "host": h, "ms": round(100 + rng.gauss(0, 5), 1)}) for h in hosts]
    lines.append(json.dumps({"ts": T0 + 2 * 86400 + 15 * 3600 + 120, "host": "b", "ms": 200.0}))
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path


def replay(tmp_path: Path, *extra: str) -> int:
    checks = tmp_path / "checks.yml"
    checks.write_text(CHECKS)
    return main(["anomaly", "replay", "--checks", str(checks), *extra, str(stream(tmp_path))])


def test_explain_adds_the_models_view_to_each_metric_alert(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert replay(tmp_path, "--explain") == 0
    out, _ = capsys.readouterr()
    (alert,) = [json.loads(line) for line in out.splitlines()]
    assert alert["key"] == {"host": "b"} and alert["event_time"] == "2026-01-07T15:02:00.000Z"
    explain = alert["explain"]
    assert 95 < explain["expected"] < 105 and explain["expected"] == pytest.approx(alert["expected"]["center"])
    assert explain["band"] == {"low": alert["expected"]["low"], "high": alert["expected"]["high"]}
    assert explain["band"]["low"] < explain["expected"] < explain["band"]["high"] < 200
    assert explain["unit_from"] in ("scale", "spread")
    assert explain["unit"] == pytest.approx(max(explain["scale"], explain["spread"], explain["floor"]))
    assert explain["probability"] == alert["probability"] and explain["probability"] < 1e-4
    assert explain["score"] == alert["score"]
    assert explain["phase"] == {"hourly": ":00-:05 past the hour", "daily": "15:00-16:00 UTC"}


def test_without_explain_the_output_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay(tmp_path) == 0
    (alert,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "explain" not in alert


def test_plot_without_matplotlib_fails_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    assert replay(tmp_path, "--plot", str(tmp_path / "out.png")) == 2
    out, err = capsys.readouterr()
    assert out == "" and "pip install 'pipesentry[plot]'" in err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--plot-key", "region=eu"], "--plot-key names ['region'], check lat is keyed by ['host']"),
    (["--plot-key", "host"], "not FIELD=VALUE"),
    (["--plot-check", "nope"], "--plot-check 'nope' is not a metric check"),
])
def test_plot_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str) -> None:
    monkeypatch.setattr(anomaly_explain, "require_matplotlib", lambda: None)
    assert replay(tmp_path, "--plot", str(tmp_path / "out.png"), *extra) == 2
    assert message in capsys.readouterr().err


def recorder(plot_key: dict[str, str] | None = None) -> tuple[AnomalyEngine, anomaly_explain.Recorder]:
    specs, errors = parse_checks(CHECKS)
    assert errors == []
    engine = AnomalyEngine(specs)
    return engine, anomaly_explain.Recorder(engine, explain=False, plot=True, plot_key=plot_key)


def feed(engine: AnomalyEngine, path: Path) -> None:
    for line in path.read_text().splitlines():
        event = json.loads(line)
        engine.process(event, float(event["ts"]), None)


def test_the_plotted_key_is_the_first_to_alert_and_its_points_stay_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anomaly_explain, "MAX_POINTS", 100)
    engine, rec = recorder()
    feed(engine, stream(tmp_path))
    rec.finish()
    assert rec.plot_key == ("b",) and rec.title() == "lat host=b"
    assert len(rec.points) <= 101 and rec.thinned >= 1  # 577 values of b, evenly thinned
    assert rec.points[0][0] < T0 + 3600  # from the start: held while no key had alerted, then thinned
    assert rec.alerts == [(T0 + 2 * 86400 + 15 * 3600 + 120, 200.0, "high")]  # alerts always stay
    times = [p[0] for p in rec.points]
    assert times == sorted(times) and times[-1] == rec.alerts[0][0]


def test_a_named_key_or_else_the_first_key_is_plotted(tmp_path: Path) -> None:
    engine, rec = recorder({"host": "a"})
    feed(engine, stream(tmp_path))
    rec.finish()
    assert rec.plot_key == ("a",) and len(rec.points) == 2 * 288 and rec.alerts == []
    engine, rec = recorder()
    feed(engine, stream(tmp_path, hosts=("c", "d")))  # b's one value is too young to alert: no alert
    rec.finish()
    assert rec.plot_key == ("c",) and rec.alerts == []
    assert len(rec.points) == 2 * 288  # all of c's values, held until the end
    learning = [p for p in rec.points if math.isnan(p[2])]
    assert 20 <= len(learning) <= 30  # learn_for 2h, min_samples 20: no band drawn yet
    assert all(low <= expected <= high for _, _, expected, low, high in rec.points[len(learning):])


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed (extra: plot)")
def test_plot_writes_a_png_of_the_series_band_and_alerts(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lat.png"
    assert replay(tmp_path, "--plot", str(out), "--plot-key", "host=b") == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {out} (lat host=b, 577 points, 1 alerts)" in capsys.readouterr().err
