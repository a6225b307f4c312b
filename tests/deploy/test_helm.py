"""The Helm chart: lint, values.schema.json enforcement, and what each value changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import kube, tools
from tests.deploy.conftest import CHART, VALUE_SETS, helm_template

SCHEMA_ERROR = "values don't meet the specifications of the schema"


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    data = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config"))["data"]
    return yaml.safe_load(data["config.yaml"])


def render(helm: Path, tmp_path: Path, values: dict[str, Any], *base: Path) -> list[dict[str, Any]]:
    extra = tmp_path / "extra-values.yaml"
    extra.write_text(yaml.safe_dump(values), encoding="utf-8")
    proc = helm_template(helm, [*base, extra])
    assert proc.returncode == 0, proc.stderr
    return kube.load_documents(proc.stdout)


@pytest.mark.parametrize("values", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_chart_lints_strictly(helm: Path, values: str) -> None:
    args: list[str | Path] = [helm, "lint", "--strict", CHART, "--kube-version", kube.K8S_VERSION]
    for path in VALUE_SETS[values]:
        args += ["--values", path]
    proc = tools.run(args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("values", "why"), [
    ({"mode": "daemonset"}, "unknown mode"),
    ({"replicaCount": 0}, "no instance"),
    ({"image": {"tag": "latest"}}, "floating tag"),
    ({"image": {"digest": "sha256:abc"}}, "malformed digest"),
    ({"securityContext": {"readOnlyRootFilesystem": False}}, "writable root"),
    ({"securityContext": {"allowPrivilegeEscalation": True}}, "privilege escalation"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "root pod"),
    ({"config": {"data_dir": "/data"}}, "data_dir belongs to the chart"),
    ({"rules": {"../escape.yml": "title: x"}}, "rule file name with a path"),
    ({"secretEnv": [{"name": "X", "secretName": "s"}]}, "secret ref without key"),
    ({"service": {"port": 70000}}, "port out of range"),
    ({"replicas": 3}, "unknown top-level key (typo of replicaCount)"),
    ({"mode": "sidecar", "config": {"kafka": None}}, "sidecar without the app container"),
    ({"config": {"kafka": None}}, "consumer group without Kafka settings"),
])
def test_schema_rejects_bad_values(helm: Path, tmp_path: Path, values: dict[str, Any], why: str) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(yaml.safe_dump(values), encoding="utf-8")
    proc = helm_template(helm, [bad])
    assert proc.returncode != 0, f"accepted ({why})"
    assert SCHEMA_ERROR in proc.stderr, proc.stderr


def test_default_values_render_a_consumer_group(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    [deployment] = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert not by_kind(docs, "StatefulSet")
    config = config_of(docs)
    assert config["kafka"]["bootstrap_servers"]
    assert config["http_ingest"] == {"enabled": False}
    assert config["data_dir"] == "/var/lib/pipesentry"
    assert all(d["metadata"]["namespace"] == "pipesentry" for d in docs)


def test_sidecar_values_render_the_app_with_pipesentry_beside_it(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["sidecar"]
    [deployment] = by_kind(docs, "Deployment")
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"checkout", "pipesentry"}
    app_mount = next(m for m in containers["checkout"]["volumeMounts"] if m["name"] == "app-logs")
    assert app_mount["mountPath"] == "/var/log/app" and not app_mount.get("readOnly")
    config = config_of(docs)
    assert "kafka" not in config
    assert config["files"] == [{"path": "/var/log/app/app.log", "start_at": "beginning",
                                "logsource": {"product": "json", "category": "application",
                                              "service": "checkout"}}]
    assert config["http_ingest"]["enabled"] is True
    assert not by_kind(docs, "PodDisruptionBudget") and not by_kind(docs, "NetworkPolicy")


def test_persistence_makes_a_statefulset_with_one_volume_per_instance(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["consumer-group"]
    assert not by_kind(docs, "Deployment")
    [sts] = by_kind(docs, "StatefulSet")
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    volumes = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "data" not in volumes  # the claim, not an emptyDir
    rules = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-rules"))
    assert list(rules["data"]) == ["site-forbidden-runner-label.yml"]


def test_image_digest_and_secret_env(helm: Path, tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    docs = render(helm, tmp_path, {"image": {"digest": digest}},
                  *VALUE_SETS["consumer-group"])
    [sts] = by_kind(docs, "StatefulSet")
    [container] = sts["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/pipesentry/pipesentry@{digest}"
    names = [e["name"] for e in container["env"]]
    # Secret refs come first so plain env values can use $(NAME).
    assert names.index("ES_API_KEY") < names.index("PIPESENTRY_ALERTING__SINKS")
    ref = next(e for e in container["env"] if e["name"] == "ES_API_KEY")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "pipesentry-credentials", "key": "elasticsearch-api-key"}


def test_config_change_rolls_the_pods(helm: Path, tmp_path: Path,
                                      rendered: dict[str, list[dict[str, Any]]]) -> None:
    def checksum(docs: list[dict[str, Any]]) -> str:
        [deployment] = by_kind(docs, "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    changed = render(helm, tmp_path, {"config": {"log_level": "DEBUG"}})
    assert config_of(changed)["log_level"] == "DEBUG"
    assert checksum(changed) != checksum(rendered["default"])


def test_user_config_merges_over_chart_defaults(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"config": {"api": {"tokens": [{"name": "ops", "role": "admin",
                                                                   "token_file": "/var/run/secrets/api/token"}]}},
                                   "service": {"port": 9000}})
    config = config_of(docs)
    assert config["api"]["host"] == "0.0.0.0" and config["api"]["port"] == 9000
    assert config["api"]["tokens"][0]["name"] == "ops"
    [deployment] = by_kind(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 9000


def test_prometheus_rule_carries_the_tested_alerting_rules(rendered: dict[str, list[dict[str, Any]]]) -> None:
    source = tools.DEPLOY / "prometheus" / "pipesentry-alerts.yml"
    copy = CHART / "files" / "pipesentry-alerts.yml"
    assert copy.read_text(encoding="utf-8") == source.read_text(encoding="utf-8"), \
        "cp deploy/prometheus/pipesentry-alerts.yml deploy/helm/pipesentry/files/"
    [rule] = by_kind(rendered["default"], "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(source.read_text(encoding="utf-8"))
    assert "{{ $labels.topic }}" in str(rule["spec"]), "alert templates must reach Prometheus unrendered"
