"""What the differential fuzzers under ``bench/`` share: the run loop and the tally of findings.

``fuzz_regex.py``, ``fuzz_screen.py`` and ``fuzz_inputs.py`` each run checks until a time or input
budget is spent (:class:`Budget`) and report what they found (:class:`Findings`): every finding is
counted by kind (and target), and only the first few are kept in full, so a systematic bug
neither floods the JSON report nor hides how often it struck.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SAMPLES = 50
"""Findings kept in full per report."""


@dataclass
class Findings:
    """Findings counted by kind and target; the first :data:`SAMPLES` (or ``per_kind`` of each
    kind) kept as samples."""

    per_kind: int | None = None
    """Keep at most this many samples of one kind (None: any, up to :data:`SAMPLES`)."""
    by_kind: Counter[str] = field(default_factory=Counter)
    by_target: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, sample: dict[str, Any], target: str | None = None) -> None:
        seen = self.by_kind[kind]
        self.by_kind[kind] += 1
        if target is not None:
            self.by_target[target] += 1
        if len(self.samples) < SAMPLES and (self.per_kind is None or seen < self.per_kind):
            self.samples.append(sample)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def __bool__(self) -> bool:
        return self.total > 0


class Budget:
    """Time (and optionally a number of inputs) one fuzz run may spend."""

    def __init__(self, seconds: float, max_inputs: int | None = None) -> None:
        self.seconds = seconds
        self.max_inputs = max_inputs
        self.inputs = 0
        self._started = time.perf_counter()
        self._deadline = time.monotonic() + seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def spent(self) -> bool:
        return time.monotonic() >= self._deadline or (self.max_inputs is not None and self.inputs >= self.max_inputs)

    def run(self, step: Callable[[], int]) -> Budget:
        """Call ``step`` (it returns how many inputs it tried) until the budget is spent."""
        while not self.spent():
            self.inputs += step()
        return self
