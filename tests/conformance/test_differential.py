"""Differential test: pipesentry agrees with pySigma-backend-sqlite's SQL on generated events.

Every SigmaHQ rule the backend can convert is compared on events generated from
the rule itself (see ``differential.py``). Any disagreement whose rule is not in
``allowlist.yml`` (explained in ``disagreements.md``) fails the test. Set
``PIPESENTRY_CONFORMANCE_REPORT=path.json`` to keep the full report.
"""

from __future__ import annotations

import os
import uuid
import warnings
from dataclasses import asdict
from pathlib import Path

import orjson
import pytest
from sigma.rule import SigmaRule

from detectors.sigma import LoadResult
from tests.conformance.differential import (
    SITE_PIPELINE,
    Report,
    compare,
    load_allowlist,
)

pytestmark = [pytest.mark.conformance, pytest.mark.slow]


@pytest.fixture(scope="module")
def report(sigmahq: LoadResult, sigmahq_parsed: list[tuple[str, SigmaRule]]) -> Report:
    return compare(sigmahq_parsed, sigmahq.ruleset, [SITE_PIPELINE.read_text(encoding="utf-8")])


def test_no_unexplained_disagreement(report: Report) -> None:
    allowed = load_allowlist()
    summary = report.summary(allowed)
    print("differential summary:", orjson.dumps(summary).decode())
    out = os.environ.get("PIPESENTRY_CONFORMANCE_REPORT")
    if out:
        Path(out).write_bytes(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2, default=str))
    unexplained = [d for d in report.disagreements if d.rule_id not in allowed]
    lines = [
        f"{d.rule_id} ({d.source}): oracle={'match' if d.oracle else 'no match'} "
        f"pipesentry={'match' if d.pipesentry else 'no match'} event={orjson.dumps(d.event, default=str).decode()}"
        for d in unexplained[:40]
    ]
    assert not unexplained, (
        f"{len(unexplained)} unexplained disagreements on {summary['unexplained_rules']} rules "
        "(fix the engine or explain them in disagreements.md + allowlist.yml):\n" + "\n".join(lines)
    )


def test_comparison_covers_the_corpus(report: Report) -> None:
    """Guard against a vacuous pass: nearly every rule compared, with events that match."""
    assert report.rules_total >= 3700
    assert not report.not_in_ruleset, f"rules missing from pipesentry's ruleset: {report.not_in_ruleset[:20]}"
    assert report.rules_compared >= report.rules_total - 10, report.not_converted
    assert report.expected_matches >= report.rules_compared  # on average >= 1 matching event per rule
    assert report.events - report.expected_matches >= report.rules_compared  # and near misses


def test_allowlist_entries_are_still_needed(report: Report) -> None:
    """An allowlisted rule that now agrees everywhere should leave the allowlist.

    A warning, not a failure: an engine fix must not turn the suite red before the
    allowlist is tidied.
    """
    disagreeing = {d.rule_id for d in report.disagreements}
    stale = sorted(set(load_allowlist()) - disagreeing)
    if stale:
        warnings.warn(f"allowlist entries without a disagreement (remove them): {stale}", stacklevel=1)
    for rule_id, reason in load_allowlist().items():
        assert uuid.UUID(rule_id) and len(reason) > 20, f"allowlist entry {rule_id} needs a reason"
