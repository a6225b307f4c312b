"""One pipeline for every input: :class:`Pipeline` (screen -> decode -> detect -> submit) driven
by :class:`Source` s through :func:`drive`; see ``docs/architecture.md`` ("Runtime")."""

from service.pipeline.core import AlertSink, DeadLetters, IngestResult, Pipeline, tune_gc
from service.pipeline.source import Batch, Ingests, Source, drive, run_batch

__all__ = ["AlertSink", "Batch", "DeadLetters", "IngestResult", "Ingests", "Pipeline", "Source", "drive", "run_batch", "tune_gc"]
