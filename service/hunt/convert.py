"""Sigma rules -> Lucene queries with pySigma's maintained backends (the ones ``sigma-cli`` uses).

Each rule is converted on its own, so a rule the backend refuses (an unsupported modifier, a
field the pipeline drops, a pySigma error) becomes a :class:`Failure` with the reason and the
other rules still convert. The rule pack's processing pipelines (YAML files) apply first; a named
backend pipeline (``ecs_windows``, ``ecs_kubernetes``... from ``sigma.pipelines.elasticsearch``)
may follow. Pipelines mutate the rule they are applied to, so every conversion takes a rule of its
own (:func:`service.hunt.rules.load_hunt_rules` parses a fresh set per hunt).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sigma.collection import SigmaCollection
from sigma.modifiers import SigmaTimestampModifier
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule

from detectors.model import RuleInfo
from service.errors import ServiceError

Target = Literal["elasticsearch", "opensearch"]
TARGETS: tuple[Target, ...] = ("elasticsearch", "opensearch")


@dataclass(frozen=True, slots=True)
class Query:
    """One converted rule: its metadata and the Lucene query string(s) the backend produced."""

    rule: RuleInfo
    lucene: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Failure:
    """A rule the backend could not convert, and why (the hunt goes on without it)."""

    rule: RuleInfo
    reason: str


class PipelineError(ServiceError, ValueError):
    """A processing pipeline file or backend pipeline name that cannot be used (a usage error; not retriable)."""


def backend_pipelines(target: Target) -> dict[str, Callable[[], ProcessingPipeline]]:
    """The named pipelines the backend package ships (``ecs_windows``, ``ecs_kubernetes``...);
    the OpenSearch backend is built on the Elasticsearch one and uses the same pipelines."""
    del target
    from sigma.pipelines.elasticsearch import pipelines

    return dict(pipelines)


def build_pipeline(texts: Sequence[str], named: Sequence[str], target: Target) -> ProcessingPipeline | None:
    """The rule pack's pipelines (YAML texts, in order) followed by the backend's ``named`` ones."""
    combined: ProcessingPipeline | None = None
    for number, text in enumerate(texts):
        try:
            pipeline = ProcessingPipeline.from_yaml(text)
        except Exception as exc:  # pySigma raises many types for bad pipelines
            raise PipelineError(f"pipeline[{number}]: invalid processing pipeline: {_reason(exc)}") from None
        combined = pipeline if combined is None else combined + pipeline
    available = backend_pipelines(target) if named else {}
    for name in named:
        factory = available.get(name)
        if factory is None:
            raise PipelineError(f"no backend pipeline {name!r} (known: {', '.join(sorted(available))})")
        pipeline = factory()
        combined = pipeline if combined is None else combined + pipeline
    return combined


def make_backend(target: Target, pipeline: ProcessingPipeline | None) -> Any:
    """The target's Lucene backend (``collect_errors``: a refused rule is reported, not raised)."""
    if target == "elasticsearch":
        from sigma.backends.elasticsearch.elasticsearch_lucene import LuceneBackend

        return LuceneBackend(processing_pipeline=pipeline, collect_errors=True)
    from sigma.backends.opensearch.opensearch import OpensearchLuceneBackend

    return OpensearchLuceneBackend(processing_pipeline=pipeline, collect_errors=True)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:499] + "…"


def _items(detection: SigmaDetection) -> list[SigmaDetectionItem]:
    found: list[SigmaDetectionItem] = []
    for item in detection.detection_items:
        if isinstance(item, SigmaDetection):
            found.extend(_items(item))
        else:
            found.append(item)
    return found


def unsupported(rule: SigmaRule) -> str | None:
    """Why the Lucene backends would convert ``rule`` to a query of another meaning, if they would.

    The timestamp-part modifiers (``|hour``, ``|day``...) are accepted by pySigma but dropped by the
    Lucene backends (``ts|hour|lt: 8`` becomes ``ts:<8``, a comparison with the whole value)."""
    for detection in rule.detection.detections.values():
        for item in _items(detection):
            for modifier in item.modifiers:
                if issubclass(modifier, SigmaTimestampModifier):
                    name = modifier.__name__.removeprefix("SigmaTimestamp").removesuffix("Modifier").lower()
                    return (f"{item.field}|{name}: timestamp-part modifiers have no Lucene form"
                            " (the backend would compare the whole value)")
    return None


def convert_rule(backend: Any, info: RuleInfo, rule: SigmaRule) -> Query | Failure:
    """One rule through ``backend``; never raises for a rule's sake."""
    if rule.errors:
        return Failure(info, "; ".join(_reason(e) for e in rule.errors))
    reason = unsupported(rule)
    if reason is not None:
        return Failure(info, reason)
    try:
        # a copy: the backend applies its pipeline to the rule in place
        queries = backend.convert(SigmaCollection([copy.deepcopy(rule)]))
    except Exception as exc:  # pySigma and the backends raise assorted types for a rule they refuse
        return Failure(info, f"{type(exc).__name__}: {_reason(exc)}")
    errors = getattr(backend, "errors", None)
    if errors:
        reasons = "; ".join(_reason(err) for _, err in errors)
        errors.clear()
        return Failure(info, reasons)
    texts = tuple(q for q in queries if isinstance(q, str) and q.strip())
    if not texts:
        return Failure(info, "the backend produced no query")
    return Query(info, texts)


def convert_rules(rules: Sequence[tuple[RuleInfo, SigmaRule]], target: Target,
                  pipeline: ProcessingPipeline | None) -> tuple[list[Query], list[Failure]]:
    """Every rule converted on its own: the queries and the failures, in rule order."""
    backend = make_backend(target, pipeline)
    queries: list[Query] = []
    failures: list[Failure] = []
    for info, rule in rules:
        result = convert_rule(backend, info, rule)
        if isinstance(result, Query):
            queries.append(result)
        else:
            failures.append(result)
    return queries, failures
