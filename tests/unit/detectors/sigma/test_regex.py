"""``|re`` prefilter literals agree with RE2; fallback regexes are time-boxed, never a way out."""

from __future__ import annotations

import logging
import random
import subprocess
import sys

import orjson
import pytest
import re2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import fuzz_regex
from detectors.model import LogSource
from detectors.sigma import RuleText, compile_ruleset
from detectors.sigma.errors import CompileError
from detectors.sigma.regex import DEFAULT_TIMEOUT_MS, compile_regex, required_literals
from service import metrics
from service.config import RulesSettings
from service.detection_metrics import CounterExport
from tests.conftest import ROOT
from tests.support.sigma import agree, build, hit, rule_yaml

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


def admitted(pattern: str, value: str, on_re2: bool) -> bool:
    """Whether the prefilter lets ``value`` reach the regex (some literal in its lower-cased text)."""
    literals = required_literals(pattern, on_re2)
    return literals is None or any(literal in value.lower() for literal in literals)


# (pattern, a value RE2 matches): syntax sre_parse reads differently from RE2, or easy to misparse
RE2_SYNTAX = [
    ("[[:space:]]-enc[[:space:]]", "powershell -enc SQBF"),
    ("[[:^alpha:]]ab[[:digit:]]x", "1ab2x"),
    ("[^]a]bcd", "xbcd"),
    ("[]a]bcd", "]bcd"),
    ("\\Qa.b|c\\Ede", "a.b|cde"),
    ("\\x{41}bcd", "Abcd"),
    ("\\x41bcd", "Abcd"),
    ("\\101bcd", "Abcd"),
    ("\\pLbcd", "xbcd"),
    ("\\p{Greek}bcd", "\u03b1bcd"),
    ("\\PLbcd", "1bcd"),
    ("\\Cbcd", "xbcd"),
    ("(?i)STATUS", "\u017ftatus"),
    ("(?i)kelvin", "\u212aelvin"),
    ("(?i)WIN32", "win32"),
    ("(?i:ab)cd", "ABcd"),
    ("ab(?i)cd", "abCD"),
    ("(?s)a.bcd", "a\nbcd"),
    ("(?U)ab+cd", "abbcd"),
    ("(?m)^abc$", "x\nabc\ny"),
    ("ab{2}cd", "abbcd"),
    ("ab{0}cd", "acd"),
    ("x{,3}yz", "x{,3}yz"),
    ("(?P<n>ab)cd", "abcd"),
    ("(?<n>ab)cd", "abcd"),
    ("(foo|bar)?xyz", "xyz"),
    ("ΑΣ", "ΑΣ"),
    ("(?i)\u03c3", "\u03c2"),
    ("\\ab", "\x07b"),
    ("(?i)\\nAB\\tc\\r", "\nab\tC\r"),
    ("(?i)INVOKE", "inVoke"),
]


@pytest.mark.parametrize(("pattern", "value"), RE2_SYNTAX)
def test_prefilter_admits_every_re2_match(pattern: str, value: str) -> None:
    assert re2.compile(pattern, _OPTIONS).search(value) is not None
    assert admitted(pattern, value, on_re2=True), required_literals(pattern, on_re2=True)
    assert admitted(pattern, value, on_re2=False), required_literals(pattern)


def test_posix_class_rule_matches_in_engine_and_screen() -> None:
    detection = {"sel": {"CommandLine|re": "[[:space:]]-enc[[:space:]]"}, "condition": "sel"}
    assert hit(detection, {"CommandLine": "powershell -enc SQBFAEUAWAA="})
    assert not hit(detection, {"CommandLine": "powershell -encoded"})
    screen = build(rule_yaml(detection)).screen(LogSource(product="test"))
    if screen is not None:  # the native screen keys on the same literals
        events = [{"CommandLine": "powershell -enc SQBF"}, {"CommandLine": "powershell -encoded"}]
        assert screen.scan([orjson.dumps(e) for e in events], [0, 0], None, 1 << 20, 64)[0] == [0]


def test_lone_surrogate_is_not_a_question_mark() -> None:
    """RE2 reads UTF-8: a lone surrogate used to become "?", so ``x\\?y`` matched it where the
    prefilter (rightly) did not: the index and the naive evaluator disagreed."""
    assert not hit({"sel": {"F|re": "(?i)\\?x9~"}, "condition": "sel"}, {"F": "a@i?\ud800X9~#"})
    assert not hit({"sel": {"F|re": "x\\?y"}, "condition": "sel"}, {"F": "x\ud800y"})
    assert hit({"sel": {"F|re": "x.y"}, "condition": "sel"}, {"F": "x\ud800y"})


def test_prefilter_still_finds_literals() -> None:
    assert required_literals("[[:space:]]-enc[[:space:]]") == ["-enc"]
    assert required_literals("(?i)Invoke-Mimikatz", on_re2=True) == ["invoke-mimikatz"]
    # on re/regex, "i" also matches the dotless i (U+0131): not a key character there
    assert required_literals("(?i)Invoke-Mimikatz") == ["nvoke-m"]
    assert required_literals("(?i)status", on_re2=True) == ["tatu"]  # "s" also matches U+017F
    assert required_literals("\\n\\n\\tx") == ["\n\n\tx"]
    assert required_literals("(foo|bar)+baz?") == ["bar", "foo"]
    assert required_literals("a.*b") is None


# --- backtracking (non-RE2) patterns: time-boxed, a timeout is a match -----------------------

REPROS = [("(a|a)*c(?!x)", "a" * 60), ("\\w*\\w*\\w*\\w*\\w*(?!x)!", "a" * 3000)]
"""Took 12 s (26 characters, doubling per character) and > 300 s (300 characters) on ``re``."""
EXPLOSIVE = ("^(a|aa)*$(?!x)", "a" * 5000 + "b")
"""Exponential in the ``regex`` module too: always runs out of any small budget."""


def test_backtracking_repros_return_promptly() -> None:
    """In a child process: on a stalled engine the parent's wait gives up instead of hanging."""
    script = (
        f"REPROS = {REPROS!r}\n"
        "from tests.support.sigma import agree, build, rule_yaml\n"
        "rules = build(*(rule_yaml({'sel': {'F|re': p}, 'condition': 'sel'}) for p, _ in REPROS))\n"
        "for _, value in REPROS:\n"
        "    assert agree(rules, {'F': value}) == []\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_timeout_counts_as_match_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    pattern, value = EXPLOSIVE
    result = compile_ruleset([RuleText("r.yml", rule_yaml({"sel": {"F|re": pattern}, "condition": "sel"}), "unit")],
                             regex_timeout_ms=5)
    assert result.errors == []
    rules = result.ruleset
    secret = value + "-hunter2"
    with caplog.at_level(logging.WARNING, logger="detectors.sigma.regex"):
        assert [m.rule.title for m in agree(rules, {"F": secret})] == ["test rule"]
        assert [m.rule.title for m in rules.evaluate({"F": secret})] == ["test rule"]
    assert rules.counters["regex_timeouts"] >= 2
    assert "hunter2" not in caplog.text  # the pattern and the value's length, never the value
    warnings = [r for r in caplog.records if "time budget" in r.getMessage()]
    assert 1 <= len(warnings) < rules.counters["regex_timeouts"] + 1
    assert agree(rules, {"F": "aaab"}) == []  # within budget: the real answer


def test_timeout_is_exported_as_a_prometheus_counter() -> None:
    pattern, value = EXPLOSIVE
    search, on_re2 = compile_regex(pattern, counters := {}, timeout_ms=5)
    assert not on_re2 and search(value) and counters == {"regex_timeouts": 1}

    class Engine:
        def __init__(self) -> None:
            self.counters = counters

    engine = Engine()
    export = CounterExport()
    before = metrics.REGISTRY.get_sample_value("pipesentry_regex_timeouts_total") or 0.0
    export.publish("sigma", [engine])
    search(value)
    export.publish("sigma", [engine])
    assert metrics.REGISTRY.get_sample_value("pipesentry_regex_timeouts_total") == before + 2
    assert metrics.REGISTRY.get_sample_value("pipesentry_detector_skips_total",
                                             {"detector": "sigma", "reason": "regex_timeouts"}) is None


def test_budget_setting() -> None:
    assert RulesSettings().regex_timeout_ms == DEFAULT_TIMEOUT_MS
    with pytest.raises(ValueError, match="greater than 0"):
        RulesSettings(regex_timeout_ms=0)
    with pytest.raises(CompileError, match="positive"):
        compile_regex("(a)\\1", {}, timeout_ms=0)


def test_nested_quantifiers_still_refused() -> None:
    with pytest.raises(CompileError, match="catastrophic backtracking"):
        compile_regex("(a+)+(?!x)", {})


# --- differential fuzzing against RE2 (bench/fuzz_regex.py runs the same checks for longer) ----

@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_prefilter_and_searcher_agree_with_re2(seed: int) -> None:
    tally = fuzz_regex.Tally()
    fuzz_regex.run_case(random.Random(seed), tally)
    assert tally.findings == []


def test_fuzzer_checks_on_past_bugs() -> None:
    """The fuzzer's checks pass on the cases the old code got wrong (POSIX classes, case folding,
    surrogates; each was a finding then) and file the documented "$" difference as known."""
    tally = fuzz_regex.Tally()
    fuzz_regex.check("[[:space:]]-enc[[:space:]]", ["powershell -enc SQBF"], tally)
    fuzz_regex.check("(?i)status", ["\u017ftatus"], tally)
    assert tally.findings == [] and tally.values == 2 and tally.matched == 2
    old = fuzz_regex.Tally()
    fuzz_regex.check("(?i)\\?x9~", ["?\ud800X9~"], old)  # RE2 used to read the surrogate as "?"
    assert old.matched == 0 and old.findings == []
    broken = fuzz_regex.Tally()
    fuzz_regex.check("a$\\n", ["a\n"], broken, ascii_common=True)  # known: see docs/semantics.md
    assert broken.findings == [] and broken.known == {"pcre-dollar-newline": 1}


_SYNTAX = "ab\\[]()|?*+{},:^$.-=!<>PQEixdspLk0123\n"


@settings(max_examples=400, deadline=None, derandomize=True)
@given(pattern=st.text(alphabet=_SYNTAX, max_size=24),
       values=st.lists(st.text(alphabet="abAB[]:-\n0123\u017f", max_size=12), max_size=4))
def test_prefilter_on_arbitrary_syntax(pattern: str, values: list[str]) -> None:
    """Any text: no exception, and a value RE2 matches is admitted (most such texts are refused)."""
    literals = required_literals(pattern, on_re2=True)
    assert literals is None or (literals and all(len(k) >= 2 for k in literals))
    required_literals(pattern)
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except Exception:  # not a regex for RE2
        return
    for value in values:
        if compiled.search(value) is not None:
            assert admitted(pattern, value, on_re2=True), (literals, value)


def test_the_configured_budget_reaches_the_service_engine_and_its_time_outs_reach_prometheus(
        tmp_path, monkeypatch) -> None:
    """rules.regex_timeout_ms flows settings -> compile -> engine; the detector exports the time-outs."""
    import detectors.sigma.recipes as sigma_detection  # where atoms (and their regexes) are made

    budgets: list[float] = []
    real = sigma_detection.compile_regex

    def recording(source, counters, timeout_ms=DEFAULT_TIMEOUT_MS):
        budgets.append(timeout_ms)
        return real(source, counters, timeout_ms)

    monkeypatch.setattr(sigma_detection, "compile_regex", recording)
    from service.config import AnomalySettings, CorrelationSettings
    from service.detection import Detector
    from service.reload import compile_configured
    from service.sources.base import Item

    pattern, value = EXPLOSIVE
    (tmp_path / "r.yml").write_text(
        "title: Backtracking\nid: 9a1e0c4e-0000-4000-8000-0000000000aa\nauthor: tests\n"
        "logsource: {product: test}\n"
        f"detection:\n  sel:\n    field|re: '{pattern}'\n  condition: sel\nlevel: low\n")
    rules = RulesSettings(paths=[str(tmp_path / "r.yml")], regex_timeout_ms=1)
    outcome = compile_configured(rules, CorrelationSettings(), AnomalySettings(), 1)
    assert not outcome.errors and budgets == [1]
    detector = Detector(outcome.detection)
    before = metrics.REGISTRY.get_sample_value("pipesentry_regex_timeouts_total") or 0.0
    item = Item({"field": value}, ("t", 0, 0), None, (), 1.0)
    [alert] = detector.process([item])  # a time-out counts as a match
    detector.heartbeat(2.0)
    assert metrics.REGISTRY.get_sample_value("pipesentry_regex_timeouts_total") == before + 1
    assert alert.rule.title == "Backtracking"
