"""Fixtures for the deployment checks: the chart rendered once per value set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy import kube, tools

CHART = tools.DEPLOY / "helm" / "pipesentry"
VALUE_SETS: dict[str, list[Path]] = {
    "default": [],
    "sidecar": [CHART / "ci" / "sidecar-values.yaml"],
    "consumer-group": [CHART / "ci" / "consumer-group-values.yaml"],
}
MANIFEST_DIRS = sorted(p for p in (tools.DEPLOY / "k8s").iterdir() if p.is_dir())
# The Prometheus Operator's API: the chart renders its ServiceMonitor and PrometheusRule only
# when the cluster serves it, so the renders below say it does unless a test says otherwise.
MONITORING_API = "monitoring.coreos.com/v1"


def helm_template(helm: Path, values: list[Path], *extra: str, namespace: str = "pipesentry",
                  chart: Path = CHART, api_versions: tuple[str, ...] = (MONITORING_API,)):
    args: list[str | Path] = [helm, "template", "ps", chart, "--namespace", namespace,
                              "--kube-version", kube.K8S_VERSION]
    for api in api_versions:
        args += ["--api-versions", api]
    for path in values:
        args += ["--values", path]
    return tools.run([*args, *extra])


@pytest.fixture(scope="session")
def helm() -> Path:
    return tools.require("helm")


@pytest.fixture(scope="session")
def rendered(helm: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, values in VALUE_SETS.items():
        proc = helm_template(helm, values)
        assert proc.returncode == 0, f"helm template ({name}) failed:\n{proc.stderr}"
        out[name] = kube.load_documents(proc.stdout)
    return out


def manifest_documents(directory: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(kube.load_documents(path.read_text(encoding="utf-8")))
    return docs


SHAPES = [f"k8s/{d.name}" for d in MANIFEST_DIRS] + [f"helm/{name}" for name in VALUE_SETS]


@pytest.fixture(params=SHAPES)
def shape(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    """(name, documents) of every deployable shape: plain manifests and chart renders."""
    name: str = request.param
    if name.startswith("k8s/"):
        return name, manifest_documents(tools.DEPLOY / name)
    return name, request.getfixturevalue("rendered")[name.removeprefix("helm/")]
