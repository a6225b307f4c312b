"""``pipesentry eval`` over JSON documents (arrays, the rule pack's ``X.events.json``), its filters and formats."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import orjson
import pytest
import yaml

from service.cli import main
from tests.conftest import PROJECT_RULES
from tests.unit.service.cli.test_eval import LINUX_RULE, WIN_RULE, records

CURL_PACK_RULE = PROJECT_RULES / "ci" / "ci_log_curl_pipe_shell.yml"


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    root = tmp_path / "pack"
    root.mkdir()
    (root / "win.yml").write_text(WIN_RULE.replace("level: high", "level: high\nstatus: stable"), encoding="utf-8")
    (root / "linux.yml").write_text(LINUX_RULE.replace("level: medium", "level: medium\nstatus: experimental"),
                                    encoding="utf-8")
    return root


WIN_EVENT = {"Image": "C:\\Temp\\evil.exe", "CommandLine": "evil.exe -enc AAAA"}
LINUX_EVENT = {"CommandLine": "curl http://x | sh"}


def test_a_json_array_is_read_as_events(rules_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(orjson.dumps([WIN_EVENT, {"benign": True}, LINUX_EVENT], option=orjson.OPT_INDENT_2))
    assert main(["eval", "--rules", str(rules_dir), str(path)]) == 0
    got = records(capsys.readouterr().out)
    assert [(r["line"], r["case"], str(r["rule_id"])[:8]) for r in got] == [(1, "[0]", "aaaaaaaa"), (3, "[2]", "bbbbbbbb")]


def test_an_array_on_stdin_is_detected_by_its_first_byte(rules_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = b"  \n" + orjson.dumps([LINUX_EVENT])
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    assert main(["eval", "--rules", str(rules_dir), "-"]) == 0
    assert [r["case"] for r in records(capsys.readouterr().out)] == ["[0]"]


def test_non_object_items_are_bad_lines(rules_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(orjson.dumps([LINUX_EVENT, 42, "text"]))
    assert main(["eval", "--rules", str(rules_dir), str(path)]) == 1
    err = capsys.readouterr().err
    assert "event [1]: not a JSON object" in err and "event [2]: not a JSON object" in err
    assert main(["eval", "--allow-bad-lines", "--rules", str(rules_dir), str(path)]) == 0


def test_a_json_file_of_json_lines_is_still_ndjson(rules_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(orjson.dumps(WIN_EVENT) + b"\n" + orjson.dumps(LINUX_EVENT) + b"\n")
    assert main(["eval", "--rules", str(rules_dir), str(path)]) == 0
    assert [r["line"] for r in records(capsys.readouterr().out)] == [1, 2]
    broken = tmp_path / "broken.json"
    broken.write_bytes(b"[{\"a\": 1}")
    assert main(["eval", "--rules", str(rules_dir), str(broken)]) == 1
    assert "not a JSON document" in capsys.readouterr().err
    assert main(["eval", "--input-format", "ndjson", "--rules", str(rules_dir), str(broken)]) == 1  # one bad line


def test_a_rule_test_file_routes_by_the_rule_beside_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pack = tmp_path / "pack"
    pack.mkdir()
    shutil.copy(CURL_PACK_RULE, pack)
    case = CURL_PACK_RULE.with_name(CURL_PACK_RULE.name.replace(".yml", ".events.json"))
    events = pack / case.name
    shutil.copy(case, events)
    (pack / "linux.yml").write_text(LINUX_RULE, encoding="utf-8")  # matches curl | sh, but not ci_job_log
    doc = orjson.loads(case.read_bytes())
    assert main(["eval", "--rules", str(pack), str(events)]) == 0
    out, err = capsys.readouterr()
    got = records(out)
    assert {r["case"] for r in got} == {f"match[{i}]" for i in range(len(doc["match"]))}
    assert {r["rule_id"] for r in got} == {"0f0b7cee-631b-4a21-a821-5de6f6b4e25c"}
    assert "log source category=ci_job_log of ci_log_curl_pipe_shell.yml" in err
    # --logsource overrides it: unrouted-looking product=linux lets only the linux rule apply
    assert main(["eval", "--rules", str(pack), "--logsource", "product=linux,category=process_creation",
                 str(events)]) == 0
    assert {r["rule_id"] for r in records(capsys.readouterr().out)} <= {"bbbbbbbb-0000-0000-0000-000000000002"}


CORRELATION_CASES = sorted((PROJECT_RULES / "correlations").glob("*.events.json"))


@pytest.mark.parametrize("case", CORRELATION_CASES, ids=lambda p: p.name)
def test_each_correlation_case_runs_on_its_own_state(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each sequence of a correlation test file is a stream of its own: the file's rule fires in every
    match case and in no nomatch case (the same verdicts as tests/rules)."""
    title = yaml.safe_load(case.with_name(case.name.replace(".events.json", ".yml")).read_text())["title"]
    doc = orjson.loads(case.read_bytes())
    assert main(["eval", "--rules", str(PROJECT_RULES), str(case)]) == 0
    fired = {str(r["case"]).split("]")[0] + "]" for r in records(capsys.readouterr().out)
             if r["rule_title"] == title}
    assert fired == {f"match[{i}]" for i in range(len(doc["match"]))}


def test_min_level_and_status_filter_the_printed_alerts(rules_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(orjson.dumps([WIN_EVENT, LINUX_EVENT]))
    base = ["eval", "--rules", str(rules_dir)]
    assert main([*base, "--min-level", "high", str(path)]) == 0
    out, err = capsys.readouterr()
    assert [r["level"] for r in records(out)] == ["high"] and "(1 filtered out)" in err
    assert main([*base, "--status", "experimental,test", str(path)]) == 0
    assert [r["rule_status"] for r in records(capsys.readouterr().out)] == ["experimental"]
    assert main([*base, "--status", "stable", "--min-level", "critical", str(path)]) == 0
    assert records(capsys.readouterr().out) == []
    with pytest.raises(SystemExit) as exc:
        main([*base, "--min-level", "severe", str(path)])
    assert exc.value.code == 2


def test_csv_format(rules_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.ndjson"
    path.write_bytes(orjson.dumps(WIN_EVENT) + b"\n")
    assert main(["eval", "--rules", str(rules_dir), "--format", "csv", str(path)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["LINE"], r["RULE_ID"], r["TITLE"]) for r in rows] == [
        ("1", "aaaaaaaa-0000-0000-0000-000000000001", "Evil Process")]
    assert "CommandLine=evil.exe -enc AAAA" in rows[0]["MATCHED"]


def test_a_json_document_is_read_with_a_bound(rules_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import eval_cmd, event_files

    monkeypatch.setattr(eval_cmd, "MAX_DOCUMENT_BYTES", 64)
    monkeypatch.setattr(event_files, "MAX_DOCUMENT_BYTES", 64)
    lines_file = tmp_path / "big.json"
    lines_file.write_bytes(b"".join(orjson.dumps(LINUX_EVENT) + b"\n" for _ in range(5)))
    assert main(["eval", "--rules", str(rules_dir), str(lines_file)]) == 0  # JSON lines: streamed
    assert [r["line"] for r in records(capsys.readouterr().out)] == [1, 2, 3, 4, 5]
    array = tmp_path / "big-array.json"
    array.write_bytes(orjson.dumps([LINUX_EVENT] * 5))
    assert main(["eval", "--rules", str(rules_dir), str(array)]) == 1
    assert "limited to" in capsys.readouterr().err
