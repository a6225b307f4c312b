"""The per-route value cache and keyword prefilter (``index.py``) never change a result.

Checked against ``evaluate_naive`` on repeated, distinct, long and odd-typed values, with a
tiny cache bound so that it fills and empties during the test.
"""

from __future__ import annotations

from typing import Any

import pytest

from detectors.model import LogSource
from detectors.sigma import RuleText, compile_ruleset, engine, index
from detectors.sigma.engine import Ruleset

RULES = """
title: Encoded PowerShell
id: 11111111-1111-4111-8111-111111111111
logsource: {product: windows, category: process_creation}
detection:
  sel: {Image|endswith: '\\powershell.exe', CommandLine|contains: ' -enc '}
  condition: sel
---
title: Event 4688
id: 22222222-2222-4222-8222-222222222222
logsource: {product: windows, category: process_creation}
detection: {sel: {EventID: 4688}, condition: sel}
---
title: Three-letter command (regex without a literal)
id: 33333333-3333-4333-8333-333333333333
logsource: {product: windows, category: process_creation}
detection: {sel: {CommandLine|re: '^.{3}$'}, condition: sel}
---
title: Mimikatz keyword
id: 44444444-4444-4444-8444-444444444444
logsource: {product: windows, category: process_creation}
detection: {keywords: ['sekurlsa::'], condition: keywords}
---
title: Short wildcard
id: 55555555-5555-4555-8555-555555555555
logsource: {product: windows, category: process_creation}
detection: {sel: {User|contains: 'a?b'}, condition: sel}
"""

SOURCE = LogSource(product="windows", category="process_creation")


@pytest.fixture()
def ruleset() -> Ruleset:
    result = compile_ruleset([RuleText("cache.yml", RULES, "test")])
    assert result.errors == []
    return result.ruleset


def both(ruleset: Ruleset, event: dict[str, Any]) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    fast = [(m.rule.title, m.fields) for m in ruleset.evaluate(event, SOURCE)]
    slow = [(m.rule.title, m.fields) for m in ruleset.evaluate_naive(event, SOURCE)]
    assert fast == slow
    return fast


def titles(matches: list[tuple[str, Any]]) -> list[str]:
    return [title for title, _ in matches]


def test_repeated_values_give_the_same_matches(ruleset: Ruleset) -> None:
    event = {"Image": "C:\\x\\PowerShell.exe", "CommandLine": "powershell -enc AAA", "EventID": 1}
    first = both(ruleset, event)
    assert titles(first) == ["Encoded PowerShell"]
    assert both(ruleset, dict(event)) == first
    assert both(ruleset, {**event, "CommandLine": "powershell -nop"}) == []


def test_cached_entry_reports_each_events_own_value(ruleset: Ruleset) -> None:
    as_int = both(ruleset, {"EventID": 4688})
    as_str = both(ruleset, {"EventID": "4688"})
    assert as_int == [("Event 4688", (("EventID", 4688),))]
    assert as_str == [("Event 4688", (("EventID", "4688"),))]


def test_literal_free_regex_trigger_runs_per_value(ruleset: Ruleset) -> None:
    route = ruleset._route(SOURCE).index
    assert route.fields["commandline"].every and not route.direct_triggers
    for _ in range(2):  # second round answered from the cache
        assert titles(both(ruleset, {"CommandLine": "cmd"})) == ["Three-letter command (regex without a literal)"]
        assert both(ruleset, {"CommandLine": "cmd.exe"}) == []
        assert titles(both(ruleset, {"CommandLine": ["cmd.exe", "dir"]})) == [
            "Three-letter command (regex without a literal)"]


def test_short_wildcard_checked_on_every_value(ruleset: Ruleset) -> None:
    assert titles(both(ruleset, {"User": "xa-bx"})) == ["Short wildcard"]
    assert both(ruleset, {"User": "xab"}) == []


def test_keyword_prefilter_remembers_misses_without_hiding_hits(ruleset: Ruleset) -> None:
    assert both(ruleset, {"CommandLine": "whoami", "User": "bob"}) == []
    assert both(ruleset, {"CommandLine": "whoami", "User": "bob"}) == []
    hit = both(ruleset, {"CommandLine": "whoami", "Details": "x SEKURLSA::logonpasswords"})
    assert hit == [("Mimikatz keyword", (("", "x SEKURLSA::logonpasswords"),))]


def test_long_values_are_not_cached(ruleset: Ruleset) -> None:
    long = "powershell -enc " + "A" * (index.CACHED_TEXT + 10)
    event = {"Image": "c:\\powershell.exe", "CommandLine": long}
    assert titles(both(ruleset, event)) == ["Encoded PowerShell"]
    route = ruleset._route(SOURCE).index
    assert long not in route.fields["commandline"].cache
    assert "c:\\powershell.exe" in route.fields["image"].cache


def test_cache_stays_bounded_and_correct_when_it_empties(ruleset: Ruleset,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index, "CACHE_SIZE", 5)
    route = ruleset._route(SOURCE).index
    for n in range(40):
        command = f"powershell -enc {n}" if n % 3 == 0 else f"cmd /c {n}"
        got = both(ruleset, {"Image": "c:\\powershell.exe", "CommandLine": command, "EventID": 4688 + n % 2})
        expected = (["Encoded PowerShell"] if n % 3 == 0 else []) + (["Event 4688"] if n % 2 == 0 else [])
        assert titles(got) == expected
        assert route.cached <= 5
        assert sum(len(f.cache) for f in route.fields.values()) == route.cached


def test_routes_by_caller_log_source_share_one_route_and_stay_bounded(ruleset: Ruleset,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    upper = LogSource(product="Windows", category="PROCESS_CREATION")
    assert ruleset._route(upper) is ruleset._route(SOURCE)
    assert titles(both(ruleset, {"EventID": 4688})) == ["Event 4688"]
    assert [m.rule.title for m in ruleset.evaluate({"EventID": 4688}, upper)] == ["Event 4688"]
    monkeypatch.setattr(engine, "MAX_ROUTES", 3)
    for n in range(10):
        assert ruleset.evaluate({"EventID": 4688}, LogSource(product=f"p{n}")) == []
        assert len(ruleset._by_source) <= 3 and len(ruleset._routes) <= 3
