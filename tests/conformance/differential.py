"""Differential comparison of pipesentry's Sigma engine with the SQLite oracle.

For every rule: generate events from the rule's own detection
(:mod:`tests.conformance.eventgen_sigma`), let the oracle select the matching
ones with the backend's SQL, let pipesentry evaluate each event, and compare
the two sets of event indexes. Run as a script for a full JSON report::

    python -m tests.conformance.differential [--out report.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from sigma.collection import SigmaCollection
from sigma.rule import SigmaRule

from detectors.sigma import Ruleset
from tests.conformance import sqlite_oracle
from tests.conformance.eventgen_sigma import rule_events, rule_fields

ALLOWLIST = Path(__file__).with_name("allowlist.yml")
SITE_PIPELINE = Path(__file__).with_name("site_placeholders.yml")
"""Values for ``|expand`` placeholders, given to both implementations (see conftest.py)."""


@dataclass
class Disagreement:
    rule_id: str
    title: str
    source: str
    event: dict[str, Any]
    oracle: bool
    pipesentry: bool


@dataclass
class Report:
    rules_total: int = 0
    rules_compared: int = 0
    events: int = 0
    expected_matches: int = 0
    agreements: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)
    not_converted: dict[str, str] = field(default_factory=dict)
    not_in_ruleset: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, allowed: dict[str, str]) -> dict[str, Any]:
        explained = [d for d in self.disagreements if d.rule_id in allowed]
        return {
            "rules_total": self.rules_total,
            "rules_compared": self.rules_compared,
            "events": self.events,
            "oracle_matches": self.expected_matches,
            "agreements": self.agreements,
            "disagreements": len(self.disagreements),
            "explained_disagreements": len(explained),
            "explained_rules": len({d.rule_id for d in explained}),
            "unexplained_disagreements": len(self.disagreements) - len(explained),
            "unexplained_rules": len({d.rule_id for d in self.disagreements} - set(allowed)),
            "not_converted": len(self.not_converted),
            "not_converted_reasons": dict(Counter(self.not_converted.values())),
            "not_in_ruleset": len(self.not_in_ruleset),
            "seconds": round(self.seconds, 1),
        }


def load_allowlist(path: Path = ALLOWLIST) -> dict[str, str]:
    """``rule id -> reason`` for disagreements explained in ``disagreements.md``."""
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    return {str(e["rule_id"]): str(e["reason"]) for e in entries}


def parse_rules(paths: Iterable[Path]) -> list[tuple[str, SigmaRule]]:
    """``(source, rule)`` for every detection rule pySigma parses from ``paths``."""
    out: list[tuple[str, SigmaRule]] = []
    for path in paths:
        collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"), collect_errors=True)
        out += [(str(path), r) for r in collection.rules if isinstance(r, SigmaRule) and not r.errors]
    return out


def corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.yml") if p.is_file())


def compare(rules: Sequence[tuple[str, SigmaRule]], ruleset: Ruleset, pipelines: Sequence[str] = ()) -> Report:
    """Compare every rule; ``pipelines`` (YAML texts) must be the ones ``ruleset`` was compiled with."""
    started = time.perf_counter()
    report = Report(rules_total=len(rules))
    backend = sqlite_oracle.make_backend(pipelines)
    conn = sqlite_oracle.connect()
    for source, rule in rules:
        rule_id = str(rule.id)
        if ruleset.get(rule_id) is None:
            report.not_in_ruleset.append(rule_id)
            continue
        try:
            queries = sqlite_oracle.rule_sql(backend, rule)
        except Exception as exc:  # the backend's refusal is data, not a test failure
            report.not_converted[rule_id] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            continue
        events = rule_events(rule)
        expected = sqlite_oracle.run(conn, queries, rule_fields(rule), events)
        report.rules_compared += 1
        report.events += len(events)
        report.expected_matches += len(expected)
        for index, event in enumerate(events):
            got = any(m.rule.id == rule_id for m in ruleset.evaluate(event))
            want = index in expected
            if got == want:
                report.agreements += 1
            else:
                report.disagreements.append(Disagreement(rule_id, rule.title, source, event, want, got))
    conn.close()
    report.seconds = time.perf_counter() - started
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from service.rules import load_rules
    from tests.conftest import SIGMAHQ

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="write the full report (JSON) here")
    parser.add_argument("--root", type=Path, default=SIGMAHQ)
    args = parser.parse_args(argv)
    result = load_rules([args.root], [SITE_PIPELINE])
    rules = parse_rules(corpus_files(args.root))
    report = compare(rules, result.ruleset, [SITE_PIPELINE.read_text(encoding="utf-8")])
    allowed = load_allowlist()
    print(orjson.dumps(report.summary(allowed), option=orjson.OPT_INDENT_2).decode())
    if args.out:
        args.out.write_bytes(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
