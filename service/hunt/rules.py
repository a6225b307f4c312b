"""The rules a hunt converts: read from disk and parsed as the engine parses them.

Rule metadata (ids, titles, levels, authors, rulesets) comes from the same code the streaming
engine uses (:func:`detectors.sigma.compiler.parse_detection_rules`), so a hunt's alert names the
rule exactly as a live alert does. Correlation rules are listed as not convertible: their state
spans events and windows, which a per-document query cannot express.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sigma.rule import SigmaRule

from detectors.model import RuleInfo
from detectors.sigma import RuleError
from detectors.sigma.compiler import parse_detection_rules
from service.rules import read_pipelines, read_rules


@dataclass
class HuntRules:
    rules: list[tuple[RuleInfo, SigmaRule]]
    pipelines: list[str]
    """Processing pipeline YAML texts, in order."""
    errors: list[RuleError] = field(default_factory=list)
    """Rule files or documents that could not be read or parsed."""
    pipeline_errors: list[RuleError] = field(default_factory=list)
    correlations: list[RuleInfo] = field(default_factory=list)
    suppressed: frozenset[str] = frozenset()
    """Building blocks of correlations that do not ``generate``: no alerts of their own."""


def load_hunt_rules(paths: Sequence[Path], pipelines: Sequence[Path]) -> HuntRules:
    """Read and parse the rules under ``paths`` and the pipeline files; errors are collected."""
    texts, read_errors = read_rules(paths)
    pipeline_texts, pipeline_errors = read_pipelines(pipelines)
    parsed = parse_detection_rules(texts)
    return HuntRules(parsed.rules, pipeline_texts, [*read_errors, *parsed.errors], pipeline_errors,
                     parsed.correlations, parsed.suppressed)
