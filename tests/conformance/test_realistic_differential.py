"""Differential test on realistic events: the benchmark corpus through every SigmaHQ rule.

The rule-derived events of ``test_differential.py`` probe each rule with its own
values; these events are ordinary and malicious activity from ``bench/eventgen.py``
(Sysmon, Security, CloudTrail, web logs ...), judged by every rule whose log
source covers the event's, as the service routes them. False positives from the
interplay of a long rule set with real-looking values show up here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from sigma.rule import SigmaRule

from bench.eventgen import generate
from detectors.model import LogSource
from detectors.sigma import LoadResult
from tests.conformance import sqlite_oracle
from tests.conformance.conftest import SITE_PIPELINE
from tests.conformance.differential import load_allowlist
from tests.conformance.eventgen_sigma import rule_fields

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

EVENTS = 3000


def test_realistic_events_agree_with_the_oracle(sigmahq: LoadResult,
                                                sigmahq_parsed: list[tuple[str, SigmaRule]]) -> None:
    rs = sigmahq.ruleset
    corpus = generate(EVENTS, seed=11, suspicious_share=0.08)
    by_source: dict[LogSource, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for index, (logsource, event) in enumerate(corpus):
        by_source[logsource].append((index, event))
    engine_hits = {
        (index, m.rule.id) for index, (logsource, event) in enumerate(corpus) for m in rs.evaluate(event, logsource)
    }

    backend = sqlite_oracle.make_backend([SITE_PIPELINE.read_text(encoding="utf-8")])
    conn = sqlite_oracle.connect(unicode_case=False)  # eventgen's letters are ASCII
    parsed = sigmahq_parsed
    infos = {r.id: r for r in rs.rules}
    oracle_hits: set[tuple[int, str]] = set()
    compared_rules = 0
    for logsource, members in by_source.items():
        rules = [(rule, infos[str(rule.id)]) for _, rule in parsed
                 if str(rule.id) in infos and infos[str(rule.id)].logsource.covers(logsource)]
        fields = sorted({f for rule, _ in rules for f in rule_fields(rule)})
        sqlite_oracle.load_table(conn, fields, [event for _, event in members])
        for rule, info in rules:
            compared_rules += 1
            for row in sqlite_oracle.select(conn, sqlite_oracle.rule_sql(backend, rule)):
                oracle_hits.add((members[row][0], info.id))
    engine_sigmahq = {(i, rid) for i, rid in engine_hits if infos.get(rid) is not None}
    allowed = load_allowlist()
    only_engine = sorted(h for h in engine_sigmahq - oracle_hits if h[1] not in allowed)
    only_oracle = sorted(h for h in oracle_hits - engine_sigmahq if h[1] not in allowed)
    print(f"realistic differential: {EVENTS} events, {compared_rules} rule x log source pairs, "
          f"{len(oracle_hits)} oracle matches, {len(engine_sigmahq)} pipesentry matches")
    assert len(oracle_hits) >= EVENTS // 20, "the corpus should make a few percent of events match"

    def show(hits: list[tuple[int, str]]) -> str:
        return "\n".join(f"{infos[rid].title} ({rid}): {corpus[i][0]} {corpus[i][1]}" for i, rid in hits[:15])

    assert not only_engine, f"pipesentry-only matches:\n{show(only_engine)}"
    assert not only_oracle, f"oracle-only matches:\n{show(only_oracle)}"
