"""Correlation through the service's detector stage (service/detection.py): alerts, suppression, reload.

These exercise the wiring other parts own, with real rule files: the
correlation engine compiled by ``compile_detection``, fed by ``Detector.process``,
and its state carried across a hot reload (``Detector.swap``).
"""

from __future__ import annotations

from pathlib import Path

from detectors.model import LogSource, Origin
from service.detection import Detector, compile_detection
from service.sources.base import Item

RULES = """
title: Failed login
id: 11111111-1111-4111-8111-111111111111
name: failed
author: base author
logsource: {product: test}
detection: {sel: {action: fail}, condition: sel}
---
title: Brute force
id: 99999999-9999-4999-8999-999999999999
author: correlation author
level: high
correlation:
  type: event_count
  rules: [failed]
  group-by: [User]
  timespan: 1m
  condition: {gte: 3}
"""


def items(*stamps: float, prefix: str = "x") -> list[Item]:
    return [Item({"action": "fail", "User": "root", "@timestamp": ts}, Origin("file", key=f"{prefix}:{i}"),
                 LogSource(product="test"), ("@timestamp",), 0.0) for i, ts in enumerate(stamps)]


def detector(path: Path, generation: int = 0) -> tuple[Detector, object]:
    outcome = compile_detection([path], [], skip_invalid=False, generation=generation)
    assert outcome.accepted and outcome.detection is not None, outcome.errors
    return Detector(outcome.detection), outcome.detection


def test_correlation_alert_replaces_suppressed_base_alerts(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(RULES)
    det, _ = detector(path)
    alerts = det.process(items(1000.0, 1010.0, 1020.0), now=2000.0)
    assert [a.rule.title for a in alerts] == ["Brute force"]  # failed-login alerts are suppressed
    alert = alerts[0]
    assert alert.rule.author == "correlation author"
    # The same events read again from elsewhere (other origins): the id comes from the
    # correlation's alert_key (rule + group + window start), not from the event's origin.
    again, _ = detector(path)
    repeat = again.process(items(1000.0, 1010.0, 1020.0, prefix="y"), now=3000.0)
    assert [a.id for a in repeat] == [alert.id]


def test_hot_reload_carries_window_state(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(RULES)
    det, _ = detector(path)
    assert det.process(items(1000.0, 1010.0), now=2000.0) == []
    path.write_text(RULES.replace("level: high", "level: critical"))  # metadata change: same window meaning
    outcome = compile_detection([path], [], skip_invalid=False, generation=1)
    assert outcome.detection is not None
    det.swap(outcome.detection)
    alerts = det.process(items(1020.0), now=2001.0)
    assert [(a.rule.title, a.rule.level) for a in alerts] == [("Brute force", "critical")]
