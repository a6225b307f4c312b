"""The plan format between Python and the native screen: one owner, one version, no drift.

``detectors.sigma.screen_abi`` owns the format; the extension exports its mirror. Every enum and
limit is compared member by member, both ways, and a plan of another version is refused.
"""

from __future__ import annotations

import unicodedata
from enum import IntEnum

import pytest
from sigma.types import SpecialChars

from detectors.event import EPOCH_MS_THRESHOLD, MAX_DEPTH, MAX_TS
from detectors.model import LogSource
from detectors.sigma import screen, screen_abi
from detectors.sigma.screen import AVAILABLE, export_plan
from detectors.sigma.screen_abi import ABI_VERSION, CheckKind, GlobPart, Op, Plan, SpecialKind
from detectors.sigma.text import pattern_of
from tests.support.sigma import build, rule_yaml

native = pytest.importorskip("detectors._native") if AVAILABLE else None
pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the native screen is not built (no Rust toolchain)")

LS = LogSource(product="test")
ENUMS: list[type[IntEnum]] = [Op, CheckKind, SpecialKind, GlobPart]


def a_plan() -> Plan:
    """The plan of a route with a text check, a regex, a glob, a program and a special atom."""
    detection = {"sel": {"a|contains": "x", "b|re": "^y+$", "c": "p*q?"}, "nul": {"d": None},
                 "condition": "sel and not nul"}
    ruleset = build(rule_yaml(detection))
    return export_plan(ruleset._route(LS).index, ruleset._atoms)


def test_the_extension_mirrors_every_enum_member_both_ways():
    exported = native.ABI
    assert sorted(exported) == sorted(enum.__name__ for enum in ENUMS)
    for enum in ENUMS:
        assert exported[enum.__name__] == {member.name: member.value for member in enum}, enum.__name__


def test_the_versions_and_the_mirrored_limits_are_equal():
    assert native.ABI_VERSION == ABI_VERSION
    expected = {"EPOCH_MS_THRESHOLD": EPOCH_MS_THRESHOLD, "MAX_TS": MAX_TS,
                # the case folding the walk deems the same as Python's is Unicode 14's
                "PYTHON_UNICODE": unicodedata.unidata_version}
    assert dict(native.LIMITS) == expected
    assert screen_abi.STRICT_DEPTH == MAX_DEPTH - 2 == a_plan().strict_depth


def test_text_kinds_and_glob_parts_are_the_ones_the_compiler_writes():
    star, one = SpecialChars.WILDCARD_MULTI, SpecialChars.WILDCARD_SINGLE
    assert [pattern_of(parts, fold=True).kind for parts in (["a"], ["a", star], [star, "a"], [star, "a", star],
                                                            ["a", one], [star])] == [k for k in CheckKind if k >= 0]
    glob = pattern_of(["a", star, "b", one], fold=True).glob
    assert screen_abi.glob_parts(glob) == [(GlobPart.LITERAL, "a"), (GlobPart.STAR, "*"),
                                          (GlobPart.LITERAL, "b"), (GlobPart.ONE, "?")]


def test_a_plan_is_typed_and_its_fields_are_the_constructor_keywords():
    plan = a_plan()
    assert {check.kind for check in plan.checks} == {CheckKind.REGEX, CheckKind.GLOB}  # "contains": by key alone
    assert [(op, arg) for op, arg in plan.programs[0] or []][3:] == [(Op.ATOM, 3), (Op.NOT, 0), (Op.AND, 4)]
    assert [special.kind for special in plan.special] == [SpecialKind.NULL]
    assert plan.abi_version == ABI_VERSION
    # the positive atoms of the rule (not the negated null test), by the names its matches show
    [shown] = plan.shown
    assert shown is not None and sorted(plan.displays[atom] for atom in shown) == ["a", "b", "c"]
    assert len(plan.displays) == plan.atom_count
    assert native.Screen(**plan._asdict()) is not None


@pytest.mark.parametrize("version", [ABI_VERSION - 1, ABI_VERSION + 1, "1"])
def test_a_plan_of_another_version_is_refused_naming_both(version):
    with pytest.raises(native.AbiMismatch) as refused:
        native.Screen(**a_plan()._replace(abi_version=version)._asdict())
    if isinstance(version, int):
        assert f"version {version}," in str(refused.value)
    assert f"reads version {ABI_VERSION}" in str(refused.value)


def test_a_plan_without_a_version_is_refused():
    entries = a_plan()._asdict()
    del entries["abi_version"]
    with pytest.raises(native.AbiMismatch, match="without an ABI version"):
        native.Screen(**entries)


def test_build_lets_a_version_mismatch_through_instead_of_running_unscreened(monkeypatch):
    """A stale extension is a build error to fix, not a route quietly left to Python."""
    stale = a_plan()._replace(abi_version=ABI_VERSION + 1)
    monkeypatch.setattr(screen, "export_plan", lambda index, atoms, cased_fields=False: stale)
    ruleset = build(rule_yaml({"sel": {"a": "x"}, "condition": "sel"}))
    with pytest.raises(native.AbiMismatch):
        ruleset.screen(LS)


def test_incomplete_plans_and_unknown_codes_are_refused():
    plan = a_plan()
    entries = plan._asdict()
    del entries["strict_depth"]
    with pytest.raises(TypeError, match="without strict_depth"):
        native.Screen(**entries)
    with pytest.raises(TypeError, match="unknown"):
        native.Screen(**plan._asdict(), extra=1)
    bad_check = plan.checks[0]._replace(kind=9)
    with pytest.raises(ValueError, match="unknown CheckKind code 9"):
        native.Screen(**plan._replace(checks=[bad_check, *plan.checks[1:]])._asdict())
    program = plan.programs[0] or []
    with pytest.raises(ValueError, match="unknown Op code 7"):
        native.Screen(**plan._replace(programs=[[*program, (7, 0)]])._asdict())
    with pytest.raises(ValueError, match="unknown SpecialKind code 3"):
        native.Screen(**plan._replace(special=[plan.special[0]._replace(kind=3)])._asdict())
    glob_check = next(check for check in plan.checks if check.kind is CheckKind.GLOB)
    with pytest.raises(ValueError, match="unknown GlobPart code 5"):
        native.Screen(**plan._replace(checks=[glob_check._replace(glob=[(5, "x")])])._asdict())


class _PreAbiBuild:
    """An extension built before plans had a version: no ABI_VERSION, no AbiMismatch."""

    class Screen:
        def __init__(self, **plan: object) -> None:
            raise TypeError("Screen() got an unexpected keyword argument 'strict_depth'")


@pytest.mark.parametrize("built_for", [None, ABI_VERSION + 1])
def test_a_stale_build_is_named_before_any_plan_is_handed_over(monkeypatch, built_for):
    stale = _PreAbiBuild()
    if built_for is not None:
        stale.ABI_VERSION = built_for  # type: ignore[attr-defined]
    monkeypatch.setattr(screen, "_native", stale)
    ruleset = build(rule_yaml({"sel": {"a": "x"}, "condition": "sel"}))
    with pytest.raises(screen_abi.StaleExtension) as refused:
        ruleset.screen(LS)
    assert f"version {built_for}" in str(refused.value) if built_for else "no version" in str(refused.value)
    assert f"writes version {ABI_VERSION}" in str(refused.value)
    assert refused.value.context == {"extension": built_for, "plan": ABI_VERSION}
