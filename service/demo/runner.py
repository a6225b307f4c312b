"""The story runner: the demo corpus through the service's own detection stage.

Events go through :class:`service.detection.Detector` exactly as in ``pipesentry run``
(Sigma pack, correlations with ``generate: false`` suppression, anomaly checks), in event
time. Web events need the processing pipeline of their server: the main detector compiles
the pack with the nginx pipeline, a second one compiles the web rules with the Envoy
pipeline for Envoy events. Each alert is attributed to the story of the event that raised it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from detectors.alert import Alert
from detectors.model import Origin
from detectors.sigma import RuleError
from service.demo.sources import BY_NAME, GeneratedEvent
from service.detection import Detector, compile_detection
from service.rules import default_rules_dir
from service.sources.base import Item

DEMO_CHECKS = Path(__file__).with_name("checks.yml")
NORMAL = "normal traffic"
BATCH = 256

Progress = Callable[[int, int], None]


@dataclass
class DemoDetectors:
    main: Detector
    envoy: Detector
    errors: tuple[RuleError, ...]

    def for_source(self, source: str) -> Detector:
        return self.envoy if source == "envoy" else self.main


@dataclass
class DemoAlert:
    alert: Alert
    story: str
    source: str


@dataclass
class DemoResult:
    events: int = 0
    alerts: list[DemoAlert] = field(default_factory=list)

    def by_story(self) -> dict[str, list[DemoAlert]]:
        out: dict[str, list[DemoAlert]] = {}
        for item in self.alerts:
            out.setdefault(item.story, []).append(item)
        return out

    def rule_counts(self, story: str | None = None) -> Counter[str]:
        return Counter(a.alert.rule.title for a in self.alerts if story is None or a.story == story)


def build_detectors(rules_dir: Path | None = None, checks: Sequence[Path] = (DEMO_CHECKS,)) -> DemoDetectors:
    """Compile the pack (with the nginx pipeline) and the web rules (with the Envoy pipeline)."""
    root = rules_dir or default_rules_dir()
    pipelines = root / "pipelines"
    main = compile_detection([root], [pipelines / "nginx.pipeline"], skip_invalid=True, anomaly_checks=list(checks))
    envoy = compile_detection([root / "web"], [pipelines / "envoy.pipeline"], skip_invalid=True, correlation=False)
    assert main.detection is not None and envoy.detection is not None  # skip_invalid=True always accepts
    return DemoDetectors(Detector(main.detection), Detector(envoy.detection), main.errors + envoy.errors)


def run(events: Sequence[GeneratedEvent], detectors: DemoDetectors, *, now: float | None = None,
        progress: Progress | None = None) -> DemoResult:
    """Evaluate ``events`` (already in event-time order) and attribute every alert to its story."""
    result = DemoResult(events=len(events))
    stories: dict[str, tuple[str, str]] = {}
    batch: list[Item] = []
    batch_detector: Detector | None = None
    stamp = now if now is not None else (events[-1].ts if events else 0.0)

    def flush() -> None:
        if batch_detector is None or not batch:
            return
        for alert in batch_detector.process(batch, now=stamp):
            story, source = stories.get(alert.origin.key or "", (NORMAL, "?"))
            result.alerts.append(DemoAlert(alert, story, source))
        batch.clear()

    for index, generated in enumerate(events):
        detector = detectors.for_source(generated.source)
        if detector is not batch_detector or len(batch) >= BATCH:
            flush()
            batch_detector = detector
            if progress is not None:
                progress(index, len(events))
        key = f"{generated.source}/{index}"
        stories[key] = (generated.story or NORMAL, generated.source)
        origin = Origin("demo", key=key)
        batch.append(Item(generated.event, origin, BY_NAME[generated.source].logsource, (), generated.ts))
    flush()
    if progress is not None:
        progress(len(events), len(events))
    return result
