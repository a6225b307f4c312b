"""A hot reload parses and compiles only the rule files that changed since the last compile
(``service.reload`` keeps a :class:`~detectors.sigma.memo.CompileMemo` from the start on), and the
set it swaps in is the one a full compile gives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.sigma import compiler
from detectors.sigma.compiled import rule_parts
from detectors.sigma.memo import CompileMemo
from service.config import RulesSettings, Settings
from service.detection import Detector, compile_detection
from service.reload import Reloader
from tests.support.sigma import rule_yaml

FILES = 6


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The sources of the rule texts parsed (``compiler._parse_text`` calls), in order."""
    seen: list[str] = []
    real = compiler._parse_text

    def counting(text: Any, errors: Any, limits: Any) -> Any:
        seen.append(text.source)
        return real(text, errors, limits)

    monkeypatch.setattr(compiler, "_parse_text", counting)
    yield seen


def write_rule(path: Path, number: int, value: str = "x") -> None:
    path.write_text(rule_yaml({"sel": {"command|contains": f"{value}{number}"}, "condition": "sel"},
                              id=f"00000000-0000-4000-8000-{number:012d}", title=f"rule {number}"))


def reloader_for(rules_dir: Path, cache_dir: Path | None = None) -> Reloader:
    settings = Settings(rules=RulesSettings(paths=[rules_dir], cache_dir=cache_dir))
    memo = CompileMemo()
    detection = compile_detection([rules_dir], [], skip_invalid=True, generation=1, memo=memo,
                                  rules_cache=cache_dir).detection
    assert detection is not None
    return Reloader(Detector(detection), settings.rules, settings.correlation, settings.anomaly, memo=memo)


def full_rules(rules_dir: Path) -> list[Any]:
    detection = compile_detection([rules_dir], [], skip_invalid=True).detection
    assert detection is not None
    return [rule_parts(rule) for rule in detection.ruleset.compiled]


@pytest.mark.parametrize("cached", [False, True], ids=["no cache", "rules cache"])
async def test_a_reload_compiles_only_the_changed_files(tmp_path: Path, parsed: list[str], cached: bool) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for number in range(FILES):
        write_rule(rules_dir / f"r{number}.yml", number)
    reloader = reloader_for(rules_dir, tmp_path / "cache" if cached else None)
    assert len(parsed) == FILES
    parsed.clear()

    write_rule(rules_dir / "r2.yml", 2, "changed")
    result = await reloader.reload("watch")
    assert result.result == "ok" and result.rules["sigma"] == FILES
    assert parsed == [str(rules_dir / "r2.yml")]
    rules = [rule_parts(rule) for rule in reloader._detector.current.ruleset.compiled]
    parsed.clear()
    assert rules == full_rules(rules_dir)
    parsed.clear()

    write_rule(rules_dir / "r10.yml", 10)  # a new file
    (rules_dir / "r4.yml").unlink()
    result = await reloader.reload("sighup")
    assert result.result == "ok" and result.rules["sigma"] == FILES
    assert parsed == [str(rules_dir / "r10.yml")]
    assert reloader.memo.last == {"texts": FILES, "parsed": 1, "reused": FILES - 1}


async def test_the_first_reload_after_a_start_from_the_rules_cache_compiles_only_the_changed_file(
        tmp_path: Path, parsed: list[str]) -> None:
    """A start restored from the cache (a new process: a fresh memo) reads the memo kept beside the entry
    on its first reload, which then parses only what changed and swaps in a full compile's set."""
    rules_dir, cache = tmp_path / "rules", tmp_path / "cache"
    rules_dir.mkdir()
    for number in range(FILES):
        write_rule(rules_dir / f"r{number}.yml", number)
    compile_detection([rules_dir], [], skip_invalid=True, rules_cache=cache)  # an earlier run wrote the entry
    parsed.clear()
    reloader = reloader_for(rules_dir, cache)
    assert parsed == [] and reloader._detector.current.ruleset is not None
    write_rule(rules_dir / "r3.yml", 3, "changed")
    result = await reloader.reload("watch")
    assert result.result == "ok" and result.rules["sigma"] == FILES
    assert parsed == [str(rules_dir / "r3.yml")]
    assert reloader.memo.last == {"texts": FILES, "parsed": 1, "reused": FILES - 1}
    parsed.clear()
    assert [rule_parts(rule) for rule in reloader._detector.current.ruleset.compiled] == full_rules(rules_dir)


async def test_a_rejected_reload_still_remembers_what_it_compiled(tmp_path: Path, parsed: list[str]) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for number in range(FILES):
        write_rule(rules_dir / f"r{number}.yml", number)
    reloader = reloader_for(rules_dir)
    (rules_dir / "r1.yml").write_text("title: [broken\n")
    parsed.clear()
    assert (await reloader.reload("api")).result == "rejected"  # rules.skip_invalid is false
    assert parsed == [str(rules_dir / "r1.yml")]
    write_rule(rules_dir / "r1.yml", 1)
    parsed.clear()
    result = await reloader.reload("api")
    assert result.result == "ok" and result.errors == [] and result.rules["sigma"] == FILES
    assert parsed == [str(rules_dir / "r1.yml")]
