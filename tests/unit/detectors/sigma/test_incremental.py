"""Incremental compiling (``compile_ruleset(..., memo=)``, ``detectors.sigma.incremental``): after any
change of the texts the result equals a full compile of the new texts, and only the changed texts
(plus filter and correlation files and the rules those reference) are parsed again."""

from __future__ import annotations

import random

import pytest

from detectors.sigma import RuleText
from detectors.sigma.memo import CompileMemo
from tests.support.rules import failed_logins_in_a_minute
from tests.support.sigma import assert_same_as_full, rule_yaml

WIN = {"product": "windows", "category": "process_creation"}
DUP_ID = "00000000-0000-4000-8000-00000000d0d0"
FILTERED_ID = "00000000-0000-4000-8000-00000000f1f1"


def filter_doc(target: str, user: str = "adm_") -> str:
    return f"""title: Filter admins
logsource: {{category: process_creation, product: windows}}
filter:
  rules: [{target}]
  selection:
    User|startswith: '{user}'
  condition: selection
"""


BASE: dict[str, str] = {
    "a_regex.yml": rule_yaml({"sel": {"CommandLine|re": "a+b", "Image|endswith": "\\x.exe"}, "condition": "sel"},
                             logsource=WIN, id=FILTERED_ID),
    "b_bad_regex.yml": rule_yaml({"sel": {"Image|endswith": "\\y.exe"}, "re": {"CommandLine|re": "(a+)+["},
                                  "condition": "sel and re"}, logsource=WIN),
    "c_broken_yaml.yml": "title: [unclosed\n",
    "d_two_docs.yml": rule_yaml({"sel": {"Image": "a"}, "condition": "sel"}) + "---\n"
    + rule_yaml({"sel": {"Image": "b", "User|contains": "x"}, "condition": "sel"}),
    "e_dup_first.yml": rule_yaml({"sel": {"Image": "e"}, "condition": "sel"}, id=DUP_ID),
    "f_dup_second.yml": rule_yaml({"sel": {"Image": "f", "CommandLine|re": "f.*"}, "condition": "sel"}, id=DUP_ID),
    "g_correlation.yml": failed_logins_in_a_minute(),
    "h_keyword.yml": rule_yaml({"keywords": ["evil", "worse"], "condition": "keywords"}),
    "i_filter.yml": filter_doc(FILTERED_ID),
    "j_no_meta.yml": rule_yaml({"sel": {"Image": "j"}, "condition": "sel"}, level="nonsense"),
}


def texts_of(files: dict[str, str]) -> list[RuleText]:
    return [RuleText(name, text, "unit") for name, text in sorted(files.items())]


def step(memo: CompileMemo, files: dict[str, str], pipelines: tuple[str, ...] = ()) -> None:
    assert_same_as_full(texts_of(files), memo, pipelines)


def edits() -> list[tuple[str, object]]:
    """(description, function changing the files in place) pairs, applied in order."""
    def change(name: str, text: str) -> object:
        return lambda files: files.__setitem__(name, text)

    def remove(name: str) -> object:
        return lambda files: files.pop(name)

    def rename(old: str, new: str) -> object:
        return lambda files: files.__setitem__(new, files.pop(old))

    return [
        ("change a rule", change("d_two_docs.yml", BASE["d_two_docs.yml"].replace("Image: b", "Image: bb"))),
        ("add a rule", change("da_new.yml", rule_yaml({"sel": {"CommandLine|re": "a+b"}, "condition": "sel"}))),
        ("remove the first duplicate", remove("e_dup_first.yml")),
        ("add it back", change("e_dup_first.yml", BASE["e_dup_first.yml"])),
        ("rename a file past others", rename("d_two_docs.yml", "z_two_docs.yml")),
        ("break a rule", change("a_regex.yml", BASE["a_regex.yml"].replace("condition: sel", "condition: nope"))),
        ("fix it", change("a_regex.yml", BASE["a_regex.yml"])),
        ("the filter targets another rule", change("i_filter.yml", filter_doc(DUP_ID))),
        ("change the filter's value", change("i_filter.yml", filter_doc(DUP_ID, "root"))),
        ("change the correlation", change("g_correlation.yml", failed_logins_in_a_minute(generate=True))),
        ("rename the referenced rule", change("g_correlation.yml", failed_logins_in_a_minute().replace(
            "name: failed_login", "name: failed_login2"))),
        ("move the duplicate id to a new file first", change("a0_dup.yml", BASE["e_dup_first.yml"].replace(
            "Image: e", "Image: moved"))),
        ("fix the YAML", change("c_broken_yaml.yml", rule_yaml({"sel": {"Image": "c"}, "condition": "sel"}))),
        ("remove the filter", remove("i_filter.yml")),
        ("remove the correlation", remove("g_correlation.yml")),
        ("a filter in a rule file", change("h_keyword.yml", BASE["h_keyword.yml"] + "---\n" + filter_doc(DUP_ID))),
        ("nothing changed", lambda files: None),
    ]


VARIANTS = {"filter and correlation": (), "no filter": ("i_filter.yml",),
            "no correlation": ("g_correlation.yml",), "neither": ("i_filter.yml", "g_correlation.yml")}
"""Base sets (the files left out); a set with both a filter and a correlation reuses nothing."""


@pytest.mark.parametrize("left_out", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_edit_compiles_as_a_full_compile(left_out: tuple[str, ...]) -> None:
    files = {k: v for k, v in BASE.items() if k not in left_out}
    memo = CompileMemo()
    step(memo, files)
    reused = 0
    for _, edit in edits():
        edit(files)  # type: ignore[operator]
        step(memo, files)
        reused += memo.last["reused"]
    assert reused > 0 or not left_out


@pytest.mark.parametrize("left_out", VARIANTS.values(), ids=VARIANTS.keys())
def test_random_edit_sequences_compile_as_a_full_compile(left_out: tuple[str, ...]) -> None:
    pool = edits()
    for seed in range(3):
        rng = random.Random(seed)
        files = {k: v for k, v in BASE.items() if k not in left_out}
        memo = CompileMemo()
        step(memo, files)
        for _ in range(8):
            _, edit = rng.choice(pool)
            try:
                edit(files)  # type: ignore[operator]
            except KeyError:  # removing or renaming what is gone already
                continue
            step(memo, files)


MAPPING = """
name: ecs
priority: 10
transformations:
  - id: ecs_fields
    type: field_name_mapping
    mapping:
      Image: process.executable
"""


@pytest.mark.parametrize("with_filter", [False, True])
def test_with_a_processing_pipeline(with_filter: bool) -> None:
    files = {k: v for k, v in BASE.items() if with_filter or k != "i_filter.yml"}
    memo = CompileMemo()
    step(memo, files, (MAPPING,))
    files["d_two_docs.yml"] = files["d_two_docs.yml"].replace("Image: a", "Image: aa")
    step(memo, files, (MAPPING,))
    step(memo, files, (MAPPING.replace("process.executable", "exe"),))  # another pipeline: nothing reused
    assert memo.last["reused"] == 0


def test_only_changed_texts_are_parsed() -> None:
    files = {k: v for k, v in BASE.items() if k not in ("g_correlation.yml", "i_filter.yml")}
    memo = CompileMemo()
    step(memo, files)
    assert memo.last == {"texts": len(files), "parsed": len(files), "reused": 0}
    step(memo, files)
    assert memo.last["parsed"] == 0
    files["h_keyword.yml"] = files["h_keyword.yml"].replace("evil", "vile")
    step(memo, files)
    assert memo.last["parsed"] == 1


@pytest.mark.parametrize("special", ["i_filter.yml", "g_correlation.yml"])
def test_filter_and_correlation_files_are_parsed_every_time(special: str) -> None:
    files = {k: v for k, v in BASE.items() if k not in ("g_correlation.yml", "i_filter.yml") or k == special}
    memo = CompileMemo()
    step(memo, files)
    files["h_keyword.yml"] = files["h_keyword.yml"].replace("evil", "vile")
    step(memo, files)
    assert memo.last["parsed"] == 2  # the changed file and the filter or correlation file
    files["k_named.yml"] = rule_yaml({"sel": {"outcome": "failure"}, "condition": "sel"}, name="failed_login")
    step(memo, files)
    files["h_keyword.yml"] = BASE["h_keyword.yml"]
    step(memo, files)
    # a correlation's referenced rules (its own file's and k's) are parsed again with it
    assert memo.last["parsed"] == (3 if special == "g_correlation.yml" else 2)


def test_filters_with_correlations_or_a_pipeline_reuse_nothing() -> None:
    files = dict(BASE)
    memo = CompileMemo()
    step(memo, files)
    step(memo, files)
    assert memo.last["reused"] == 0 and memo.units == {}


def test_another_option_reuses_nothing() -> None:
    from detectors.sigma import compile_ruleset

    files = dict(BASE)
    memo = CompileMemo()
    step(memo, files)
    texts = texts_of(files)
    result = compile_ruleset(texts, regex_timeout_ms=5.0, memo=memo)
    assert memo.last["reused"] == 0
    assert result.errors == compile_ruleset(texts, regex_timeout_ms=5.0).errors


def test_many_rules_sharing_atoms() -> None:
    """Atom ids far past a small set's table (their clause sets iterate in construction order, which
    the screen plan follows), shared atoms, keyword rules and a change in the middle."""
    def rule(number: int, value: str = "v") -> str:
        values = [f"{value}{number}-{k}" for k in range(5)] + ["shared", f"s{number % 7}"]
        return rule_yaml({"sel": {"CommandLine|contains": values, "Image|endswith": [f"\\i{number % 11}.exe"]},
                          "kw": [f"k{number}", "kshared"], "condition": "sel or kw"}, logsource=WIN)

    files = {f"r{number:03}.yml": rule(number) for number in range(60)}
    memo = CompileMemo()
    step(memo, files)
    for number in (30, 0, 59):
        files[f"r{number:03}.yml"] = rule(number, "changed")
        step(memo, files)
        assert memo.last["parsed"] == 1


def test_a_memo_made_in_one_field_name_mode_is_not_reused_in_the_other() -> None:
    from detectors.sigma import compile_ruleset
    from detectors.sigma.snapshot import snapshot

    memo = CompileMemo()
    texts = texts_of(BASE)
    for cased in (False, True, True, False):
        incremental = compile_ruleset(texts, memo=memo, cased_fields=cased)
        full = compile_ruleset(texts, cased_fields=cased)
        assert incremental.ruleset.cased_fields is cased
        assert incremental.errors == full.errors and snapshot(incremental) == snapshot(full)
    assert memo.last["parsed"] == len(texts)  # the mode changed before this compile: nothing reused
