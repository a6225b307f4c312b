"""Broken and hostile rule texts: one error per bad rule, the others load, bounded work, no crash."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from detectors.sigma import RuleText, compile_ruleset
from detectors.yamlsafe import YamlError, YamlLimits, load_documents, load_one
from service.cli import main as cli_main
from tests.support.api import ADMIN, auth, build_api

GOOD = """title: Good
id: 6f1d1a4e-0000-4000-8000-00000000000a
logsource: {product: x}
detection:
  sel: {a: b}
  condition: sel
"""
BAD_DATE = GOOD.replace("000a", "000b").replace("title: Good", "title: Bad date") + "date: 2023-02-30\n"
BAD_LOGSOURCE = (GOOD.replace("000a", "000c").replace("title: Good", "title: Bad logsource")
                 .replace("logsource: {product: x}", "logsource: {service: []}"))


def bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" rule: ``width ** levels`` values in a few hundred bytes."""
    lines = ["title: Bomb", "logsource: {product: x}", "x0: &a0 [" + ",".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    lines += ["detection:", f"  sel: {{f|contains: *a{levels - 1}}}", "  condition: sel"]
    return "\n".join(lines) + "\n"


def texts(*bodies: str) -> list[RuleText]:
    return [RuleText(source=f"r{i}.yml", text=body, ruleset="t") for i, body in enumerate(bodies)]


@pytest.mark.parametrize("bad, reason", [(BAD_DATE, "line 7, column 7: invalid timestamp: day is out of range"),
                                         (BAD_LOGSOURCE, "logsource.service must be a string")])
def test_one_malformed_rule_is_one_error_and_the_others_load(bad: str, reason: str) -> None:
    result = compile_ruleset(texts(GOOD, bad))
    assert [r.title for r in result.ruleset.rules] == ["Good"]
    assert len(result.errors) == 1
    assert result.errors[0].source == "r1.yml" and reason in result.errors[0].reason


def test_a_bad_document_does_not_hide_the_next_one_in_the_same_file() -> None:
    result = compile_ruleset(texts(BAD_DATE + "---\n" + GOOD))
    assert [r.title for r in result.ruleset.rules] == ["Good"]
    assert [e.reason.split(":")[1].strip() for e in result.errors] == ["document 1, line 7, column 7"]


def test_a_filter_with_a_bad_logsource_is_left_out_not_applied_to_every_rule() -> None:
    flt = ("title: F\nlogsource: {service: []}\nfilter:\n  rules: any\n  sel: {a: c}\n  condition: sel\n")
    result = compile_ruleset(texts(GOOD, flt))
    assert [r.title for r in result.ruleset.rules] == ["Good"]
    assert len(result.errors) == 1 and "logsource.service" in result.errors[0].reason


def test_alias_bomb_is_refused_by_its_expanded_size() -> None:
    result = compile_ruleset(texts(bomb(), GOOD))
    assert [r.title for r in result.ruleset.rules] == ["Good"]
    assert len(result.errors) == 1 and "nodes (aliases expanded)" in result.errors[0].reason


@pytest.mark.parametrize("text, problem", [
    ("a: &a [*a]\n", "recursive alias"),
    ("a: *nowhere\n", "undefined alias"),
    ("[" * 100 + "]" * 100, "nested deeper than 64"),
    ("a: &a [[[[[[[[[[x]]]]]]]]]]\n" + "".join(f"b{i}: &b{i} [[[[[[[[[[*{'a' if i == 0 else f'b{i - 1}'}]]]]]]]]]]\n"
                                              for i in range(8)), r"nested deeper than 64 levels \(aliases"),
    ("x" * 20_000, "larger than 10000 bytes"),
    ("---\n{}\n" * 20, "more than 10 documents"),
])
def test_safe_yaml_limits(text: str, problem: str) -> None:
    with pytest.raises(YamlError, match=problem):
        load_documents(text, limits=YamlLimits(max_bytes=10_000, max_documents=10))


def test_deep_nesting_is_an_error_not_a_crash_of_the_process() -> None:
    """libyaml's composer recurses in C: 100k ``[`` used to kill the process (SIGSEGV)."""
    code = ("from detectors.sigma import RuleText, compile_ruleset\n"
            "r = compile_ruleset([RuleText('deep.yml', '[' * 100000 + ']' * 100000)])\n"
            "print(r.errors[0].reason)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nested deeper than" in done.stdout


def test_yaml_errors_name_the_place_never_the_line() -> None:
    secret = "hunter2-secret-value"
    for text in (f"a: b\n  password: {secret}: x\n", f"token: '{secret}\n", f"n: !!int {secret}\n",
                 f"n: !!int 0b{secret}\n", f"n: !!float {secret}\n"):
        with pytest.raises(YamlError) as caught:
            load_one(text)
        message = str(caught.value)
        assert secret not in message and "line " in message, message


def test_bad_pipeline_bomb_is_an_error() -> None:
    pipeline = "name: p\nx: &a [a,a,a,a,a,a,a,a,a,a]\n" + "".join(
        f"x{i}: &a{i} [" + ",".join([f"*{'a' if i == 0 else f'a{i - 1}'}"] * 10) + "]\n" for i in range(6))
    result = compile_ruleset(texts(GOOD), pipelines=[pipeline])
    assert [r.title for r in result.ruleset.rules] == ["Good"]
    assert len(result.errors) == 1 and "nodes (aliases expanded)" in result.errors[0].reason


def test_rules_check_reports_each_bad_rule_and_exits_non_zero(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    for name, body in (("good.yml", GOOD), ("date.yml", BAD_DATE), ("ls.yml", BAD_LOGSOURCE),
                       ("bomb.yml", bomb())):
        (tmp_path / name).write_text(body)
    assert cli_main(["rules", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("1 rules, 0 correlations, 0 filters, 3 errors")
    for name in ("date.yml", "ls.yml", "bomb.yml"):
        assert str(tmp_path / name) in out


async def test_rules_test_answers_422_with_the_reason(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    async with client:
        for rule, reason in ((BAD_DATE, "day is out of range"), (BAD_LOGSOURCE, "logsource.service"),
                             (bomb(), "nodes (aliases expanded)")):
            resp = await client.post("/api/v1/rules/test", headers=auth(ADMIN), json={"rule": rule, "events": []})
            assert resp.status_code == 422, resp.text
            assert reason in resp.json()["errors"][0]["reason"]


async def test_rules_test_bounds_its_body_and_concurrency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.api import routes

    release = threading.Event()
    entered = threading.Semaphore(0)

    def blocked(*args: object) -> tuple[int, dict[str, object]]:
        entered.release()
        release.wait(60)
        return 200, {"errors": []}

    monkeypatch.setattr(routes, "run_rule_test", blocked)
    client, _, _ = build_api(tmp_path, api={"rules_test_concurrency": 1, "rules_test_max_body_bytes": 4096})
    async with client:
        big = await client.post("/api/v1/rules/test", headers=auth(ADMIN), json={"rule": "x" * 5000, "events": []})
        assert big.status_code == 413
        import asyncio

        first = asyncio.ensure_future(client.post("/api/v1/rules/test", headers=auth(ADMIN),
                                                  json={"rule": GOOD, "events": []}))
        await asyncio.to_thread(entered.acquire)
        second = await client.post("/api/v1/rules/test", headers=auth(ADMIN), json={"rule": GOOD, "events": []})
        assert second.status_code == 429
        release.set()
        assert (await first).status_code == 200


async def test_rules_test_gives_up_waiting_but_keeps_the_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.api import routes

    release = threading.Event()

    def slow(*args: object) -> tuple[int, dict[str, object]]:
        release.wait(60)
        return 200, {"errors": []}

    monkeypatch.setattr(routes, "run_rule_test", slow)
    client, _, _ = build_api(tmp_path, api={"rules_test_concurrency": 1, "rules_test_timeout_s": 0.05})
    async with client:
        slow_resp = await client.post("/api/v1/rules/test", headers=auth(ADMIN), json={"rule": GOOD, "events": []})
        assert slow_resp.status_code == 503
        busy = await client.post("/api/v1/rules/test", headers=auth(ADMIN), json={"rule": GOOD, "events": []})
        assert busy.status_code == 429
        release.set()


def test_a_check_document_that_does_not_load_is_one_error_and_the_next_document_loads() -> None:
    from detectors.anomaly import parse_checks

    text = ("id: a\ntype: silence\ntimeout: 5m\nsince: 2023-02-30\n---\n"
            "checks: 3\n---\n"
            "id: b\ntype: silence\ntimeout: 5m\n")
    specs, errors = parse_checks(text, source="c.yml")
    assert [s.id for s in specs] == ["b"]
    assert [e.reason.split(":")[0] for e in errors] == ["invalid YAML", "document 2"]
    assert "day is out of range" in errors[0].reason


def test_a_check_file_alias_bomb_is_one_error() -> None:
    from detectors.anomaly import parse_checks

    specs, errors = parse_checks(bomb().replace("title: Bomb", "id: x\ntype: silence"), source="c.yml")
    assert specs == [] and len(errors) == 1 and "nodes (aliases expanded)" in errors[0].reason


def test_a_correlation_pysigma_cannot_hold_is_one_error_and_its_base_rule_loads() -> None:
    from detectors.correlation.compile import compile_correlations

    corr = ("title: corr\nid: 22222222-2222-2222-2222-222222222222\ncorrelation:\n  type: event_count\n"
            "  rules: [6f1d1a4e-0000-4000-8000-00000000000a]\n  group-by: [user]\n  timespan: 5m\n"
            "  condition: {gte: [1]}\n")
    result = compile_ruleset(texts(GOOD + "---\n" + corr))
    _engine, errors = compile_correlations(result.ruleset)
    assert [r.title for r in result.ruleset.rules] == ["Good"] and errors == []
    assert len(result.errors) == 1 and "invalid rule document 2: TypeError" in result.errors[0].reason


async def test_rules_list_parameters_are_bounded(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    async with client:
        for params in ({"offset": str(2**63)}, {"limit": "0"}, {"q": "x" * 5000}, {"kind": "k" * 100}):
            resp = await client.get("/api/v1/rules", headers=auth(ADMIN), params=params)
            assert resp.status_code == 422, (params, resp.text)
        assert (await client.get("/api/v1/rules", headers=auth(ADMIN), params={"offset": "10"})).status_code == 200


@pytest.mark.parametrize("text, problem", [("title: x\nb: \ud800\n", "line 2, column 4: not valid Unicode"),
                                           ("a: b\x07", "unacceptable character #x0007")])
def test_text_that_is_not_yaml_characters_is_one_error(text: str, problem: str) -> None:
    result = compile_ruleset(texts(text, GOOD))
    assert [r.title for r in result.ruleset.rules] == ["Good"]
    assert len(result.errors) == 1 and problem in result.errors[0].reason


async def test_rules_test_with_a_lone_surrogate_is_422(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    async with client:
        body = b'{"rule": "title: x\\nb: \\ud800\\n", "events": []}'
        resp = await client.post("/api/v1/rules/test", headers={**auth(ADMIN), "content-type": "application/json"},
                                 content=body)
        assert resp.status_code == 422


def test_an_overlong_condition_is_refused_before_parsing() -> None:
    """One YAML node, but pySigma's parser needs seconds per few thousand operators."""
    long_rule = GOOD.replace("000a", "000d").replace("condition: sel", "condition: '" + " or ".join(["sel"] * 5000) + "'")
    result = compile_ruleset(texts(long_rule, GOOD))
    assert [r.title for r in result.ruleset.rules] == ["Good"]
    assert len(result.errors) == 1 and "condition is longer than 10000 characters" in result.errors[0].reason
    assert result.errors[0].rule_id == "6f1d1a4e-0000-4000-8000-00000000000d"


async def test_rules_test_reasons_do_not_show_server_paths(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    async with client:
        resp = await client.post("/api/v1/rules/test", headers=auth(ADMIN), json={"rule": "title: x\n", "events": []})
        assert resp.status_code == 422
        assert str(Path.cwd()) not in resp.text and "request" in resp.text
