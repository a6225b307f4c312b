"""Kubernetes documents: load, validate against the API schemas, and read pipesentry's
settings back out of them the way a pod would see them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.31.0"
# kubernetes-validate ships the core API schemas only; for the Prometheus Operator CRD
# the fields used here are checked against the CRDs' structure (monitoring.coreos.com/v1).
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): Path(__file__).with_name("servicemonitor.schema.json"),
               ("monitoring.coreos.com/v1", "PrometheusRule"): Path(__file__).with_name("prometheusrule.schema.json")}
PIPESENTRY_IMAGE = re.compile(r"(^|/)pipesentry(:|@|$)")
# `pipesentry run` with the full SigmaHQ corpus (3,755 rules) answered /healthz 20 s after it
# was started, on one core shared with other work (the rules load on one thread). Startup
# probes allow several times that: a CPU limit under one core, slower nodes, a bigger site pack.
STARTUP_MEASURED_S = 20
STARTUP_BUDGET_S = 6 * STARTUP_MEASURED_S


def load_documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def validate(doc: Mapping[str, Any]) -> None:
    """Raise when ``doc`` is not a valid object (strict: unknown fields are errors)."""
    crd = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
    if crd is not None:
        jsonschema.validate(doc, json.loads(crd.read_text(encoding="utf-8")))
        return
    kubernetes_validate.validate(dict(doc), K8S_VERSION, strict=True)


def pod_spec(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    if doc.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return doc["spec"]["template"]["spec"]
    if doc.get("kind") == "Pod":
        return dict(doc["spec"])
    return None


def is_helm_hook(doc: Mapping[str, Any]) -> bool:
    return "helm.sh/hook" in (doc.get("metadata", {}).get("annotations") or {})


def pipesentry_containers(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for c in spec.get("containers", []):
        if PIPESENTRY_IMAGE.search(c["image"]):
            yield c


def resolve_env(container: Mapping[str, Any], secrets: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: Secret refs filled from
    ``secrets[(name, key)]`` and ``$(VAR)`` expanded against earlier variables."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                           lambda m: env.get(m.group(1), m.group(0)), str(item["value"]))
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            value = secrets[(ref["name"], ref["key"])]
        env[item["name"]] = value
    return env


def config_maps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}


def mounted_file(spec: Mapping[str, Any], container: Mapping[str, Any], path: str,
                 maps: Mapping[str, Mapping[str, str]]) -> str:
    """Text of the ConfigMap key the container sees at ``path`` (subPath or directory mount)."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "configMap" not in volume:
            continue
        data = maps[volume["configMap"]["name"]]
        if mount.get("subPath") and mount["mountPath"] == path:
            return data[mount["subPath"]]
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not mount.get("subPath") and path.startswith(prefix):
            return data[path[len(prefix):]]
    raise KeyError(f"nothing mounted at {path}")


def config_path(container: Mapping[str, Any]) -> str:
    args = list(container.get("command", [])) + list(container.get("args", []))
    return args[args.index("--config") + 1]
