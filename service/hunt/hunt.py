"""One hunt from start to end: rules -> queries -> hits -> alerts, with a report of what happened.

Shared by ``pipesentry hunt`` (:mod:`service.cli.hunt_cmd`) and ``POST /api/v1/hunts``
(:mod:`service.hunt.api`). Conversion is CPU work (pySigma), run by the caller where it suits
(the API runs it in a worker thread); searching is async I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from detectors.sigma import RuleError
from service.hunt.client import SearchClient
from service.hunt.convert import Failure, PipelineError, Query, Target, build_pipeline, convert_rules
from service.hunt.rules import load_hunt_rules
from service.hunt.runner import AlertSink, HuntReport, Progress, run_queries
from service.hunt.settings import HuntSettings
from service.hunt.timerange import TimeRange


@dataclass(frozen=True)
class HuntPlan:
    """What to hunt for and where."""

    rules: tuple[Path, ...]
    pipelines: tuple[Path, ...] = ()
    backend_pipelines: tuple[str, ...] = ()
    target: Target = "elasticsearch"
    index: str | None = None
    """Every rule over this index pattern instead of ``hunt.indices``."""
    time_range: TimeRange = field(default_factory=TimeRange)
    building_blocks: bool = False
    """Also hunt with rules that only feed correlations (``generate: false``), which the engine
    raises no alert for."""


@dataclass
class Conversion:
    queries: list[Query]
    failures: list[Failure]
    errors: list[RuleError]
    """Rule files, pipelines or documents that could not be read or parsed."""
    seconds: float

    @property
    def rules_per_s(self) -> float:
        done = len(self.queries) + len(self.failures)
        return done / self.seconds if self.seconds > 0 else 0.0


def convert_plan(plan: HuntPlan) -> Conversion:
    """Read, parse and convert the plan's rules; raises :class:`PipelineError` for unusable pipelines
    (every query would be wrong without them)."""
    started = time.perf_counter()
    loaded = load_hunt_rules(plan.rules, plan.pipelines)
    if loaded.pipeline_errors:
        first = loaded.pipeline_errors[0]
        raise PipelineError(f"{first.source}: {first.reason}")
    pipeline = build_pipeline(loaded.pipelines, plan.backend_pipelines, plan.target)
    rules = loaded.rules
    skipped: list[Failure] = []
    if loaded.suppressed and not plan.building_blocks:
        rules = [(info, rule) for info, rule in rules if info.id not in loaded.suppressed]
        skipped = [Failure(info, "building block of a correlation with generate: false: the engine raises no"
                                 " alert for it (--building-blocks hunts with it)")
                   for info, _ in loaded.rules if info.id in loaded.suppressed]
    queries, failures = convert_rules(rules, plan.target, pipeline)
    failures.extend(skipped)
    failures.extend(Failure(info, "correlation rule: spans several events, no per-document query expresses it")
                    for info in loaded.correlations)
    return Conversion(queries, failures, loaded.errors, time.perf_counter() - started)


async def run_plan(client: SearchClient, conversion: Conversion, plan: HuntPlan, settings: HuntSettings,
                   sink: AlertSink, *, progress: Callable[[Progress], None] | None = None,
                   clock: Callable[[], float] = time.time) -> HuntReport:
    report = await run_queries(client, conversion.queries, settings, plan.time_range, sink, index=plan.index,
                               progress=progress, clock=clock)
    report.failures = list(conversion.failures)
    return report

