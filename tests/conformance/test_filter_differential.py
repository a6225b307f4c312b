"""Differential test of Sigma filters: pipesentry vs the SQLite oracle on filtered SigmaHQ rules.

For a spread of SigmaHQ rules a filter document is synthesised (Sigma filters
specification: ``filter.rules`` names the rule, the filter's condition is
and-not-ed to the rule's). Half of the filters test a field of the rule itself
with a piece of a value that satisfies the rule (so the filter removes some of
the rule's own matches), half test another field. pySigma merges each filter
into its rule (``SigmaCollection`` applies filters on load); the oracle converts
that merged rule, pipesentry compiles the rule and filter documents as given,
and both judge events generated from the merged rule.

pySigma appends ``and (<filter condition>)``; the specification's filters
*suppress* matches (its example's ``condition: selection`` names the accounts to
exclude), so the oracle is given the filter with ``condition: not (...)``; see
disagreements.md, oracle point 10.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
import yaml
from sigma.collection import SigmaCollection
from sigma.rule import SigmaRule

from detectors.sigma import RuleText, compile_ruleset
from tests.conformance.differential import compare, corpus_files
from tests.conformance.eventgen_sigma import rule_events

pytestmark = pytest.mark.conformance

SAMPLE_EVERY = 12
_UNSAFE = set("*?\\'\"\n")


def _filter_for(rule: SigmaRule, index: int) -> dict[str, object] | None:
    logsource = {k: v for k in ("product", "category", "service") if (v := getattr(rule.logsource, k))}
    selection: dict[str, object]
    if index % 2 == 0:
        piece = None
        for event in rule_events(rule)[:4]:
            for field, value in event.items():
                if field != "_keyword" and isinstance(value, str) and len(value) >= 4:
                    middle = value[1:-1]
                    if len(middle) >= 3 and not _UNSAFE & set(middle):
                        piece = (field, middle[:12])
                        break
            if piece:
                break
        if piece is None:
            return None
        selection = {f"{piece[0]}|contains": piece[1]}
    else:
        selection = {"User|startswith": "adm_"}
    return {
        "title": f"Filter for {rule.title}",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"filter:{rule.id}")),
        "logsource": logsource,
        "filter": {"rules": [str(rule.id)], "selection": selection, "condition": "selection"},
    }


def test_filters_agree_with_the_oracle(shared_dir: Path) -> None:
    files = corpus_files(shared_dir / "sigmahq")[::SAMPLE_EVERY]
    texts: list[RuleText] = []
    merged: list[tuple[str, SigmaRule]] = []
    for index, path in enumerate(files):
        text = path.read_text(encoding="utf-8")
        original = SigmaCollection.from_yaml(text).rules
        if len(original) != 1 or not isinstance(original[0], SigmaRule) or "|expand" in text:
            continue
        filter_doc = _filter_for(original[0], index)
        if filter_doc is None:
            continue
        filter_text = yaml.safe_dump(filter_doc, sort_keys=False)
        texts += [RuleText(str(path), text, "sigmahq"), RuleText(f"{path}.filter.yml", filter_text, "filters")]
        negated = dict(filter_doc, filter={**filter_doc["filter"], "condition": "not (selection)"})  # type: ignore[dict-item]
        rule = SigmaCollection.from_yaml(text + "\n---\n" + yaml.safe_dump(negated, sort_keys=False)).rules[0]
        assert isinstance(rule, SigmaRule)
        merged.append((str(path), rule))
    result = compile_ruleset(texts, skip_invalid=True)
    assert not result.errors, [f"{e.source}: {e.reason}" for e in result.errors]
    assert len(result.ruleset.filters) == len(merged) >= 250
    report = compare(merged, result.ruleset)
    print("filter differential:", orjson.dumps(report.summary({})).decode())
    lines = [
        f"{d.rule_id}: oracle={d.oracle} pipesentry={d.pipesentry} event={orjson.dumps(d.event, default=str).decode()}"
        for d in report.disagreements[:30]
    ]
    assert report.rules_compared == len(merged), report.not_converted
    assert not report.disagreements, f"{len(report.disagreements)} disagreements:\n" + "\n".join(lines)
    filtered_out = report.events - report.expected_matches
    assert report.expected_matches >= len(merged) and filtered_out >= len(merged)
