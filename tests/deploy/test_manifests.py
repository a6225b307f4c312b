"""Every Kubernetes shape (plain manifests and the chart's renders) is valid, locked down,
and gives pipesentry settings it accepts."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from detectors.sigma import RuleText, compile_ruleset
from service.config import load_settings
from tests.deploy import kube
from tests.deploy.conftest import manifest_documents
from tests.deploy.tools import DEPLOY

Shape = tuple[str, list[dict[str, Any]]]
BUNDLED_RULES = "/opt/pipesentry/share/pipesentry/sigma-rules"  # where deploy/Dockerfile puts sigma-rules/


def pods(docs: list[dict[str, Any]], *, hooks: bool = False) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod spec) of the workloads; with ``hooks``, Helm hook pods (``helm test``) too."""
    return [(d, spec) for d in docs if (spec := kube.pod_spec(d)) is not None
            and (hooks or not kube.is_helm_hook(d))]


def test_every_document_validates_against_the_kubernetes_schemas(shape: Shape) -> None:
    name, docs = shape
    assert docs, f"{name}: no documents"
    for doc in docs:
        try:
            kube.validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata'].get('name')}: {exc.message}")


def test_strict_validation_rejects_a_misspelled_field() -> None:
    docs = manifest_documents(DEPLOY / "k8s" / "consumer-group")
    deployment = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = container["securityContext"].pop(
        "readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError):
        kube.validate(deployment)
    monitor = copy.deepcopy(next(d for d in docs if d["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        kube.validate(monitor)


def test_pods_run_locked_down(shape: Shape) -> None:
    name, docs = shape
    assert pods(docs), f"{name}: no workload"
    for doc, spec in pods(docs, hooks=True):
        where = f"{name}: {doc['kind']} {doc['metadata']['name']}"
        assert spec.get("automountServiceAccountToken") is False, where
        pod_ctx = spec.get("securityContext", {})
        assert pod_ctx.get("runAsNonRoot") is True, where
        for c in spec["containers"]:
            ctx = c.get("securityContext", {})
            at = f"{where} container {c['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, at
            assert ctx.get("readOnlyRootFilesystem") is True, at
            assert "ALL" in ctx.get("capabilities", {}).get("drop", []), at
            assert not ctx.get("capabilities", {}).get("add"), at
            assert ctx.get("privileged") in (None, False), at
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, at
            resources = c.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), at
            assert "memory" in resources.get("limits", {}), at
            assert ":latest" not in c["image"] and (":" in c["image"] or "@" in c["image"]), at


def test_pipesentry_probes_and_writable_paths(shape: Shape, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    name, docs = shape
    maps = kube.config_maps(docs)
    found = 0
    for doc, spec in pods(docs):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for c in kube.pipesentry_containers(spec):
            found += 1
            settings = settings_of(spec, c, maps, monkeypatch, tmp_path)
            port = next(p for p in c["ports"] if p["name"] == "http")
            assert port["containerPort"] == settings.api.port, name
            assert settings.api.host == "0.0.0.0", f"{name}: probes reach the pod IP, not loopback"
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
            assert c["imagePullPolicy"] == "IfNotPresent", f"{name}: a release tag or digest never moves"
            startup = c["startupProbe"]
            assert startup["httpGet"] == {"path": "/healthz", "port": "http"}, name
            budget = startup["periodSeconds"] * startup["failureThreshold"]
            assert budget >= kube.STARTUP_BUDGET_S, f"{name}: startup probe allows {budget} s"
            writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
            # Read-only root: the data dir (spools, alert store, dead letters) and /tmp only.
            assert writable == {str(settings.data_dir), "/tmp"}, f"{name}: writable mounts {writable}"
            for mount in c["volumeMounts"]:
                assert mount["name"] in volumes or mount["name"] in claims, f"{name}: {mount['name']}"
                if "configMap" in volumes.get(mount["name"], {}):
                    assert mount.get("readOnly") is True, f"{name}: {mount['mountPath']}"
    assert found, f"{name}: no pipesentry container"


def settings_of(spec: dict[str, Any], container: dict[str, Any], maps: dict[str, dict[str, str]],
                monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The Settings pipesentry builds in this container: mounted config file plus its env."""
    text = kube.mounted_file(spec, container, kube.config_path(container), maps)
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    secrets = _SecretValues()
    env = kube.resolve_env(container, secrets)
    for key in [k for k in os.environ if k.upper().startswith("PIPESENTRY_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(config)


class _SecretValues(dict[tuple[str, str], str]):
    """Any Secret key resolves to a stand-in value long enough for every secret setting."""

    def __missing__(self, ref: tuple[str, str]) -> str:
        return f"test-{ref[0]}-{ref[1]}-0123456789abcdef"


def test_settings_from_manifests_are_valid_and_use_the_mounted_paths(shape: Shape,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    name, docs = shape
    maps = kube.config_maps(docs)
    for _, spec in pods(docs):
        for c in kube.pipesentry_containers(spec):
            settings = settings_of(spec, c, maps, monkeypatch, tmp_path)
            assert settings.stdin.enabled is False, name
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            for path in settings.rules.resolved_paths():
                assert str(path) == BUNDLED_RULES or str(path) in mounts, f"{name}: rules path {path}"
            if settings.kafka is not None:
                # Secrets are referenced, never written in the manifest.
                sasl = settings.kafka.security.sasl_password
                if sasl is not None:
                    assert sasl.get_secret_value().startswith("test-"), name
                for sink in settings.alerting.sinks:
                    key = getattr(sink, "api_key", None)
                    assert key is None or key.get_secret_value().startswith("test-"), name
                for token in settings.api.tokens:
                    assert token.token is not None and token.token.get_secret_value().startswith("test-"), name
            for follow in settings.files:
                shared = [m for p, m in mounts.items() if str(follow.path).startswith(p.rstrip("/") + "/")]
                assert shared and shared[0].get("readOnly"), f"{name}: {follow.path} not on a read-only mount"
                others = [x for x in spec["containers"] if x is not c]
                assert any(m["name"] == shared[0]["name"] and not m.get("readOnly")
                           for x in others for m in x.get("volumeMounts", [])), \
                    f"{name}: no application container writes {follow.path}"


def test_site_rules_in_config_maps_compile(shape: Shape) -> None:
    name, docs = shape
    for map_name, data in kube.config_maps(docs).items():
        texts = [RuleText(source=f"{map_name}/{key}", text=text, ruleset=map_name)
                 for key, text in data.items() if key.endswith((".yml", ".yaml")) and key != "config.yaml"]
        if not texts:
            continue
        result = compile_ruleset(texts, skip_invalid=False)
        assert not result.errors, f"{name}: {result.errors}"
        assert len(result.ruleset.rules) == len(texts)


def test_selectors_tie_the_objects_together(shape: Shape) -> None:
    name, docs = shape
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d, _ in pods(docs)]

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pod_labels)

    for workload, _ in pods(docs):
        assert workload["spec"]["selector"]["matchLabels"].items() <= \
            workload["spec"]["template"]["metadata"]["labels"].items(), name
    for svc in by_kind.get("Service", []):
        assert selects(svc["spec"]["selector"]), f"{name}: Service selects no pod"
    for pdb in by_kind.get("PodDisruptionBudget", []):
        assert selects(pdb["spec"]["selector"]["matchLabels"]), f"{name}: PDB selects no pod"
    for policy in by_kind.get("NetworkPolicy", []):
        assert selects(policy["spec"]["podSelector"]["matchLabels"]), f"{name}: NetworkPolicy selects no pod"
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, name
    for monitor in by_kind.get("ServiceMonitor", []):
        services = [s for s in by_kind.get("Service", [])
                    if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert services, f"{name}: ServiceMonitor selects no Service"
        ports = {p["name"] for s in services for p in s["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports, name
        # The alerting rules select job="pipesentry": the jobLabel must yield it.
        assert services[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "pipesentry", name
    for kind, names in [(k, [d["metadata"]["name"] for d in v]) for k, v in by_kind.items()]:
        assert len(names) == len(set(names)), f"{name}: duplicate {kind} names"


@pytest.mark.parametrize("name", ["k8s/consumer-group", "helm/default", "helm/consumer-group"])
def test_consumer_group_shapes_are_complete(name: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = (manifest_documents(DEPLOY / name) if name.startswith("k8s/")
            else rendered[name.removeprefix("helm/")])
    kinds = {d["kind"] for d in docs}
    assert {"Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "ConfigMap",
            "ServiceAccount"} <= kinds, f"{name}: {kinds}"
    assert kinds & {"Deployment", "StatefulSet"}, name


def test_manifest_files_are_plain_yaml_with_namespaces() -> None:
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc["metadata"].get("namespace"), f"{path.name}: {doc['kind']} without namespace"
