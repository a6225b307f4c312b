"""``pipesentry eval`` and ``pipesentry rules check|list`` end to end through service.cli.main."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from service.cli import main
from tests.support.rules import failed_logins_in_a_minute
from tests.support.sigma import rule_yaml

WIN_RULE = """\
title: Evil Process
id: aaaaaaaa-0000-0000-0000-000000000001
author: Alice
tags: [attack.execution, attack.t1059]
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\\\\evil.exe'
        CommandLine|contains: '-enc'
    condition: selection
level: high
"""

LINUX_RULE = """\
title: Curl To Shell
id: bbbbbbbb-0000-0000-0000-000000000002
author: Bob
logsource:
    product: linux
    category: process_creation
detection:
    selection:
        CommandLine|contains|all: ['curl', '| sh']
    condition: selection
level: medium
"""

BAD_RULE = """\
title: Bad
id: cccccccc-0000-0000-0000-000000000003
logsource:
    product: linux
detection:
    selection:
        a|bogus: 1
    condition: selection
"""

CORRELATION = """\
title: Many Evil
id: dddddddd-0000-0000-0000-000000000004
author: Carol
correlation:
    type: event_count
    rules: [aaaaaaaa-0000-0000-0000-000000000001]
    group-by: [User]
    timespan: 5m
    condition:
        gte: 3
level: critical
"""

FILTER = """\
title: Not Admins
logsource:
    product: windows
    category: process_creation
filter:
    rules: [aaaaaaaa-0000-0000-0000-000000000001]
    selection:
        User|startswith: 'adm_'
    condition: selection
"""

EVENTS = [
    b'{"Image": "C:\\\\Temp\\\\EVIL.exe", "CommandLine": "evil.exe -enc AAAA", "User": "bob"}',
    b"not json at all",
    b"",
    b'{"CommandLine": "curl http://x | sh"}',
    b"[1, 2, 3]",
    b'{"Image": "C:\\\\good.exe"}',
]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    root = tmp_path / "pack"
    root.mkdir()
    (root / "win.yml").write_text(WIN_RULE, encoding="utf-8")
    (root / "linux.yml").write_text(LINUX_RULE, encoding="utf-8")
    return root


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(EVENTS) + b"\n")
    return path


def records(out: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def test_eval_prints_one_json_object_per_match(rules_dir: Path, events_file: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "--allow-bad-lines", "--rules", str(rules_dir), str(events_file)])
    out, err = capsys.readouterr()
    assert code == 0
    got = records(out)
    assert [(r["line"], r["rule_id"]) for r in got] == [
        (1, "aaaaaaaa-0000-0000-0000-000000000001"),
        (4, "bbbbbbbb-0000-0000-0000-000000000002"),
    ]
    first = got[0]
    assert first["rule_title"] == "Evil Process"
    assert first["level"] == "high"
    assert first["rule_author"] == "Alice"
    assert first["rule_ruleset"] == "pack"
    assert first["tags"] == ["attack.execution", "attack.t1059"]
    matched = {m["field"]: m["value"] for m in first["matched"]}  # type: ignore[union-attr]
    assert matched["CommandLine"] == "evil.exe -enc AAAA"
    assert "line 2: invalid JSON" in err
    assert "line 5: not a JSON object" in err
    assert "line 3" not in err  # blank lines are not errors


def test_bad_lines_fail_the_run_unless_allowed(rules_dir: Path, events_file: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--rules", str(rules_dir), str(events_file)]) == 1
    out, err = capsys.readouterr()
    assert len(records(out)) == 2  # the alerts are still printed
    assert "2 bad lines (--allow-bad-lines accepts them)" in err


def test_logsource_limits_rules_to_matching_sources(rules_dir: Path, events_file: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--allow-bad-lines", "--rules", str(rules_dir),
                 "--logsource", "product=linux,category=process_creation",
                 str(events_file)]) == 0
    assert [r["rule_id"] for r in records(capsys.readouterr().out)] == ["bbbbbbbb-0000-0000-0000-000000000002"]
    assert main(["eval", "--allow-bad-lines", "--rules", str(rules_dir), "--logsource", "product=macos",
                 str(events_file)]) == 0
    assert records(capsys.readouterr().out) == []


def test_malformed_logsource_is_a_usage_error(rules_dir: Path, events_file: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--allow-bad-lines", "--rules", str(rules_dir), "--logsource", "os=linux", str(events_file)])
    assert exc.value.code == 2


def test_table_format_is_aligned(rules_dir: Path, events_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--allow-bad-lines", "--rules", str(rules_dir), "--format", "table",
                 str(events_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["LINE", "LEVEL", "RULE_ID", "TITLE", "AUTHOR", "MATCHED"]
    assert len(lines) == 3
    title_col = lines[0].index("TITLE")
    assert lines[1][title_col:].startswith("Evil Process")
    assert lines[2][title_col:].startswith("Curl To Shell")
    assert lines[1].split()[0] == "1" and lines[2].split()[0] == "4"


def test_input_without_any_json_object_fails(rules_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(b"nope\n{\n")
    assert main(["eval", "--rules", str(rules_dir), str(bad)]) == 1
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    assert main(["eval", "--rules", str(rules_dir), str(empty)]) == 0
    assert main(["eval", "--rules", str(rules_dir), str(tmp_path / "missing.ndjson")]) == 2  # usage
    assert "cannot open" in capsys.readouterr().err


def test_no_loadable_rule_fails(tmp_path: Path, events_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--allow-bad-lines", "--rules", str(tmp_path / "typo"), str(events_file)]) == 1
    err = capsys.readouterr().err
    assert "typo: -: no such file or directory" in err and "no rule could be loaded" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    # no rules, no error: nothing matches
    assert main(["eval", "--allow-bad-lines", "--rules", str(empty), str(events_file)]) == 0


def test_rule_load_errors_are_reported_and_valid_rules_still_run(rules_dir: Path, events_file: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (rules_dir / "bad.yml").write_text(BAD_RULE, encoding="utf-8")
    assert main(["eval", "--allow-bad-lines", "--rules", str(rules_dir), str(events_file)]) == 0
    out, err = capsys.readouterr()
    assert len(records(out)) == 2
    assert "bad.yml: cccccccc-0000-0000-0000-000000000003:" in err


def test_rules_check_summary_and_exit_codes(rules_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (rules_dir / "corr.yml").write_text(CORRELATION, encoding="utf-8")
    (rules_dir / "filter.yml").write_text(FILTER, encoding="utf-8")
    assert main(["rules", "check", str(rules_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == ["2 rules, 1 correlations, 1 filters, 0 errors"]
    (rules_dir / "bad.yml").write_text(BAD_RULE, encoding="utf-8")
    assert main(["rules", "check", str(rules_dir)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2 rules, 1 correlations, 1 filters, 1 errors"
    assert lines[1].startswith(f"{rules_dir / 'bad.yml'}: cccccccc-0000-0000-0000-000000000003: ")
    assert main(["rules", "check", "--json", str(rules_dir)]) == 1
    doc = orjson.loads(capsys.readouterr().out)
    assert (doc["rules"], doc["correlations"], doc["filters"], doc["errors"]) == (2, 1, 1, 1)
    assert doc["problems"][0]["rule_id"] == "cccccccc-0000-0000-0000-000000000003"


def test_rules_list(rules_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "list", "--json", str(rules_dir)]) == 0
    rows = records(capsys.readouterr().out)
    assert {r["id"]: (r["level"], r["logsource"], r["ruleset"]) for r in rows} == {
        "aaaaaaaa-0000-0000-0000-000000000001": ("high", {"product": "windows", "category": "process_creation"}, "pack"),
        "bbbbbbbb-0000-0000-0000-000000000002": ("medium", {"product": "linux", "category": "process_creation"}, "pack"),
    }
    assert main(["rules", "list", str(rules_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "LEVEL", "LOGSOURCE", "STATUS", "RULESET", "TITLE"]
    assert any("windows/process_creation/*" in line and line.endswith("Evil Process") for line in lines)


def test_installed_command_reads_stdin(rules_dir: Path) -> None:
    exe = Path(sys.executable).with_name("pipesentry")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "service.cli"]
    proc = subprocess.run(
        [*command, "eval", "--allow-bad-lines", "--rules", str(rules_dir), "-"],
        input=b"\n".join(EVENTS), capture_output=True, timeout=60, env={**os.environ, "PYTHONUTF8": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert [r["line"] for r in records(proc.stdout.decode())] == [1, 4]
    assert b"line 2: invalid JSON" in proc.stderr


def test_logsource_field_routes_each_event(rules_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "routed.ndjson"
    events = [
        {"CommandLine": "curl http://x | sh", "logsource": {"product": "linux", "category": "process_creation"}},
        {"CommandLine": "curl http://x | sh", "logsource": "product=windows,category=process_creation"},
        {"CommandLine": "curl http://x | sh"},  # no log source: every rule applies
    ]
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    assert main(["eval", "--rules", str(rules_dir), "--logsource-field", "logsource", str(path)]) == 0
    assert [r["line"] for r in records(capsys.readouterr().out)] == [1, 3]


CERTUTIL_RULE = """\
title: Certutil Download
id: eeeeeeee-0000-0000-0000-000000000005
author: Dan
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\\\\certutil.exe'
        CommandLine|contains|all: ['-urlcache', ' -f ']
    condition: selection
level: high
"""


def test_generated_corpus_is_reproducible_and_evaluable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.eventgen import generate

    corpus = generate(600, seed=7, suspicious_share=1.0)
    assert corpus == generate(600, seed=7, suspicious_share=1.0)
    assert corpus != generate(600, seed=8, suspicious_share=1.0)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "certutil.yml").write_text(CERTUTIL_RULE, encoding="utf-8")
    path = tmp_path / "corpus.ndjson"
    path.write_bytes(b"".join(orjson.dumps({**e, "logsource": ls.as_dict()}) + b"\n" for ls, e in corpus))
    expected = [
        n for n, (ls, e) in enumerate(corpus, start=1)
        if ls.category == "process_creation" and ls.product == "windows" and "-urlcache" in e["CommandLine"]
    ]
    assert len(expected) >= 5
    assert main(["eval", "--rules", str(rules), "--logsource-field", "logsource", str(path)]) == 0
    assert [r["line"] for r in records(capsys.readouterr().out)] == expected


CORRELATION_RULES = failed_logins_in_a_minute()


def test_eval_treats_the_input_as_a_stream_for_correlation_rules(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "brute.yml").write_text(CORRELATION_RULES)
    events = [{"ts": 1000 + i * 10, "user": "bob" if i < 3 else "eve", "outcome": "failure"} for i in range(5)]
    events.append({"ts": 1100, "user": "eve", "outcome": "success"})
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    assert main(["eval", "--rules", str(tmp_path / "rules"), "--time-field", "ts", str(path)]) == 0
    records = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    correlations = [r for r in records if r["rule_kind"] == "correlation"]
    # the service's default correlation.allowed_lateness (5 s) holds the alert until event time
    # passed the third failure by 5 s: the fourth line raises it, as it would in pipesentry run
    assert [(r["line"], r["details"]["group"]) for r in correlations] == [(4, {"user": "bob"})]
    # generate defaults to false: the base rule's own matches are not printed
    assert [r for r in records if r["rule_kind"] == "sigma"] == []
    config = tmp_path / "pipesentry.yml"
    config.write_text(f"rules: {{paths: ['{tmp_path / 'rules'}']}}\ncorrelation: {{allowed_lateness: 0}}\n"
                      "events: {timestamp_fields: [ts]}\n")
    assert main(["eval", "--config", str(config), str(path)]) == 0
    again = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["line"], r["alert_id"]) for r in again] == [(3, correlations[0]["alert_id"])]


def test_field_names_follow_the_flag_and_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--field-names`` (default: ``rules.field_names``): ``sensitive`` matches keys spelled as the rule's only."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "user.yml").write_text(
        rule_yaml({"sel": {"User": "root"}, "condition": "sel"}, title="root user"))
    path = tmp_path / "events.ndjson"
    path.write_bytes(b'{"User": "root"}\n{"user": "root"}\n')

    def lines(*args: str) -> list[int]:
        assert main(["eval", *args, str(path)]) == 0
        return [orjson.loads(line)["line"] for line in capsys.readouterr().out.splitlines()]

    rules = ["--rules", str(tmp_path / "rules")]
    assert lines(*rules) == [1, 2]
    assert lines(*rules, "--field-names", "sensitive") == [1]
    config = tmp_path / "pipesentry.yml"
    config.write_text(f"rules: {{paths: ['{tmp_path / 'rules'}'], field_names: sensitive}}\n")
    assert lines("--config", str(config)) == [1]
    assert lines("--config", str(config), "--field-names", "insensitive") == [1, 2]


def test_version_names_the_release_and_the_native_screen(capsys) -> None:
    from service.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("pipesentry ") and "native screen:" in out
