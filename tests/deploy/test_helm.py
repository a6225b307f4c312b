"""The Helm chart: lint, values.schema.json enforcement, and what each value changes."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import kube, tools
from tests.deploy.conftest import CHART, MONITORING_API, VALUE_SETS, helm_template

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


def test_a_consumer_group_runs_in_keyed_scope_with_an_internal_topic_per_group(
        helm: Path, tmp_path: Path, rendered: dict[str, list[dict[str, Any]]]) -> None:
    from service.config import Settings

    assert config_of(rendered["default"])["state"] == {"scope": "keyed", "keyed_topic": "pipesentry-keyed-state",
                                                       "keyed_partitions": 12, "snapshots": "kafka"}
    production = config_of(rendered["consumer-group"])  # group pipesentry-prod, 6 replicas
    assert production["state"] == {"scope": "keyed", "keyed_topic": "pipesentry-prod-keyed-state",
                                   "keyed_partitions": 12, "snapshots": "kafka"}
    default = config_of(rendered["default"])
    state = Settings(**{k: v for k, v in default.items() if k in ("kafka", "state")}).state  # pipesentry reads it
    assert state.scope == "keyed" and state.keyed_role == "both"
    assert state.snapshots == "kafka" and state.changelog_topic == "pipesentry-state-changelog"
    assert "state" not in config_of(rendered["sidecar"])  # no Kafka input: no keyed scope
    wide = config_of(render(helm, tmp_path, {"replicaCount": 20}))
    assert wide["state"]["keyed_partitions"] == 20
    own = config_of(render(helm, tmp_path, {"config": {"state": {"scope": "partition"}}}))
    assert own["state"]["scope"] == "partition"  # the user's config wins key by key


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


def pipesentry_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [workload] = [d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}]
    [container] = kube.pipesentry_containers(workload["spec"]["template"]["spec"])
    return container


@pytest.mark.parametrize("values", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_image_is_pulled_if_not_present(rendered: dict[str, list[dict[str, Any]]], values: str) -> None:
    """A release tag (never "latest", the schema refuses it) or a digest does not move: the
    node's copy is the image, and a restart does not wait on the registry."""
    assert pipesentry_container(rendered[values])["imagePullPolicy"] == "IfNotPresent"
    [test_pod] = [d for d in rendered[values] if kube.is_helm_hook(d)]
    assert test_pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_startup_probe_budget_is_a_value(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"startupProbe": {"periodSeconds": 10, "timeoutSeconds": 5,
                                                    "failureThreshold": 60}})
    probe = pipesentry_container(docs)["startupProbe"]
    assert (probe["periodSeconds"], probe["timeoutSeconds"], probe["failureThreshold"]) == (10, 5, 60)


def test_monitoring_objects_need_the_prometheus_operator_api(helm: Path) -> None:
    """Without monitoring.coreos.com/v1 (no Prometheus Operator) the chart still installs:
    no ServiceMonitor or PrometheusRule, which such a cluster would refuse."""
    proc = helm_template(helm, [], api_versions=())
    assert proc.returncode == 0, proc.stderr
    kinds = {d["kind"] for d in kube.load_documents(proc.stdout)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert {"Deployment", "Service", "ServiceAccount"} <= kinds


def test_monitoring_objects_can_be_turned_off(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}})
    assert not {d["kind"] for d in docs} & {"ServiceMonitor", "PrometheusRule"}


def notes(helm: Path, tmp_path: Path, *, api_versions: tuple[str, ...]) -> str:
    """NOTES.txt as `helm install` prints it. `helm template` does not render it and
    `helm install --dry-run` needs a cluster here, so a copy of the chart wraps it in a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    text = (chart / "templates" / "NOTES.txt").read_text(encoding="utf-8")
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text('{{- define "notes" -}}\n' + text + "{{- end -}}\n",
                                                     encoding="utf-8")
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ include "notes" . | quote }}}\n', encoding="utf-8")
    proc = helm_template(helm, [], "--show-only", "templates/notes.yaml", chart=chart, api_versions=api_versions)
    assert proc.returncode == 0, proc.stderr
    [doc] = kube.load_documents(proc.stdout)
    return str(doc["data"]["notes"])


def test_notes_say_when_the_monitoring_objects_were_left_out(helm: Path, tmp_path: Path) -> None:
    without = notes(helm, tmp_path / "without", api_versions=())
    assert "ServiceMonitor" in without and "were not created" in without
    assert "helm test -n pipesentry ps" in without
    with_api = notes(helm, tmp_path / "with", api_versions=(MONITORING_API,))
    assert "were not created" not in with_api


def test_service_account_annotations_bind_a_cloud_identity(helm: Path, tmp_path: Path,
                                                           rendered: dict[str, list[dict[str, Any]]]) -> None:
    [plain] = by_kind(rendered["default"], "ServiceAccount")
    assert "annotations" not in plain["metadata"]
    role = "arn:aws:iam::123456789012:role/pipesentry"
    docs = render(helm, tmp_path, {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": role}}})
    [account] = by_kind(docs, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    [deployment] = by_kind(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_extra_volumes_mount_into_the_pipesentry_container(helm: Path, tmp_path: Path) -> None:
    values = {"extraVolumes": [{"name": "kafka-tls", "secret": {"secretName": "pipesentry-kafka-tls"}}],
              "extraVolumeMounts": [{"name": "kafka-tls", "mountPath": "/etc/pipesentry/kafka-tls",
                                     "readOnly": True}],
              "env": [{"name": "PIPESENTRY_KAFKA__SECURITY__SSL_CAFILE",
                       "value": "/etc/pipesentry/kafka-tls/ca.crt"}]}
    for base in (VALUE_SETS["default"], VALUE_SETS["sidecar"]):
        docs = render(helm, tmp_path, values, *base)
        for doc in docs:
            kube.validate(doc)
        [deployment] = by_kind(docs, "Deployment")
        spec = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["kafka-tls"] == {"name": "kafka-tls", "secret": {"secretName": "pipesentry-kafka-tls"}}
        container = pipesentry_container(docs)
        assert {"name": "kafka-tls", "mountPath": "/etc/pipesentry/kafka-tls",
                "readOnly": True} in container["volumeMounts"]
        assert {"name": "PIPESENTRY_KAFKA__SECURITY__SSL_CAFILE",
                "value": "/etc/pipesentry/kafka-tls/ca.crt"} in container["env"]
        others = [c for c in spec["containers"] if c is not container]
        assert all(m["name"] != "kafka-tls" for c in others for m in c.get("volumeMounts", []))


@pytest.mark.parametrize(("values", "why"), [
    ({"extraVolumes": [{"name": "data", "emptyDir": {}}]}, "a volume name the chart owns"),
    ({"extraVolumeMounts": [{"name": "x"}]}, "mount without mountPath"),
    ({"extraVolumeMounts": [{"name": "x", "mountPath": "relative"}]}, "relative mount path"),
    ({"serviceAccount": {"annotations": {"a": 1}}}, "annotation value not a string"),
    ({"serviceAccount": {"name": "other"}}, "unknown serviceAccount key"),
    ({"image": {"pullPolicy": "Sometimes"}}, "unknown pull policy"),
    ({"startupProbe": {"periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 0}}, "no start allowed"),
])
def test_schema_rejects_bad_extra_values(helm: Path, tmp_path: Path, values: dict[str, Any], why: str) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(yaml.safe_dump(values), encoding="utf-8")
    proc = helm_template(helm, [bad])
    assert proc.returncode != 0, f"accepted ({why})"
    assert SCHEMA_ERROR in proc.stderr, proc.stderr


@pytest.mark.parametrize("values", list(VALUE_SETS), ids=list(VALUE_SETS))
def test_helm_test_pod_asks_the_services_readyz(rendered: dict[str, list[dict[str, Any]]], values: str) -> None:
    docs = rendered[values]
    [pod] = [d for d in docs if kube.is_helm_hook(d)]
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "hook-succeeded" in pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert "serviceAccountName" not in pod["spec"], "the release's cloud identity is not the test's"
    [container] = pod["spec"]["containers"]
    assert container["image"] == pipesentry_container(docs)["image"], "no other image to pull or trust"
    [service] = by_kind(docs, "Service")
    env = {e["name"]: e["value"] for e in container["env"]}
    port = service["spec"]["ports"][0]["port"]
    assert env["READYZ_URL"] == f"http://{service['metadata']['name']}.pipesentry.svc:{port}/readyz"
    # The Service and the NetworkPolicy do not select the test pod, but the policy lets it in.
    labels = pod["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= labels.items()
    for policy in by_kind(docs, "NetworkPolicy"):
        assert any(peer.get("podSelector", {}).get("matchLabels", {}).items() <= labels.items()
                   and peer.get("podSelector")
                   for rule in policy["spec"]["ingress"] for peer in rule["from"]), "the policy blocks helm test"


def test_helm_test_script_waits_for_200_and_fails_otherwise(rendered: dict[str, list[dict[str, Any]]],
                                                            tmp_path: Path) -> None:
    """The test pod's Python, run here against a server answering 503 and then 200."""
    [pod] = [d for d in rendered["default"] if kube.is_helm_hook(d)]
    [container] = pod["spec"]["containers"]
    assert container["command"][:2] == ["python", "-c"]
    script = container["command"][2]
    codes = [503, 503, 200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = codes.pop(0) if len(codes) > 1 else codes[0]
            body = json.dumps({"ready": code == 200}).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
        ok = subprocess.run([sys.executable, "-c", script], env={"READYZ_URL": url, "TIMEOUT_S": "60"},
                            capture_output=True, text=True, timeout=120, check=False)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert " 200 " in ok.stdout
        codes[:] = [503]
        refused = subprocess.run([sys.executable, "-c", script], env={"READYZ_URL": url, "TIMEOUT_S": "0"},
                                 capture_output=True, text=True, timeout=120, check=False)
        assert refused.returncode == 1 and "not ready: 503" in refused.stdout, refused.stdout + refused.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_chart_readme_documents_every_top_level_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    missing = [key for key in defaults if f"`{key}" not in readme]
    assert not missing, f"README.md does not describe {missing}"
    for phrase in ("helm test", "--api-versions monitoring.coreos.com/v1", "startupProbe"):
        assert phrase in readme, phrase
