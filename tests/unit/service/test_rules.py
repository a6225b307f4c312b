"""service.rules: reading rule files and pipelines from disk into the engine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service import rules as rules_mod
from service.rules import default_rules_dir, load_rules, read_rule_texts

RULE = """\
title: {title}
id: {rule_id}
status: test
author: Tester
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\\\\{image}'
    condition: selection
level: high
"""

BROKEN = """\
title: Broken
id: 00000000-0000-0000-0000-00000000dead
logsource:
    product: windows
detection:
    selection:
        Image|nosuchmodifier: x
    condition: selection
"""

PIPELINE = """\
name: rename
priority: 10
transformations:
    - id: image_to_exe
      type: field_name_mapping
      mapping:
          Image: exe
"""


def rule(title: str, rule_id: str, image: str = "evil.exe") -> str:
    return RULE.format(title=title, rule_id=rule_id, image=image)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "pack"
    write(root / "b" / "two.yml", rule("Two", "22222222-2222-2222-2222-222222222222"))
    write(root / "a" / "one.yaml", rule("One", "11111111-1111-1111-1111-111111111111"))
    write(root / "a" / "notes.md", "not a rule")
    write(root / ".hidden" / "skip.yml", rule("Hidden", "33333333-3333-3333-3333-333333333333"))
    return root


def test_directory_tree_is_read_sorted_with_the_root_as_ruleset(tree: Path) -> None:
    texts = read_rule_texts([tree])
    assert [Path(t.source).name for t in texts] == ["one.yaml", "two.yml"]
    assert {t.ruleset for t in texts} == {"pack"}
    result = load_rules([tree])
    assert not result.errors
    assert [r.title for r in result.ruleset.rules] == ["One", "Two"]
    assert {r.ruleset for r in result.ruleset.rules} == {"pack"}


def test_a_single_file_takes_its_parent_directory_as_ruleset(tree: Path) -> None:
    result = load_rules([tree / "b" / "two.yml"])
    assert [(r.title, r.ruleset) for r in result.ruleset.rules] == [("Two", "b")]


def test_the_same_file_reached_twice_is_loaded_once(tree: Path) -> None:
    texts = read_rule_texts([tree, tree / "a" / "one.yaml"])
    assert len(texts) == 2


def test_bad_files_become_errors_not_exceptions(tmp_path: Path) -> None:
    root = tmp_path / "rules"
    write(root / "good.yml", rule("Good", "44444444-4444-4444-4444-444444444444"))
    write(root / "latin1.yml", "title: caf\xe9\n".encode("latin-1"))
    write(root / "broken.yml", BROKEN)
    result = load_rules([root, tmp_path / "missing"])
    assert [r.title for r in result.ruleset.rules] == ["Good"]
    reasons = {Path(e.source).name: e.reason for e in result.errors}
    assert "not UTF-8" in reasons["latin1.yml"]
    assert "no such file" in reasons["missing"]
    assert "broken.yml" in reasons
    assert any(e.rule_id == "00000000-0000-0000-0000-00000000dead" for e in result.errors)


def test_unreadable_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "rules"
    target = write(root / "locked.yml", rule("Locked", "55555555-5555-5555-5555-555555555555"))
    real = rules_mod._read_text

    def fake(path: Path) -> str:
        if path == target:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(rules_mod, "_read_text", fake)
    result = load_rules([root])
    assert [(Path(e.source).name, e.reason) for e in result.errors] == [("locked.yml", "cannot read: Permission denied")]


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "r" / "bom.yml", b"\xef\xbb\xbf" + rule("Bom", "66666666-6666-6666-6666-666666666666").encode())
    assert [r.title for r in load_rules([path]).ruleset.rules] == ["Bom"]


def test_pipeline_files_are_applied(tmp_path: Path) -> None:
    path = write(tmp_path / "r" / "x.yml", rule("Mapped", "77777777-7777-7777-7777-777777777777"))
    pipeline = write(tmp_path / "pipe.yml", PIPELINE)
    plain = load_rules([path]).ruleset
    mapped = load_rules([path], [pipeline]).ruleset
    assert plain.evaluate({"Image": "C:\\x\\evil.exe"})
    assert not mapped.evaluate({"Image": "C:\\x\\evil.exe"})
    assert mapped.evaluate({"exe": "C:\\x\\evil.exe"})


def test_missing_pipeline_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "r" / "x.yml", rule("X", "88888888-8888-8888-8888-888888888888"))
    result = load_rules([path], [tmp_path / "nope.yml"])
    assert len(result.ruleset.rules) == 1
    assert [Path(e.source).name for e in result.errors] == ["nope.yml"]


def test_default_rules_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(rules_mod.RULES_DIR_ENV, raising=False)
    assert default_rules_dir() == Path(rules_mod.__file__).resolve().parent.parent / "sigma-rules"
    assert default_rules_dir().is_dir()
    monkeypatch.setenv(rules_mod.RULES_DIR_ENV, str(tmp_path))
    assert default_rules_dir() == tmp_path


def test_reading_thousands_of_files_is_fast(tmp_path: Path) -> None:
    root = tmp_path / "many"
    text = rule("Many", "99999999-9999-9999-9999-999999999999")
    for i in range(4000):
        write(root / f"d{i % 40:02d}" / f"r{i:04d}.yml", text)
    started = time.process_time()  # CPU time: other load on a shared machine does not count
    texts = read_rule_texts([root])
    elapsed = time.process_time() - started
    assert len(texts) == 4000
    assert elapsed < 1.0, f"reading 4000 rule files took {elapsed:.2f}s of CPU"


def test_loading_leaves_the_collector_as_it_was_with_the_ruleset_frozen(tmp_path: Path) -> None:
    """load_rules pauses the collector, collects the compile's garbage once, freezes what lives on
    (no collection over the whole ruleset at the next allocation) and restores the caller's setting."""
    import gc

    root = tmp_path / "rules"
    root.mkdir()
    (root / "a.yml").write_text(RULE, encoding="utf-8")
    gc.unfreeze()
    try:
        for cache in (tmp_path / "cache", tmp_path / "cache"):  # a compile, then a restore
            before = gc.get_freeze_count()
            result = load_rules([root], cache_dir=cache)
            assert gc.isenabled() and gc.get_freeze_count() > before
            assert gc.get_count()[0] < 1000
            gc.unfreeze()
        assert result.restored
        gc.disable()
        load_rules([root])
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_rule_paths_spell_each_file_as_rule_files_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stat_signature hashes the paths _rule_paths spells: the same strings as str() of _rule_files,
    whatever the spelling of the root (a cache made before keeps its manifests)."""
    for name in ("a/b/one.yml", "a/two.yaml", "a/.hidden/x.yml", "a/skip.txt", "three.yml"):
        (tmp_path / "rules" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "rules" / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    for root in (tmp_path / "rules", Path("rules"), Path("./rules/"), Path("rules/a/.."), Path(".")):
        expected = [str(path) for path in rules_mod._rule_files(root)]
        assert list(rules_mod._rule_paths(root)) == expected and expected
