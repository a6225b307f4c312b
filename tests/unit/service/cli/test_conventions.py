"""The CLI's shared conventions: exit codes in ``--help``, ``--format`` everywhere, ``config check|schema``,
and the default of ``alerting.alert_base_url``."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path

import orjson
import pytest

from service.cli import build_parser, main
from service.cli.output import column, flatten, table_lines
from service.cli.run_cmd import apply_flags
from service.config import Settings, load_settings
from tests.unit.service.cli.test_eval import BAD_RULE, LINUX_RULE, WIN_RULE


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    root = tmp_path / "pack"
    root.mkdir()
    (root / "win.yml").write_text(WIN_RULE, encoding="utf-8")
    (root / "linux.yml").write_text(LINUX_RULE, encoding="utf-8")
    return root


def test_help_lists_the_exit_codes() -> None:
    text = build_parser().format_help()
    assert "exit codes:" in text
    for line in ("  0  done", "  1  problems found", "  2  usage", "  3  unavailable"):
        assert line in text


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2


def test_rules_formats_and_the_deprecated_json_flag(rules_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "list", "--json", str(rules_dir)]) == 0
    out, err = capsys.readouterr()
    assert "--json is deprecated; use --format json" in err
    legacy = out
    assert main(["rules", "list", "--format", "json", str(rules_dir)]) == 0
    assert capsys.readouterr().out == legacy
    assert main(["rules", "list", "--format", "csv", str(rules_dir)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {(r["ID"][:8], r["LOGSOURCE"]) for r in rows} == {("aaaaaaaa", "windows/process_creation/*"),
                                                              ("bbbbbbbb", "linux/process_creation/*")}
    (rules_dir / "bad.yml").write_text(BAD_RULE, encoding="utf-8")
    assert main(["rules", "check", "--format", "csv", str(rules_dir)]) == 1
    out, err = capsys.readouterr()
    problems = list(csv.DictReader(io.StringIO(out)))
    assert [p["RULE_ID"] for p in problems] == ["cccccccc-0000-0000-0000-000000000003"]
    assert "2 rules, 0 correlations, 0 filters, 1 errors" in err  # stdout stays CSV


def test_config_check_exit_codes_match_rules_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("api: {portt: 1}\n")
    assert main(["config", "check", str(bad)]) == 1  # a failed check, like rules check
    assert "api.portt: unknown key" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path / "missing.yml")]) == 1
    assert main(["rules", "check", str(tmp_path / "missing")]) == 1


def test_config_check_show_keeps_stdout_pure_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yml"
    config.write_text(f"api: {{port: 9001, tokens: [{{name: ops, role: admin, token: secret-token-0123456789}}]}}\n"
                      f"rules: {{paths: ['{tmp_path}']}}\n")
    assert main(["config", "check", "--show", str(config)]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)  # nothing but the document on stdout
    assert doc["api"]["port"] == 9001 and doc["api"]["tokens"][0]["token"] == "**********"
    assert "valid (inputs:" in err and "secret-token" not in out + err
    assert main(["config", "check", "--show", "--format", "table", str(config)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["KEY", "VALUE"] and any(r.split() == ["api.port", "9001"] for r in rows)
    assert main(["config", "check", str(config)]) == 0  # without --show the status line is the output
    assert "valid (inputs:" in capsys.readouterr().out


def test_config_schema_is_the_settings_json_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import jsonschema

    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "Settings" and "api" in schema["properties"]
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = {"log_level": "INFO", "api": {"port": 9000}, "alerting": {"alert_base_url": "https://x.example"}}
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors({"api": {"portt": 1}}))  # unknown keys are refused, as by the loader


def test_alert_base_url_follows_the_api(tmp_path: Path) -> None:
    assert Settings().alerting.alert_base_url == "http://127.0.0.1:8080"
    assert Settings(api={"host": "0.0.0.0", "port": 9100}).alerting.alert_base_url == "http://localhost:9100"  # type: ignore[arg-type]
    assert Settings(api={"host": "::1", "port": 1}).alerting.alert_base_url == "http://[::1]:1"  # type: ignore[arg-type]
    explicit = Settings(alerting={"alert_base_url": "https://siem.example/"})  # type: ignore[arg-type]
    assert explicit.alerting.alert_base_url == "https://siem.example"
    config = tmp_path / "c.yml"
    config.write_text("api: {port: 9200}\n")
    assert load_settings(config).alerting.alert_base_url == "http://127.0.0.1:9200"
    flags = argparse.Namespace(host="10.0.0.5", port=9300, no_stdin=False, rules=None, data_dir=None)
    assert apply_flags(load_settings(config), flags).alerting.alert_base_url == "http://10.0.0.5:9300"
    kept = Settings(alerting={"alert_base_url": "https://siem.example"})  # type: ignore[arg-type]
    assert apply_flags(kept, flags).alerting.alert_base_url == "https://siem.example"


def test_table_and_flatten_helpers() -> None:
    rows = table_lines([{"a": "x" * 100, "b": {"c": [1, 2]}}], [column("A", "a", 10), column("C", "b.c", 10)])
    assert rows[0].split() == ["A", "C"] and rows[1].startswith("x" * 9 + "…") and rows[1].endswith("[1,2]")
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == [
        {"key": "a.b", "value": 1}, {"key": "a.c", "value": {}}, {"key": "d", "value": [1]}]
    assert orjson.loads(orjson.dumps(flatten({}))) == []


def test_each_command_is_registered_by_the_module_named_for_it() -> None:
    from service.cli import COMMAND_MODULES, COMMANDS

    full = build_parser()
    [action] = [a for a in full._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(COMMANDS) == set(action.choices)
    assert set(COMMANDS.values()) == set(COMMAND_MODULES)
    for command in COMMANDS:
        one = build_parser(command)
        [sub] = [a for a in one._actions if isinstance(a, argparse._SubParsersAction)]
        assert command in sub.choices


def test_eval_imports_only_what_it_needs(tmp_path: Path, rules_dir: Path) -> None:
    """``pipesentry eval`` (a cold start) never imports the API, Kafka, the HTTP client or the alert store."""
    import subprocess
    import sys

    events = tmp_path / "events.ndjson"
    events.write_text('{"Image": "C:\\\\x\\\\evil.exe"}\n', encoding="utf-8")
    heavy = ("fastapi", "starlette", "uvicorn", "aiokafka", "httpx", "elasticsearch", "elastic_transport",
             "sqlite3", "service.alerting.router", "service.api")
    code = ("import sys; from service.cli import main; "
            f"code = main(['eval', '--rules', {str(rules_dir)!r}, {str(events)!r}]); "
            f"print('LOADED', sorted(m for m in {heavy!r} if m in sys.modules), code)")
    root = Path(__file__).resolve().parents[4]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.stdout.strip().splitlines()[-1] == "LOADED [] 0"


def test_the_program_flushes_everything_and_keeps_the_exit_code_when_it_ends_quickly(
        tmp_path: Path, rules_dir: Path) -> None:
    """``python -m service.cli`` (and the console script) end ``eval`` with ``os._exit``: nothing lost."""
    import subprocess
    import sys

    events = tmp_path / "events.ndjson"
    lines = [orjson.dumps({"Image": "C:\\x\\evil.exe", "CommandLine": "ps -enc", "n": n}).decode()
             for n in range(3000)]
    events.write_text("\n".join([*lines, "{bad"]) + "\n", encoding="utf-8")
    root = Path(__file__).resolve().parents[4]
    done = subprocess.run([sys.executable, "-m", "service.cli", "eval", "--rules", str(rules_dir), str(events)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 1  # a bad line
    assert len(done.stdout.splitlines()) == 3000
    assert "3000 events, 3000 matches, 1 bad lines" in done.stderr
