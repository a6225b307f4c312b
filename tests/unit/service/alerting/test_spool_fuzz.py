"""Seeded fuzzing of the spool: damaged segments, SIGKILLed writers. Every intact or acknowledged
record is delivered, every skipped byte is counted. Bounded: a fixed number of seeded examples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.faults import fuzz_once, kill_writers

EXAMPLES = int(os.environ.get("PIPESENTRY_FUZZ_EXAMPLES", "80"))
KILLS = int(os.environ.get("PIPESENTRY_KILL_EXAMPLES", "3"))


def test_damaged_segments_deliver_every_intact_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for seed in range(EXAMPLES):
        fuzz_once(tmp_path, seed, monkeypatch)


@pytest.mark.parametrize("seed", range(KILLS))
def test_sigkilled_writers_lose_no_appended_record(tmp_path: Path, seed: int) -> None:
    kill_writers(tmp_path / "spool", seed, rounds=3)
