"""Shared test configuration.

``SHARED`` points at ``../shared`` beside the project root (the SigmaHQ corpus
and the Sigma specification). Tests that need it use the ``shared_dir`` fixture,
which skips with a clear message when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SIGMAHQ = SHARED / "sigmahq"
SPEC = SHARED / "sigma-specification"
PROJECT_RULES = ROOT / "sigma-rules"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the SigmaHQ corpus and Sigma specification are needed for this test")
    return SHARED
