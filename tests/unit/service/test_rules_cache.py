"""service.rules_cache: compiled rulesets kept on disk, keyed by everything they depend on."""

from __future__ import annotations

import logging
import os
import pickle
import stat
from pathlib import Path

import orjson
import pytest

from bench.eventgen import generate
from detectors.sigma import LoadResult, Ruleset
from detectors.sigma.memo import CompileMemo
from detectors.sigma.screen import export_plan
from detectors.sigma.screen_abi import Plan
from detectors.sigma.snapshot import MAGIC, MEMO_MAGIC, snapshot
from service import rules_cache
from service.rules import load_rules
from tests.conftest import SIGMAHQ
from tests.support.sigma import rule_yaml

BROKEN = rule_yaml({"selection": {"Image|nosuchmodifier": "x"}, "condition": "selection"}, title="Broken")
PIPELINE = "name: rename\ntransformations:\n  - type: field_name_mapping\n    mapping: {Image: exe}\n"


def rule(title: str, rule_id: str, image: str = "evil.exe") -> str:
    return rule_yaml({"selection": {"Image|endswith": "\\" + image}, "condition": "selection"},
                     {"product": "windows", "category": "process_creation"}, title=title, id=rule_id)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + rules_cache.SUFFIX))


def _rules(tmp_path: Path) -> Path:
    root = tmp_path / "rules"
    write(root / "a.yml", rule("A", "00000000-0000-4000-8000-00000000000a"))
    write(root / "b.yml", rule("B", "00000000-0000-4000-8000-00000000000b", image="other.exe"))
    write(root / "broken.yml", BROKEN)
    return root


def test_a_miss_writes_a_private_entry_and_a_hit_gives_the_same_result(tmp_path: Path) -> None:
    root, cache = _rules(tmp_path), tmp_path / "cache"
    fresh = load_rules([root], cache_dir=cache)
    [entry] = _entries(cache)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    cached = load_rules([root], cache_dir=cache)
    assert cached.ruleset.rules == fresh.ruleset.rules
    assert cached.errors == fresh.errors and cached.errors
    event = {"Image": "C:\\x\\evil.exe"}
    assert [m.rule.id for m in cached.ruleset.evaluate(event)] == [m.rule.id for m in fresh.ruleset.evaluate(event)]
    assert not list(cache.glob(".tmp-*"))


def test_the_key_follows_texts_sources_pipelines_and_options(tmp_path: Path) -> None:
    root = _rules(tmp_path)
    texts = [rules_cache.RuleText("a.yml", "x", "r")]
    base = rules_cache.cache_key(texts, [], 50.0)
    assert rules_cache.cache_key(texts, [], 50.0) == base
    assert rules_cache.cache_key([rules_cache.RuleText("a.yml", "y", "r")], [], 50.0) != base
    assert rules_cache.cache_key([rules_cache.RuleText("b.yml", "x", "r")], [], 50.0) != base
    assert rules_cache.cache_key([rules_cache.RuleText("a.yml", "x", "s")], [], 50.0) != base
    assert rules_cache.cache_key(texts, [PIPELINE], 50.0) != base
    assert rules_cache.cache_key(texts, [], 20.0) != base
    assert rules_cache.cache_key(texts, [], 50.0, cased_fields=True) != base
    assert rules_cache.manifest_name("sig", 50.0, cased_fields=True) != rules_cache.manifest_name("sig", 50.0)
    cache = tmp_path / "cache"
    load_rules([root], cache_dir=cache)
    write(root / "a.yml", rule("A2", "00000000-0000-4000-8000-00000000000a"))
    changed = load_rules([root], cache_dir=cache)
    assert "A2" in [r.title for r in changed.ruleset.rules]
    assert len(_entries(cache)) == 2


def test_each_field_names_mode_has_its_own_entry(tmp_path: Path) -> None:
    """``rules.field_names`` changes the atoms' field paths: a cached ruleset of the other mode is never used."""
    root, cache = _rules(tmp_path), tmp_path / "cache"
    event = {"image": "C:\\x\\evil.exe"}
    for _ in range(2):  # a miss, then a hit, for each mode
        assert load_rules([root], cache_dir=cache).ruleset.evaluate(event)
        cased = load_rules([root], cache_dir=cache, cased_fields=True).ruleset
        assert cased.cased_fields and not cased.evaluate(event)
        assert cased.evaluate({"Image": "C:\\x\\evil.exe"})
    assert len(_entries(cache)) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "group-writable"])
def test_a_damaged_or_foreign_entry_is_ignored_and_rebuilt(tmp_path: Path, damage: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    root, cache = _rules(tmp_path), tmp_path / "cache"
    fresh = load_rules([root], cache_dir=cache)
    [entry] = _entries(cache)
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "garbage":
        entry.write_bytes(os.urandom(4096))
    else:
        entry.chmod(0o660)
    with caplog.at_level(logging.WARNING, logger="service.rules_cache"):
        again = load_rules([root], cache_dir=cache)
    assert any("rules cache entry ignored" in r.getMessage() for r in caplog.records)
    assert again.ruleset.rules == fresh.ruleset.rules
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600  # rewritten whole
    assert rules_cache.load(cache, entry.name.removesuffix(rules_cache.SUFFIX), 50.0) is not None


def test_an_unwritable_cache_does_not_stop_the_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _rules(tmp_path)
    blocker = write(tmp_path / "file", "not a directory")
    with caplog.at_level(logging.WARNING, logger="service.rules_cache"):
        result = load_rules([root], cache_dir=blocker / "cache")
    assert len(result.ruleset.rules) == 2
    assert any("cannot be written" in r.getMessage() for r in caplog.records)


def test_only_the_newest_entries_are_kept(tmp_path: Path) -> None:
    root, cache = _rules(tmp_path), tmp_path / "cache"
    for number in range(rules_cache.KEEP + 2):
        write(root / "a.yml", rule(f"A{number}", "00000000-0000-4000-8000-00000000000a"))
        load_rules([root], cache_dir=cache)
        for entry in _entries(cache):  # mtimes one second apart, whatever the clock's resolution
            os.utime(entry, (entry.stat().st_mtime - 1, entry.stat().st_mtime - 1))
    assert len(_entries(cache)) == rules_cache.KEEP


def test_sigmahq_from_the_cache_matches_a_fresh_compile(tmp_path: Path, shared_dir: Path) -> None:
    """The differential test: the whole SigmaHQ corpus, compiled and cached, over the eventgen mix."""
    del shared_dir
    corpus = SIGMAHQ / "rules"
    fresh = load_rules([corpus], cache_dir=tmp_path)
    cached = load_rules([corpus], cache_dir=tmp_path)
    assert cached.ruleset is not fresh.ruleset and cached.ruleset.rules == fresh.ruleset.rules
    assert cached.ruleset._unrouted is not None  # the unrouted route is read on first use only
    for logsource, event in generate(4000, seed=3):
        want = [(m.rule.id, m.fields) for m in fresh.ruleset.evaluate(event, logsource)]
        assert [(m.rule.id, m.fields) for m in cached.ruleset.evaluate(event, logsource)] == want
    for _, event in generate(1000, seed=4):
        want = [(m.rule.id, m.fields) for m in fresh.ruleset.evaluate(event)]
        assert [(m.rule.id, m.fields) for m in cached.ruleset.evaluate(event)] == want
    # the unrouted route comes from the cache built: the same index, the same screen plan and verdicts
    assert cached.restored and not fresh.restored
    index, fresh_index = cached.ruleset.route_index(None), fresh.ruleset.route_index(None)
    assert cached.ruleset._routes[None]._plan is not None  # restored with its plan, not built again
    assert index.state(_positions(cached.ruleset)) == fresh_index.state(_positions(fresh.ruleset))
    assert _plan(export_plan(index, cached.ruleset._atoms)) == _plan(export_plan(fresh_index, fresh.ruleset._atoms))
    screen, fresh_screen = cached.ruleset.screen(), fresh.ruleset.screen()
    if screen is not None and fresh_screen is not None:
        lines = [orjson.dumps(event) for _, event in generate(3000, seed=5)]
        args = ([0] * len(lines), ["ts"], 1 << 20, 32)
        assert screen.scan(lines, *args)[0] == fresh_screen.scan(lines, *args)[0]


def _positions(ruleset: Ruleset) -> dict[int, int]:
    return {id(rule): position for position, rule in enumerate(ruleset.compiled)}


def _plan(plan: Plan) -> Plan:
    """A plan with each trigger clause's atoms sorted (a clause is a set: a restored one may list them otherwise)."""
    return plan._replace(rest=[[sorted(clause) for clause in clauses] for clauses in plan.rest])


def _settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file counts as settled (they were all written a moment ago)."""
    monkeypatch.setattr(rules_cache, "SETTLE_S", -3600.0)


def test_a_settled_set_is_found_by_its_manifest_without_reading_the_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.rules

    _settled(monkeypatch)
    root, cache = _rules(tmp_path), tmp_path / "cache"
    (root / "broken.yml").unlink()  # compile errors are kept in the entry; read errors would stop a manifest
    fresh = load_rules([root], cache_dir=cache)
    assert len(list(cache.glob("*" + rules_cache.MANIFEST))) == 1

    def no_read(path: Path) -> str:
        raise AssertionError(f"{path} read although its manifest is known")

    monkeypatch.setattr(service.rules, "_read_text", no_read)
    cached = load_rules([root], cache_dir=cache)
    assert cached.restored and cached.ruleset.rules == fresh.ruleset.rules


def test_a_file_changed_in_place_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same size, same modification time: the change time still tells (no manifest names the old texts)."""
    _settled(monkeypatch)
    root, cache = _rules(tmp_path), tmp_path / "cache"
    (root / "broken.yml").unlink()
    load_rules([root], cache_dir=cache)
    path = root / "a.yml"
    before = path.stat()
    text = path.read_text(encoding="utf-8")
    changed = text.replace("title: A\n", "title: Z\n")
    assert changed != text and len(changed) == len(text)
    while path.stat().st_ctime_ns == before.st_ctime_ns:  # a coarse clock: write until the change time moves
        path.write_text(changed, encoding="utf-8")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = load_rules([root], cache_dir=cache)
    assert "Z" in [r.title for r in again.ruleset.rules] and "A" not in [r.title for r in again.ruleset.rules]


def test_files_written_just_now_get_no_manifest(tmp_path: Path) -> None:
    root, cache = _rules(tmp_path), tmp_path / "cache"
    (root / "broken.yml").unlink()
    load_rules([root], cache_dir=cache)
    load_rules([root], cache_dir=cache)
    assert _entries(cache) and not list(cache.glob("*" + rules_cache.MANIFEST))


def test_unreadable_files_get_no_manifest_and_a_damaged_one_is_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _settled(monkeypatch)
    root, cache = _rules(tmp_path), tmp_path / "cache"
    write(root / "latin1.yml", "").write_bytes(b"title: \xff\n")
    first = load_rules([root], cache_dir=cache)
    assert any("not UTF-8" in e.reason for e in first.errors)
    assert not list(cache.glob("*" + rules_cache.MANIFEST))
    (root / "latin1.yml").unlink()
    load_rules([root], cache_dir=cache)
    [manifest] = cache.glob("*" + rules_cache.MANIFEST)
    manifest.write_bytes(b"not a key")
    again = load_rules([root], cache_dir=cache)
    assert again.restored and len(again.ruleset.rules) == 2
    assert manifest.read_bytes() != b"not a key"  # written again


# -- the compile memo kept beside an entry (a start restored from the cache reloads incrementally) ----------------


def _memos(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + rules_cache.MEMO))


def _values(result: LoadResult) -> dict[str, object]:
    """What a snapshot of ``result`` holds, as values (a reused rule's strings come from the memo read
    back, so equal values may pickle to other bytes)."""
    data = snapshot(result)
    assert data is not None
    payload: dict[str, object] = pickle.loads(data[len(MAGIC):])
    payload["route"] = pickle.loads(payload["route"])  # type: ignore[arg-type]
    return payload


@pytest.mark.parametrize("manifest", [False, True], ids=["texts read", "manifest"])
def test_a_start_from_the_cache_reuses_the_memo_of_the_compile_that_wrote_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest: bool) -> None:
    """The differential test: the first compile after a start restored from the cache parses only the
    changed text, and its result is a full compile's (same snapshot)."""
    if manifest:
        _settled(monkeypatch)
    root, cache = _rules(tmp_path), tmp_path / "cache"
    load_rules([root], cache_dir=cache)  # writes the entry and, without a memo given, one of its own
    [entry], [memo_file] = _entries(cache), _memos(cache)
    assert memo_file.name == entry.name.removesuffix(rules_cache.SUFFIX) + rules_cache.MEMO
    assert stat.S_IMODE(memo_file.stat().st_mode) == 0o600

    memo = CompileMemo()  # a new process
    restored = load_rules([root], cache_dir=cache, memo=memo)
    assert restored.restored and memo.seed is not None and not memo.units  # read on the next compile only
    write(root / "b.yml", rule("B", "00000000-0000-4000-8000-00000000000b", image="changed.exe"))
    again = load_rules([root], cache_dir=cache, memo=memo)
    assert not again.restored
    assert memo.last == {"texts": 3, "parsed": 1, "reused": 2}
    full = load_rules([root])
    assert _values(again) == _values(full) and again.errors == full.errors


@pytest.mark.parametrize("damage", ["missing", "garbage", "not a memo", "group-writable"])
def test_a_missing_damaged_or_foreign_memo_leaves_a_full_compile(tmp_path: Path, damage: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    root, cache = _rules(tmp_path), tmp_path / "cache"
    load_rules([root], cache_dir=cache)
    [memo_file] = _memos(cache)
    if damage == "missing":
        memo_file.unlink()
    elif damage == "garbage":
        memo_file.write_bytes(MEMO_MAGIC + os.urandom(4096))
    elif damage == "not a memo":
        memo_file.write_bytes(_entries(cache)[0].read_bytes())
    else:
        memo_file.chmod(0o660)
    memo = CompileMemo()
    load_rules([root], cache_dir=cache, memo=memo)
    write(root / "b.yml", rule("B", "00000000-0000-4000-8000-00000000000b", image="changed.exe"))
    with caplog.at_level(logging.WARNING, logger="service.rules_cache"):
        again = load_rules([root], cache_dir=cache, memo=memo)
    assert memo.last == {"texts": 3, "parsed": 3, "reused": 0}
    assert _values(again) == _values(load_rules([root]))
    assert (damage == "missing") != any("ignored" in r.getMessage() for r in caplog.records)
    assert len(_memos(cache)) == 1 + (damage != "missing")  # the new entry's memo beside the old one's


def test_a_memo_goes_with_its_pruned_entry_and_an_empty_memo_leaves_none(tmp_path: Path) -> None:
    root, cache = _rules(tmp_path), tmp_path / "cache"
    for number in range(rules_cache.KEEP + 2):
        write(root / "a.yml", rule(f"A{number}", "00000000-0000-4000-8000-00000000000a"))
        load_rules([root], cache_dir=cache)
        for entry in [*_entries(cache), *_memos(cache)]:
            os.utime(entry, (entry.stat().st_mtime - 1, entry.stat().st_mtime - 1))
    assert [m.name.removesuffix(rules_cache.MEMO) for m in _memos(cache)] == [
        e.name.removesuffix(rules_cache.SUFFIX) for e in _entries(cache)]
    result = load_rules([root])
    memo = CompileMemo()
    memo.context = None
    assert rules_cache.store(tmp_path / "other", "k" * 64, result, memo)  # an empty memo: nothing to keep
    assert not _memos(tmp_path / "other")
