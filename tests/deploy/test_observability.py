"""Prometheus rules, Alertmanager configs and the Grafana dashboard: the real tools accept
them, the alerts fire when they should, and every metric they query is one pipesentry exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from service.metrics import REGISTRY
from tests.deploy import tools
from tests.deploy.tools import DEPLOY

RULES = DEPLOY / "prometheus" / "pipesentry-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "pipesentry-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "pipesentry-dashboard.json"
ALERTMANAGER_CONFIGS = [DEPLOY / "alertmanager" / "alertmanager.yml", DEPLOY / "compose" / "alertmanager.yml"]
METRIC = re.compile(r"\b(pipesentry_[A-Za-z0-9_:]+)")
SELECTOR = re.compile(r"\b(pipesentry_[A-Za-z0-9_:]+)\{([^}]*)\}")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
TARGET_LABELS = {"job", "instance"}  # added by Prometheus at scrape time
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",)}


def exported() -> dict[str, set[str]]:
    """Every series name pipesentry's /metrics can carry -> its label names."""
    names: dict[str, set[str]] = {}
    families: list[Metric] = list(REGISTRY.collect())
    collectors = list(REGISTRY._collector_to_names)  # labels live on the collectors
    labels_by_name = {c._name: set(c._labelnames) for c in collectors if hasattr(c, "_labelnames")}
    for family in families:
        labels = labels_by_name.get(family.name, set())
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def rule_exprs() -> dict[str, str]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r["alert"]: r["expr"] for g in data["groups"] for r in g["rules"]}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in items:
        out.append(p)
        out.extend(panels(p.get("panels", [])))
    return out


def dashboard_exprs() -> dict[str, str]:
    return {f"{p['title']}/{t['refId']}": t["expr"] for p in panels(dashboard()["panels"])
            for t in p.get("targets", [])}


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by values Prometheus accepts."""
    return (expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
            .replace("$job", ".+").replace("$instance", ".+"))


def check_names_and_labels(where: str, expr: str, known: dict[str, set[str]]) -> None:
    used = set(METRIC.findall(expr))
    assert used, f"{where}: queries no pipesentry metric: {expr}"
    missing = sorted(used - set(known))
    assert not missing, f"{where}: not exported by service/metrics.py: {missing}"
    for name, matchers in SELECTOR.findall(expr):
        for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            assert label in known[name] | TARGET_LABELS, f"{where}: {name} has no label {label!r}"
    available = set().union(*(known[n] for n in used)) | TARGET_LABELS
    for group in GROUPING.findall(expr):
        labels = {x.strip() for x in group.split(",") if x.strip()}
        assert labels <= available, f"{where}: grouping by unknown labels {sorted(labels - available)}"


def test_metric_catalogue_is_read_from_the_registry() -> None:
    known = exported()
    assert known["pipesentry_events_total"] == {"source"}
    assert known["pipesentry_sink_latency_seconds_bucket"] == {"sink", "le"}
    assert "pipesentry_spool_records" in known and "pipesentry_events" not in known


@pytest.mark.parametrize(("alert", "expr"), list(rule_exprs().items()))
def test_alert_rules_query_exported_metrics(alert: str, expr: str) -> None:
    if alert == "PipesentryDown":
        assert 'up{job="pipesentry"}' in expr
        return
    check_names_and_labels(alert, expr, exported())


@pytest.mark.parametrize(("panel", "expr"), list(dashboard_exprs().items()))
def test_dashboard_queries_exported_metrics(panel: str, expr: str) -> None:
    check_names_and_labels(panel, expr, exported())


def test_the_checker_catches_an_unknown_metric_and_label() -> None:
    with pytest.raises(AssertionError, match="not exported"):
        check_names_and_labels("x", "rate(pipesentry_events_recieved_total[5m])", exported())
    with pytest.raises(AssertionError, match="no label"):
        check_names_and_labels("x", 'pipesentry_sink_up{sinc="es"}', exported())
    with pytest.raises(AssertionError, match="grouping"):
        check_names_and_labels("x", "sum by (topic) (pipesentry_events_total)", exported())


def test_required_alerts_exist() -> None:
    assert {"PipesentryConsumerLagGrowing", "PipesentrySinkFailing", "PipesentrySpoolGrowing",
            "PipesentryNoEventsFromSource", "PipesentryReloadFailed"} <= set(rule_exprs())


def test_promtool_accepts_the_rules() -> None:
    proc = tools.run([tools.require("promtool"), "check", "rules", RULES])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in proc.stdout


def test_promtool_unit_tests_fire_each_alert() -> None:
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert {"PipesentryConsumerLagGrowing", "PipesentrySinkFailing", "PipesentrySpoolGrowing",
            "PipesentryNoEventsFromSource", "PipesentryReloadFailed"} <= tested
    proc = tools.run([tools.require("promtool"), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": as_promql(e)} for i, e in enumerate(exprs.values())]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    proc = tools.run([tools.require("promtool"), "check", "rules", path], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_covers_the_service() -> None:
    data = dashboard()
    all_panels = panels(data["panels"])
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    assert data["uid"] and data["title"]
    assert {v["name"] for v in data["templating"]["list"]} == {"datasource", "job", "instance"}
    text = " ".join(dashboard_exprs().values())
    for metric in ("pipesentry_events_total", "pipesentry_kafka_consumer_lag", "pipesentry_alerts_total",
                   "pipesentry_sink_up", "pipesentry_sink_failures_total", "pipesentry_spool_records",
                   "pipesentry_rule_reloads_total"):
        assert metric in text, f"dashboard does not show {metric}"
    assert re.search(r"by \(rule_id, level\)", text), "alerts by rule and level"
    for p in all_panels:
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
            assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


@pytest.mark.parametrize("path", ALERTMANAGER_CONFIGS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_amtool_accepts_the_alertmanager_configs(path: Path) -> None:
    proc = tools.run([tools.require("amtool"), "check-config", path])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(("labels", "receivers"), [
    # A detection from pipesentry's alertmanager receiver (labels of service/alerting/sinks/alertmanager.py).
    ({"alertname": "Secret In CI Log", "rule_id": "r1", "severity": "critical", "pipesentry_group": "g"},
     "security-oncall,security-chat"),
    ({"alertname": "Secret In CI Log", "rule_id": "r1", "severity": "low", "pipesentry_group": "g"},
     "security-chat"),
    ({"alertname": "PipesentrySinkFailing", "severity": "critical", "job": "pipesentry"}, "platform-oncall"),
    ({"alertname": "PipesentrySpoolGrowing", "severity": "warning", "job": "pipesentry"}, "platform-team"),
])
def test_example_alertmanager_routes(labels: dict[str, str], receivers: str) -> None:
    args: list[str | Path] = [tools.require("amtool"), "config", "routes", "test",
                              f"--config.file={ALERTMANAGER_CONFIGS[0]}"]
    args += [f"{k}={v}" for k, v in labels.items()]
    proc = tools.run(args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == receivers
