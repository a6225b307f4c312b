"""Fixtures shared by the conformance tests: the SigmaHQ corpus compiled once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from sigma.rule import SigmaRule

from detectors.sigma import LoadResult
from service.rules import load_rules

SIGMAHQ_FOLDERS = ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-compliance", "rules-dfir")
SITE_PIPELINE = Path(__file__).with_name("site_placeholders.yml")
"""Values for the corpus' ``|expand`` placeholders, given to pipesentry and to the oracle."""


@pytest.fixture(scope="session")
def sigmahq(shared_dir: Path) -> LoadResult:
    """Every SigmaHQ rule, compiled with the site placeholder pipeline."""
    return load_rules([shared_dir / "sigmahq" / folder for folder in SIGMAHQ_FOLDERS], [SITE_PIPELINE])


@pytest.fixture(scope="session")
def sigmahq_parsed(shared_dir: Path) -> list[tuple[str, SigmaRule]]:
    """``(source, pySigma rule)`` for every SigmaHQ detection rule, for the oracle."""
    from tests.conformance.differential import corpus_files, parse_rules

    return parse_rules(corpus_files(shared_dir / "sigmahq"))
