"""Every correlation example of the Sigma specification, evaluated on hand-built event streams.

Sources (through the ``shared_dir`` fixture, skipped when ../shared is absent):

* every rule in ``tests/schema/correlation/`` of the specification repository;
* every YAML example in ``specification/sigma-correlation-rules-specification.md``
  (fragments without a title get one; the alias example's ``id: —`` placeholder
  gets a UUID, since pySigma requires UUID ids).

Expected alerts are derived from the specification text; window edges follow
docs/correlation.md (inclusive ``[t - timespan, t]`` sliding windows for
``gt``/``gte``; windows decided at their end for ``lt``/``lte``/``eq``/``neq``).
Base rules are written here with the ids and names the examples reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from detectors.correlation import CorrelatingEvaluator, compile_correlations
from detectors.model import Match
from detectors.sigma import RuleText, compile_ruleset

pytestmark = pytest.mark.conformance

FAILED_ID = "5638f7c0-ac70-491d-8465-2a65075e0d86"


def base(name: str, selection: Mapping[str, Any], ident: str | None = None) -> str:
    doc: dict[str, Any] = {"title": f"base {name}", "name": name, "logsource": {"product": "test"},
                           "detection": {"sel": dict(selection), "condition": "sel"}}
    if ident:
        doc["id"] = ident
    return "---\n" + yaml.safe_dump(doc)


FAILED_BASE = base("failed_logon", {"EventID": 4625}, FAILED_ID)
RECON_BASE = "".join(base(f"recon_cmd_{x}", {"cmd": x}) for x in "abc")


def evaluator(correlation: str, *bases: str, lateness: float = 0.0) -> CorrelatingEvaluator:
    result = compile_ruleset([RuleText("base.yml", "".join(bases), "test"),
                              RuleText("correlation.yml", correlation, "spec")])
    assert result.errors == [], result.errors
    engine, errors = compile_correlations(result.ruleset, allowed_lateness_s=lateness)
    assert errors == [], errors
    return CorrelatingEvaluator(result.ruleset, engine)


def run(ev: CorrelatingEvaluator, events: Iterable[tuple[float, Mapping[str, Any]]],
        end: float | None = None) -> list[Match]:
    out = [m for ts, e in events for m in ev.evaluate(e, None, ts) if m.rule.kind == "correlation"]
    out += ev.flush() if end is None else ev.advance(end)
    return out


def values(alerts: list[Match]) -> list[Any]:
    return [m.details["value"] for m in alerts if m.details]


# -- scenarios, one per example: (correlation text) -> None, asserting the expected alerts ---------------

def event_count_computer(text: str) -> None:
    """gte 100 failed logins to one ComputerName within 1h."""
    def stream(last: float, host: str = "srv1") -> list[tuple[float, dict[str, Any]]]:
        return [(i * 36.0, {"EventID": 4625, "ComputerName": host}) for i in range(99)] + [
            (last, {"EventID": 4625, "ComputerName": host})]
    # 100th event exactly 1h after the first: inside the inclusive window.
    alerts = run(evaluator(text, FAILED_BASE), stream(3600.0))
    assert values(alerts) == [100] and alerts[0].fields == (("ComputerName", "srv1"),)
    assert (alerts[0].details or {})["window_start"] == 0.0
    # Half a second later the first one has left the window: 99 in the last hour.
    assert run(evaluator(text, FAILED_BASE), stream(3600.5)) == []
    # One event short.
    assert run(evaluator(text, FAILED_BASE), stream(3600.0)[:-1]) == []
    # Other hosts never complete the count.
    mixed = [(t, {**e, "ComputerName": f"h{i % 2}"}) for i, (t, e) in enumerate(stream(3600.0))]
    assert run(evaluator(text, FAILED_BASE), mixed) == []
    # Out of order within the allowed lateness: same alert.
    shuffled = stream(3600.0)
    shuffled[10], shuffled[11] = shuffled[11], shuffled[10]
    assert values(run(evaluator(text, FAILED_BASE, lateness=60), shuffled)) == [100]


def event_count_ecs(text: str) -> None:
    """Same as event_count, grouped by the nested ECS field dns.question.name."""
    events = [(float(i), {"EventID": 4625, "dns": {"question": {"name": "evil.example"}}}) for i in range(100)]
    alerts = run(evaluator(text, FAILED_BASE), events)
    assert values(alerts) == [100] and alerts[0].fields == (("dns.question.name", "evil.example"),)
    assert run(evaluator(text, FAILED_BASE), events[:99]) == []


def value_count_users(text: str) -> None:
    """gte 100 distinct User per (ComputerName, WorkstationName) within 1d."""
    def ev(user: str, ws: str = "ws1") -> dict[str, Any]:
        return {"EventID": 4625, "ComputerName": "dc1", "WorkstationName": ws, "User": user}
    hundred = [(i * 800.0, ev(f"user{i}")) for i in range(100)]
    alerts = run(evaluator(text, FAILED_BASE), hundred)
    assert values(alerts) == [100]
    assert alerts[0].fields == (("ComputerName", "dc1"), ("WorkstationName", "ws1"))
    repeats = [(i * 800.0, ev(f"user{i % 99}")) for i in range(150)]
    assert run(evaluator(text, FAILED_BASE), repeats) == []  # 150 events, 99 distinct users
    split = [(i * 800.0, ev(f"user{i}", ws=f"ws{i % 2}")) for i in range(150)]
    assert run(evaluator(text, FAILED_BASE), split) == []
    assert run(evaluator(text, FAILED_BASE), [(i * 873.0, ev(f"user{i}")) for i in range(100)]) == []  # > 1d


def temporal_recon(text: str) -> None:
    """recon_cmd_a/b/c in any order within 5m, same ComputerName and User."""
    def ev(cmd: str, user: str = "bob") -> dict[str, Any]:
        return {"cmd": cmd, "ComputerName": "pc", "User": user}
    assert len(run(evaluator(text, RECON_BASE), [(0, ev("c")), (100, ev("a")), (300, ev("b"))])) == 1
    assert run(evaluator(text, RECON_BASE), [(0, ev("c")), (100, ev("a")), (300.5, ev("b"))]) == []
    assert run(evaluator(text, RECON_BASE), [(0, ev("c")), (1, ev("a")), (2, ev("b", "eve"))]) == []


def temporal_ordered_recon(text: str) -> None:
    """recon_cmd_a, then b, then c, within 5m."""
    def ev(cmd: str) -> dict[str, Any]:
        return {"cmd": cmd, "ComputerName": "pc", "User": "bob"}
    assert len(run(evaluator(text, RECON_BASE), [(0, ev("a")), (100, ev("b")), (300, ev("c"))])) == 1
    assert run(evaluator(text, RECON_BASE), [(0, ev("c")), (100, ev("b")), (200, ev("a"))]) == []
    assert run(evaluator(text, RECON_BASE), [(0, ev("a")), (100, ev("c")), (200, ev("b"))]) == []


def temporal_ordered_logins(text: str) -> None:
    """many_failed_logins followed by successful_login of the same User within 1h."""
    bases = base("many_failed_logins", {"EventID": 4625}) + base("successful_login", {"EventID": 4624})
    ev = evaluator(text, bases)
    alerts = run(ev, [(0, {"EventID": 4624, "User": "u"}), (10, {"EventID": 4625, "User": "u"}),
                      (3610, {"EventID": 4624, "User": "u"}), (3620, {"EventID": 4624, "User": "u"})])
    assert values(alerts) == [2] and (alerts[0].details or {})["window_start"] == 10.0


def value_sum_exfil(text: str) -> None:
    """sum(bytes_sent) gt 1000000 per (SourceIP, User) within 1h."""
    bases = base("website_access", {"action": "http"})
    def ev(sent: Any, ip: str = "10.0.0.1") -> dict[str, Any]:
        return {"action": "http", "SourceIP": ip, "User": "u", "bytes_sent": sent}
    assert run(evaluator(text, bases), [(0, ev(500_000)), (1800, ev("500000")), (3600, ev(0))]) == []
    alerts = run(evaluator(text, bases), [(0, ev(500_000)), (1800, ev(500_000)), (3600, ev(1))])
    assert values(alerts) == [1_000_001]
    assert run(evaluator(text, bases), [(0, ev(500_000)), (1800, ev(500_000)), (3600.5, ev(1))]) == []


def value_avg_traffic(text: str) -> None:
    """avg(BytesOut) gt 500 per (SourceIP, User) within 24h."""
    bases = base("rule_a_id", {"action": "net"})
    def ev(out: float) -> dict[str, Any]:
        return {"action": "net", "SourceIP": "10.0.0.2", "User": "u", "BytesOut": out}
    assert run(evaluator(text, bases), [(0, ev(400)), (60, ev(600))]) == []  # avg exactly 500: not gt
    assert values(run(evaluator(text, bases), [(0, ev(400)), (60, ev(602))])) == [501]


def value_percentile_rare_image(text: str) -> None:
    """A process image making up at most 1 % of a computer's processes in 24h (frequency mode)."""
    bases = base("process_creation", {"kind": "proc"})
    field = "Image" if "field: Image" in text else "image"
    def ev(image: str) -> dict[str, Any]:
        return {"kind": "proc", "ComputerName": "pc", field: image}
    common = [(i * 60.0, ev("C:\\svchost.exe")) for i in range(199)]
    alerts = run(evaluator(text, bases), [*common, (12000.0, ev("C:\\evil.exe"))], end=86400 + 1)
    assert len(alerts) == 1
    details = alerts[0].details or {}
    assert details["value"] == 0.5 and details["values"] == {"c:\\evil.exe": 0.5}
    assert (details["window_start"], details["window_end"]) == (0.0, 86400.0)
    # 2 of 100 processes (2 %) is not rare enough; and nothing is decided before the window ends.
    few = [(i * 60.0, ev("C:\\svchost.exe")) for i in range(98)] + [(9000.0, ev("x.exe")), (9001.0, ev("x.exe"))]
    assert run(evaluator(text, bases), few, end=86401) == []
    assert run(evaluator(text, bases), [*common, (12000.0, ev("C:\\evil.exe"))], end=86400) == []


def alias_temporal(text: str) -> None:
    """internal_error and new_network_connection with swapped addresses within 10s."""
    bases = base("internal_error", {"http.response.status_code": 500}) + base(
        "new_network_connection", {"event.category": "network", "event.type": "connection",
                                   "event.outcome": "success"})
    error = {"http": {"response": {"status_code": 500}}, "source": {"ip": "203.0.113.9"},
             "destination": {"ip": "10.1.1.1"}}
    conn = {"event": {"category": "network", "type": "connection", "outcome": "success"},
            "source": {"ip": "10.1.1.1"}, "destination": {"ip": "203.0.113.9"}}
    alerts = run(evaluator(text, bases), [(0, error), (10, conn)])
    assert len(alerts) == 1
    assert alerts[0].fields == (("internal_ip", "10.1.1.1"), ("remote_ip", "203.0.113.9"))
    same_direction = {**conn, "source": {"ip": "203.0.113.9"}, "destination": {"ip": "10.1.1.1"}}
    assert run(evaluator(text, bases), [(0, error), (5, same_direction)]) == []
    assert run(evaluator(text, bases), [(0, error), (10.5, conn)]) == []


def full_example(text: str) -> None:
    """The complete example: >= 10 failed logins, then a successful one, same User, within 10m."""
    ev = evaluator(text)
    fails = [(float(i), {"EventID": 4625, "User": "admin"}) for i in range(10)]
    alerts = run(ev, [*fails, (60.0, {"EventID": 528, "User": "admin"})])
    assert [a.rule.title for a in alerts] == ["Correlation - Multiple Failed Logins Followed by Successful Login"]
    assert alerts[0].rule.level == "high" and alerts[0].rule.author == "Florian Roth (Nextron Systems)"
    assert ev.engine.suppressed_rule_ids == {  # generate defaults to false: only the outer alert is shown
        "53ba33fd-3a50-4468-a5ef-c583635cfa92", "4d0a2c83-c62c-4ed4-b475-c7e23a9269b8",
        "a8418a5a-5fc4-46b5-b23b-6c73beb19d41"}
    assert ev.evaluate({"EventID": 4625, "User": "x"}, None, 61.0) == []
    assert run(evaluator(text), [*fails[:9], (60.0, {"EventID": 4624, "User": "admin"})]) == []
    assert run(evaluator(text), [(0.0, {"EventID": 4624, "User": "admin"}), *[(t + 1, e) for t, e in fails]]) == []
    late = [*fails, (9 + 600.5, {"EventID": 4624, "User": "admin"})]  # 10m after the 10th failure: too late
    assert run(evaluator(text), late) == []


def reference_by_id_and_name(text: str) -> None:
    """``rules`` may mix ids and names; both resolve (the spec's firewall example)."""
    bases = base("by_id", {"action": "block", "fw": 1}, FAILED_ID) + base("firewall_block", {"action": "block",
                                                                                           "fw": 2})
    doc = yaml.safe_load(text)
    doc["correlation"].update({"type": "event_count", "group-by": ["src"], "timespan": "1m",
                               "condition": {"gte": 2}})
    full = yaml.safe_dump(doc)
    ev = evaluator(full, bases)
    assert values(run(ev, [(0, {"action": "block", "fw": 1, "src": "s"}),
                           (1, {"action": "block", "fw": 2, "src": "s"})])) == [2]


SCENARIOS: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Callable[[str], None]] = {
    ("event_count", (FAILED_ID,), ("ComputerName",)): event_count_computer,
    ("event_count", (FAILED_ID,), ("dns.question.name",)): event_count_ecs,
    ("value_count", (FAILED_ID,), ("ComputerName", "WorkstationName")): value_count_users,
    ("temporal", ("recon_cmd_a", "recon_cmd_b", "recon_cmd_c"), ("ComputerName", "User")): temporal_recon,
    ("temporal_ordered", ("recon_cmd_a", "recon_cmd_b", "recon_cmd_c"), ("ComputerName", "User")):
        temporal_ordered_recon,
    ("temporal_ordered", ("many_failed_logins", "successful_login"), ("User",)): temporal_ordered_logins,
    ("value_sum", ("website_access",), ("SourceIP", "User")): value_sum_exfil,
    ("value_avg", ("rule_a_id",), ("SourceIP", "User")): value_avg_traffic,
    ("value_percentile", ("process_creation",), ("ComputerName",)): value_percentile_rare_image,
    ("temporal", ("internal_error", "new_network_connection"), ("internal_ip", "remote_ip")): alias_temporal,
    ("temporal_ordered", ("multiple_failed_login", "successful_login"), ("User",)): full_example,
    ("", (FAILED_ID, "firewall_block"), ()): reference_by_id_and_name,
}


def signature(text: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The outermost correlation of a document: type, rules, group-by."""
    docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and "correlation" in d]
    outer = docs[0]["correlation"]
    return (outer.get("type", ""), tuple(outer.get("rules") or ()), tuple(outer.get("group-by") or ()))


def schema_files(shared: Path) -> list[Path]:
    return sorted((shared / "sigma-specification" / "tests" / "schema" / "correlation").glob("*.yml"))


def spec_examples(shared: Path) -> list[str]:
    """YAML code blocks of the specification that contain a correlation, made loadable."""
    text = (shared / "sigma-specification" / "specification" / "sigma-correlation-rules-specification.md").read_text()
    examples = []
    for block in re.findall(r"```ya?ml\n(.*?)```", text, flags=re.S):
        if "correlation:" not in block:
            continue
        if not re.search(r"^title:", block, flags=re.M):
            block = "title: spec fragment\n" + block
        block = block.replace("title: —", "title: alias example").replace(
            "id: —", "id: 7d4b9e4e-6f0b-4a43-9c1e-0c8f3a7b2f10")
        examples.append(block)
    return examples


def test_every_schema_rule_has_a_scenario_and_passes(shared_dir: Path) -> None:
    files = schema_files(shared_dir)
    assert len(files) == 8
    for path in files:
        text = path.read_text()
        scenario = SCENARIOS.get(signature(text))
        assert scenario is not None, f"no scenario for {path.name} {signature(text)}"
        scenario(text)


def test_every_specification_example_has_a_scenario_and_passes(shared_dir: Path) -> None:
    examples = spec_examples(shared_dir)
    assert len(examples) == 10  # the alias example's base rules are separate blocks
    covered = set()
    for text in examples:
        key = signature(text)
        scenario = SCENARIOS.get(key)
        assert scenario is not None, f"no scenario for specification example {key}:\n{text}"
        scenario(text)
        covered.add(key)
    assert len(covered) == len(examples)


def test_specification_range_condition(shared_dir: Path) -> None:
    """``gt: 100`` + ``lte: 200`` ("101 to 200"): pySigma 1.5 rejects it; the engine accepts the mapping."""
    text = (shared_dir / "sigma-specification" / "tests" / "schema" / "correlation" / "event_count.yml").read_text()
    result = compile_ruleset([RuleText("b.yml", FAILED_BASE), RuleText("c.yml", text)])
    ranges = {"0e95725d-7320-415d-80f7-004da920fc11": {"gt": 100, "lte": 200}}
    for count, expected in ((100, 0), (101, 1), (200, 1), (201, 0)):
        engine, errors = compile_correlations(result.ruleset, raw_conditions=ranges)
        assert errors == [] and engine.specs[0].condition.describe() == "gt 100 and lte 200"
        events = [(float(i), {"EventID": 4625, "ComputerName": "h"}) for i in range(count)]
        alerts = run(CorrelatingEvaluator(result.ruleset, engine), events, end=3601.0)
        assert len(alerts) == expected, count
