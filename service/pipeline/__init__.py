"""One pipeline for every input: :class:`Pipeline` (screen -> decode -> detect -> submit) driven
by :class:`Source` s through :func:`drive`; see ``docs/architecture.md`` ("Runtime")."""

from service.gctune import tune_gc
from service.pipeline.core import AlertSink, Content, DeadLetters, IngestResult, Pipeline
from service.pipeline.source import Batch, Ingests, Source, Steps, drive, run_batch

__all__ = ["AlertSink", "Batch", "Content", "DeadLetters", "IngestResult", "Ingests", "Pipeline", "Source", "Steps",
           "drive", "run_batch", "tune_gc"]
