"""The native screen never clears an event the Python engine matches, over the whole corpus.

Events: each SigmaHQ rule's own generated events (matching and near-miss, as in
``test_differential.py``) and the realistic benchmark corpus, screened through
the route of every rule set a service would use (all rules, and the event's own
log source). A cleared event must have no match, and its event time must be the
one the Python path reads; for a picked event, the matches made from the screen's
decision (``Ruleset.evaluate_decided``) must be exactly the engine's, matched
fields included, and the fields the decision shows for a rule it decided to match must be the
engine's pair by pair, value types included. The screen must also clear most events without a match, and
decide most of them, or it would be a no-op that passes trivially.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sigma.rule import SigmaRule

from bench.eventgen import generate
from bench.fuzz_screen import same_fields
from detectors.model import LogSource
from detectors.sigma import LoadResult, Ruleset
from detectors.sigma.screen import AVAILABLE
from service.rules import load_rules
from service.sources.base import Item
from tests.conformance.eventgen_sigma import rule_events

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TIME_FIELDS = ["@timestamp", "timestamp", "time", "UtcTime"]
FALLBACK_MS = 1_700_000_000_123


@pytest.fixture(scope="module", autouse=True)
def native() -> None:
    if not AVAILABLE:
        if os.environ.get("CI"):
            pytest.fail("the native screen (detectors._native) was not built: is cargo on the PATH?")
        pytest.skip("the native screen is not built (no Rust toolchain at install time)")


class Tally:
    def __init__(self) -> None:
        self.events = 0
        self.matching = 0
        self.cleared = 0
        self.decided = 0
        """Picked events with a decision that leaves no rule to Python."""
        self.shown = 0
        """Matches whose fields the screen gave."""
        self.problems: list[str] = []

    def check(self, ruleset: Ruleset, logsource: LogSource | None, events: list[dict[str, Any]]) -> None:
        screen = ruleset.screen(logsource)
        assert screen is not None
        raws = [orjson.dumps(event, default=str) for event in events]
        for raw in raws:
            picked, latest, decisions = screen.decide([raw], [FALLBACK_MS], TIME_FIELDS, 1 << 20, 64)
            decoded = orjson.loads(raw)
            matches = ruleset.evaluate(decoded, logsource)
            self.events += 1
            self.matching += bool(matches)
            if picked:
                decision = decisions[0]
                if decision is None:
                    continue
                self.decided += not decision[1]
                made = ruleset.evaluate_decided(decoded, screen.rules, decision, logsource)
                if made != matches:
                    self.problems.append(f"decided {[m.rule.title for m in made]} ({decision}) but matches "
                                         f"{[m.rule.title for m in matches]}: {raw[:300]!r}")
                by_rule = {id(m.rule): m.fields for m in matches}
                for position, fields in zip(decision[0], decision[2], strict=True):
                    want = by_rule.get(id(screen.rules[position].info))
                    if fields is not None and want is not None:
                        self.shown += 1
                        if not same_fields(fields, want):
                            self.problems.append(f"shown {fields!r} but matched fields {want!r}: {raw[:300]!r}")
                said = {id(screen.rules[p].info) for p in decision[0]}
                if said - {id(m.rule) for m in matches}:
                    self.problems.append(f"decided to match {decision[0]}, matches "
                                         f"{[m.rule.title for m in matches]}: {raw[:300]!r}")
                continue
            self.cleared += 1
            if matches:
                self.problems.append(f"cleared but matches {[m.rule.title for m in matches]}: {raw[:300]!r}")
            want = Item(decoded, ("t", 0, 0), logsource, tuple(TIME_FIELDS), FALLBACK_MS / 1000.0).time()
            if latest[0] != want:
                self.problems.append(f"time {latest[0]} != Python's {want}: {raw[:300]!r}")

    def assert_sound(self, cleared_share: float) -> None:
        """No problem, and at least ``cleared_share`` of the non-matching events cleared."""
        print(f"screen: {self.events} events, {self.matching} matching, {self.cleared} cleared, "
              f"{self.decided} decided in full, {self.shown} matches with shown fields")
        assert not self.problems, f"{len(self.problems)} problems:\n" + "\n".join(self.problems[:30])
        quiet = self.events - self.matching
        assert self.matching > 0 and quiet > 0
        assert self.cleared >= cleared_share * quiet, f"only {self.cleared} of {quiet} non-matching events cleared"


def _by_logsource(rules: list[tuple[str, SigmaRule]]) -> Iterator[tuple[LogSource, list[dict[str, Any]]]]:
    grouped: dict[LogSource, list[dict[str, Any]]] = defaultdict(list)
    for _, rule in rules:
        ls = rule.logsource
        grouped[LogSource(ls.product, ls.category, ls.service)].extend(rule_events(rule))
    yield from grouped.items()


def test_rule_events_cleared_only_without_a_match(sigmahq: LoadResult,
                                                  sigmahq_parsed: list[tuple[str, SigmaRule]]) -> None:
    tally = Tally()
    for logsource, events in _by_logsource(sigmahq_parsed):
        tally.check(sigmahq.ruleset, logsource, events)
    tally.assert_sound(0.9)


def _other_case(event: dict[str, Any]) -> dict[str, Any]:
    """The event with every key's case changed (``User`` -> ``uSER``), nested keys too."""
    return {key.swapcase(): _other_case(value) if isinstance(value, dict) else value for key, value in event.items()}


@pytest.mark.parametrize("cased", [False, True], ids=["insensitive", "sensitive"])
def test_all_rules_route(shared_dir: Path, sigmahq_parsed: list[tuple[str, SigmaRule]], cased: bool) -> None:
    """Without a configured log source every rule applies, keyword rules included. (With the
    whole corpus every event matches some generic rule, so a smaller set: the project's rule pack
    and the SigmaHQ cloud, linux, web and application folders, as in ``bench/pipeline.py``.)
    Both ``rules.field_names`` modes, on the events as generated and with their keys in another case."""
    folders = [shared_dir / "sigmahq" / "rules" / name for name in ("cloud", "linux", "web", "application")]
    loaded = load_rules([ROOT / "sigma-rules", *folders], [], cased_fields=cased)
    assert not loaded.errors
    chosen = {rule.id for rule in loaded.ruleset.rules}
    sample = [event for source, rule in sigmahq_parsed if str(rule.id) in chosen for event in rule_events(rule)]
    sample += [_other_case(event) for event in sample[::3]]
    sample += [dict(event) for _, event in generate(5_000, seed=7, suspicious_share=0.08)]
    tally = Tally()
    tally.check(loaded.ruleset, None, sample)
    tally.assert_sound(0.9)


def test_realistic_events(sigmahq: LoadResult) -> None:
    tally = Tally()
    grouped: dict[LogSource, list[dict[str, Any]]] = defaultdict(list)
    for logsource, event in generate(20_000, seed=5, suspicious_share=0.08):
        grouped[logsource].append(dict(event))
    for logsource, events in grouped.items():
        tally.check(sigmahq.ruleset, logsource, events)
    tally.assert_sound(0.9)
