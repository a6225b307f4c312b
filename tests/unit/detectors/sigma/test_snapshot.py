"""detectors.sigma.snapshot: a ruleset kept as bytes evaluates exactly as the one it was made of."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from bench.eventgen import generate
from detectors.model import LogSource
from detectors.sigma import Ruleset, RuleText, compile_ruleset
from detectors.sigma.compiled import rule_parts
from detectors.sigma.screen import export_plan
from detectors.sigma.screen_abi import Plan
from detectors.sigma.snapshot import MAGIC, SnapshotError, restore, snapshot
from service.rules import default_rules_dir, read_rule_texts
from tests.support.sigma import rule_yaml

ROOT = Path(__file__).resolve().parents[4]

VARIED = [
    rule_yaml({"sel": {"Image|endswith": "\\evil.exe", "CommandLine|contains|all": ["-enc", "hidden"]},
               "condition": "sel"}, {"product": "windows"}),
    rule_yaml({"sel": {"CommandLine|re": "(?i)invoke-[a-z]+expression"}, "condition": "sel"}),
    rule_yaml({"sel": {"CommandLine|re": "(a)\\1b"}, "condition": "sel"}),  # not RE2: the timed fallback
    rule_yaml({"sel": {"src_ip|cidr": ["10.0.0.0/8", "fe80::/10"]}, "condition": "sel"}),
    rule_yaml({"sel": {"count|gte": 5, "ts|hour": 3}, "condition": "sel"}),
    rule_yaml({"sel": {"User": None}, "other": {"Parent|exists": True}, "condition": "sel and not other"}),
    rule_yaml({"sel": {"a|fieldref|startswith": "b"}, "condition": "sel"}),
    rule_yaml({"keywords": ["mimikatz", "sekurlsa::*"], "condition": "keywords"}),
    rule_yaml({"sel": {"Path": "C:\\*\\tem?\\*.dll", "Name|cased": "Evil"}, "condition": "1 of sel*"}),
    rule_yaml({"filter": {"Image": "x"}, "condition": "not filter"}),
]

EVENTS = [
    {"Image": "C:\\x\\evil.exe", "CommandLine": "ps -enc -w hidden"},
    {"CommandLine": "Invoke-Expression foo"}, {"CommandLine": "aab"},
    {"src_ip": "10.1.2.3"}, {"src_ip": "fe80::1"}, {"count": "7", "ts": "2024-01-01T03:00:00"},
    {"Parent": "p"}, {"a": "xyz", "b": "xy"}, {"msg": "sekurlsa::logonpasswords"},
    {"Path": "C:\\Users\\temp\\a.dll", "Name": "Evil"}, {"Name": "evil"}, {"Image": "x"}, {},
]


def _matches(ruleset: Ruleset, event: object, logsource: LogSource | None = None) -> list[tuple[str, object]]:
    return [(m.rule.id, m.fields) for m in ruleset.evaluate(event, logsource)]  # type: ignore[arg-type]


def test_restored_ruleset_matches_as_compiled() -> None:
    result = compile_ruleset([RuleText(f"r{i}.yml", text, "unit") for i, text in enumerate(VARIED)])
    assert result.errors == []
    data = snapshot(result)
    assert data is not None and data.startswith(MAGIC)
    again = restore(data)
    assert again.ruleset.rules == result.ruleset.rules
    for event in EVENTS:
        assert _matches(again.ruleset, event) == _matches(result.ruleset, event)
        assert [m.rule.id for m in again.ruleset.evaluate_naive(event)] == [
            m.rule.id for m in result.ruleset.evaluate_naive(event)]


def test_cased_field_names_are_kept() -> None:
    """A ruleset compiled for ``rules.field_names: sensitive`` comes back so, its screen plan too."""
    result = compile_ruleset([RuleText(f"r{i}.yml", text, "unit") for i, text in enumerate(VARIED)],
                             cased_fields=True)
    data = snapshot(result)
    assert data is not None
    again = restore(data).ruleset
    assert again.cased_fields and not restore(snapshot(compile_ruleset([RuleText("r.yml", VARIED[0], "unit")]))
                                              or b"").ruleset.cased_fields
    assert again._route(None)._plan is not None and again._route(None)._plan.cased_fields
    lowered = [{k.lower(): v for k, v in event.items()} for event in EVENTS]
    for event in [*EVENTS, *lowered]:
        assert _matches(again, event) == _matches(result.ruleset, event)
    first = again.rules[0].id  # Image|endswith and CommandLine|contains|all
    assert first in dict(_matches(again, {"Image": "C:\\x\\evil.exe", "CommandLine": "ps -enc -w hidden"}))
    assert first not in dict(_matches(again, {"image": "C:\\x\\evil.exe", "commandline": "ps -enc -w hidden"}))


def test_errors_filters_and_correlations_are_kept() -> None:
    texts = read_rule_texts([default_rules_dir()])
    broken = RuleText("broken.yml", "title: x\ndetection: {sel: {a|nosuch: 1}, condition: sel}\n", "unit")
    result = compile_ruleset([*texts, broken])
    data = snapshot(result)
    assert data is not None
    again = restore(data)
    assert again.errors == result.errors and again.errors
    assert again.ruleset.rules == result.ruleset.rules
    assert again.ruleset.filters == result.ruleset.filters
    assert [(info, corr.type, corr.rules) for info, corr in again.ruleset.correlations] == [
        (info, corr.type, corr.rules) for info, corr in result.ruleset.correlations]


def test_project_pack_differential_on_eventgen_stream() -> None:
    result = compile_ruleset(read_rule_texts([default_rules_dir()]))
    data = snapshot(result)
    assert data is not None
    again = restore(data).ruleset
    for logsource, event in generate(3000, seed=7):
        assert _matches(again, event, logsource) == _matches(result.ruleset, event, logsource)
        assert _matches(again, event) == _matches(result.ruleset, event)


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],
    lambda data: data[:-7] + b"\x00" * 7,
    lambda data: b"not a snapshot",
    lambda data: MAGIC + b"\x80\x05garbage",
    lambda data: MAGIC + pickle.dumps({"recipes": [], "rules": [(1, 2, 3, (), (), None)], "correlations": [],
                                       "filters": [], "errors": []}),
    lambda data: MAGIC + pickle.dumps({"recipes": [], "rules": [(1, 2, 3)], "correlations": [], "filters": [],
                                       "errors": []}),
    lambda data: MAGIC + pickle.dumps(["a list"]),
])
def test_damaged_snapshot_is_an_error(damage: object) -> None:
    result = compile_ruleset([RuleText("r.yml", VARIED[0], "unit")])
    data = snapshot(result)
    assert data is not None
    with pytest.raises(SnapshotError):
        restore(damage(data))  # type: ignore[operator]


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo pwned",))


def test_foreign_classes_are_refused() -> None:
    data = MAGIC + pickle.dumps({"recipes": [_Boom()]})
    with pytest.raises(SnapshotError, match="does not hold"):
        restore(data)


def test_a_condition_naming_an_unknown_atom_is_refused() -> None:
    result = compile_ruleset([RuleText("r.yml", VARIED[0], "unit")])
    rule = result.ruleset.compiled[0]
    parts = rule_parts(rule)
    for bad in [(parts[0], ("atom", 99), *parts[2:]), (*parts[:3], (99,), *parts[4:]),
                (*parts[:5], (frozenset({-1}),))]:
        payload = {"recipes": list(result.ruleset.recipes or ()), "rules": [bad],
                   "correlations": [], "filters": [], "errors": []}
        with pytest.raises(SnapshotError, match="unknown atom"):
            restore(MAGIC + pickle.dumps(payload))


def _positions(ruleset: Ruleset) -> dict[int, int]:
    return {id(rule): position for position, rule in enumerate(ruleset.compiled)}


def _plan(plan: Plan) -> Plan:
    """A plan with each trigger clause's atoms sorted (a clause is a set: a restored one may list them otherwise)."""
    return plan._replace(rest=[[sorted(clause) for clause in clauses] for clauses in plan.rest])


def test_the_unrouted_route_comes_back_built_with_its_screen_plan() -> None:
    result = compile_ruleset([RuleText(f"r{i}.yml", text, "unit") for i, text in enumerate(VARIED)])
    data = snapshot(result)
    assert data is not None
    again = restore(data)
    assert again.restored and not result.restored
    fresh_index, index = result.ruleset.route_index(None), again.ruleset.route_index(None)
    assert again.ruleset._routes[None]._plan is not None  # restored with its plan, not built again
    assert index.state(_positions(again.ruleset)) == fresh_index.state(_positions(result.ruleset))
    assert _plan(export_plan(index, again.ruleset._atoms)) == _plan(export_plan(fresh_index, result.ruleset._atoms))
    assert (again.ruleset.screen() is None) == (result.ruleset.screen() is None)


def test_a_damaged_route_part_falls_back_to_building_the_route() -> None:
    """The unrouted route's part is read on first use; one that does not read back (damaged, or naming
    an unknown atom or rule) is built from the rules instead, with the same matches."""
    result = compile_ruleset([RuleText(f"r{i}.yml", text, "unit") for i, text in enumerate(VARIED)])
    data = snapshot(result)
    assert data is not None
    payload = pickle.loads(data[len(MAGIC):])
    state, plan = pickle.loads(payload["route"])
    chosen, fields, keywords, triggers, rest, always, direct = state
    path, (keyword, exact, every, short, keys, small) = next(iter(fields.items()))
    broken = {**fields, path: (keyword, exact, (*every, 10_000), short, keys, small)}
    for route in [payload["route"][:-9], pickle.dumps(((chosen, broken, keywords, triggers, rest, always, direct),
                                                       plan)),
                  pickle.dumps((([*chosen, 10_000], fields, keywords, triggers, rest, always, direct), plan)),
                  pickle.dumps((state, "not a plan")), pickle.dumps((state, (1, 2)))]:
        again = restore(MAGIC + pickle.dumps({**payload, "route": route})).ruleset
        index = again.route_index(None)
        assert index.state(_positions(again)) == result.ruleset.route_index(None).state(_positions(result.ruleset))
        for event in EVENTS:
            assert _matches(again, event) == _matches(result.ruleset, event)


MANY_KEYS = [  # more keys than a small matcher takes: the restored fields get an automaton built on first use
    rule_yaml({"sel": {"CommandLine|contains": [f"needle{i}x" for i in range(20)]}, "condition": "sel"}),
    rule_yaml({"sel": {"Image|endswith": [f"\\tool{i}.exe" for i in range(20)]}, "condition": "sel"}),
    rule_yaml({"keywords": [f"word{i}zz" for i in range(20)], "condition": "keywords"}),
]


def test_a_restored_fields_automaton_is_built_on_its_first_value() -> None:
    result = compile_ruleset([RuleText(f"k{i}.yml", text, "unit") for i, text in enumerate(MANY_KEYS)])
    data = snapshot(result)
    assert data is not None
    again = restore(data).ruleset
    index = again.route_index(None)
    lazy = [path for path, field in index.fields.items() if type(field.automaton).__name__ == "_LazyAutomaton"]
    assert sorted(lazy) == ["commandline", "image"]
    assert index.keywords is not None and type(index.keywords.automaton).__name__ == "_LazyAutomaton"
    events = [{"CommandLine": "a needle7x b"}, {"Image": "C:\\tool19.exe"}, {"msg": "the word3zz"}, {"CommandLine": "none"},
              {"Image": "C:\\tool19.exe.bak"}]
    assert _matches(again, events[0]) == _matches(result.ruleset, events[0]) != []
    built = {path for path, field in index.fields.items() if type(field.automaton).__name__ != "_LazyAutomaton"}
    assert len(built) == 1  # only the field the event showed
    for event in events:
        assert _matches(again, event) == _matches(result.ruleset, event)
    assert index.state(_positions(again)) == result.ruleset.route_index(None).state(_positions(result.ruleset))


def test_a_route_part_with_a_malformed_automaton_key_falls_back_to_building_the_route() -> None:
    """The keys are checked when the route is read: its automata are built later, on a scan."""
    result = compile_ruleset([RuleText(f"k{i}.yml", text, "unit") for i, text in enumerate(MANY_KEYS)])
    data = snapshot(result)
    assert data is not None
    payload = pickle.loads(data[len(MAGIC):])
    (chosen, fields, keywords, triggers, rest, always, direct), plan = pickle.loads(payload["route"])
    path = next(p for p, field in fields.items() if len(field[4]) > 16)
    keyword, exact, every, short, keys, small = fields[path]
    for bad in [((7, keys[0][1]), *keys[1:]), (("", keys[0][1]), *keys[1:]), ((keys[0][0] + "x", keys[0][1]), *keys[1:])]:
        broken = {**fields, path: (keyword, exact, every, short, bad, small)}
        route = pickle.dumps(((chosen, broken, keywords, triggers, rest, always, direct), plan))
        again = restore(MAGIC + pickle.dumps({**payload, "route": route})).ruleset
        assert again._route(None)._plan is None  # built from the rules, not read back
        for event in [{"CommandLine": "a needle7x b"}, {"Image": "C:\\tool3.exe"}, {"msg": "word1zz"}]:
            assert _matches(again, event) == _matches(result.ruleset, event) != []


def test_a_routed_stream_never_reads_the_unrouted_route() -> None:
    result = compile_ruleset([RuleText(f"r{i}.yml", text, "unit") for i, text in enumerate(VARIED)])
    data = snapshot(result)
    assert data is not None
    again = restore(data).ruleset
    windows = LogSource(product="windows")
    assert _matches(again, EVENTS[0], windows) == _matches(result.ruleset, EVENTS[0], windows)
    assert again._unrouted is not None  # still bytes
    again.evaluate(EVENTS[0])
    assert again._unrouted is None


def test_restoring_does_not_import_the_pysigma_parser(tmp_path: Path) -> None:
    """A cached start skips pySigma's parser and processing pipelines (and jinja2 with them)."""
    result = compile_ruleset([RuleText(f"r{i}.yml", text, "unit") for i, text in enumerate(VARIED)])
    data = snapshot(result)
    assert data is not None
    (tmp_path / "snap").write_bytes(data)
    code = ("import sys; from detectors.sigma.snapshot import restore; "
            f"r = restore(open({str(tmp_path / 'snap')!r}, 'rb').read()); r.ruleset.evaluate({{'Image': 'x'}}); "
            "print(sorted(m for m in ('sigma.collection', 'sigma.processing.pipeline', 'sigma.conditions', "
            "'jinja2', 'pyparsing') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip() == "[]"
