"""A rejected reload says what is wrong, rule by rule; the error gauge stays right; a duplicate
rule id is blamed on the file that brought it in (``service.reload``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import Gauge

from service import metrics
from service.config import RulesSettings, Settings
from service.detection import Detector, compile_detection
from service.reload import LOGGED_ERRORS, Reloader, log_rule_errors
from tests.support.rules import BROKEN_RULE, CURL_RULE


def rule_id(text: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("id:"))


def reloader_for(rules_dir: Path) -> Reloader:
    settings = Settings(rules=RulesSettings(paths=[rules_dir], skip_invalid=False))
    detector = Detector(compile_detection([rules_dir], [], skip_invalid=False, generation=1).detection)
    return Reloader(detector, settings.rules, settings.correlation, settings.anomaly)


def gauge(value: Gauge) -> float:
    return value._value.get()


async def test_rejected_reload_logs_each_error_and_keeps_the_gauge(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "curl.yml").write_text(CURL_RULE)
    reloader = reloader_for(tmp_path)
    (tmp_path / "broken.yml").write_text(BROKEN_RULE)
    caplog.set_level(logging.WARNING, logger="service.reload")
    result = await reloader.reload("watch")
    assert result.result == "rejected"
    assert gauge(metrics.RULE_ERRORS) == len(result.errors) >= 1
    lines = [r for r in caplog.records if r.getMessage() == "rule error"]
    assert [r.__dict__["source"] for r in lines] == [str(tmp_path / "broken.yml")]
    assert lines[0].__dict__["reason"] and lines[0].__dict__["trigger"] == "watch"


async def test_a_duplicate_id_names_the_new_file_and_the_existing_one(tmp_path: Path) -> None:
    (tmp_path / "zz_existing.yml").write_text(CURL_RULE)
    reloader = reloader_for(tmp_path)
    (tmp_path / "aa_new.yml").write_text(CURL_RULE.replace("title: ", "title: Copy of ", 1))  # sorts first
    result = await reloader.reload("api")
    assert result.result == "rejected"
    [error] = result.errors
    assert error["source"] == str(tmp_path / "aa_new.yml")
    assert error["other_source"] == str(tmp_path / "zz_existing.yml")
    assert error["rule_id"] == rule_id(CURL_RULE)
    assert f"already defined in {tmp_path / 'zz_existing.yml'}" in error["reason"]


async def test_a_duplicate_sorted_after_the_existing_file_is_named_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "aa_existing.yml").write_text(CURL_RULE)
    reloader = reloader_for(tmp_path)
    (tmp_path / "zz_new.yml").write_text(CURL_RULE)
    [error] = (await reloader.reload("api")).errors
    assert error["source"] == str(tmp_path / "zz_new.yml")
    assert error["other_source"] == str(tmp_path / "aa_existing.yml")


def test_compiling_two_new_files_names_both() -> None:
    from detectors.sigma import RuleText, compile_ruleset

    result = compile_ruleset([RuleText("a.yml", CURL_RULE), RuleText("b.yml", CURL_RULE)])
    [error] = result.errors
    assert (error.source, error.other_source) == ("b.yml", "a.yml")
    assert "also defined in a.yml" in error.reason


def test_error_lines_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    from detectors.sigma import RuleError

    caplog.set_level(logging.WARNING, logger="service.reload")
    log_rule_errors([RuleError(f"r{i}.yml", None, None, "bad") for i in range(LOGGED_ERRORS + 7)], "api")
    assert sum(r.getMessage() == "rule error" for r in caplog.records) == LOGGED_ERRORS
    [more] = [r for r in caplog.records if r.getMessage() == "more rule errors not logged"]
    assert more.__dict__["more"] == 7
