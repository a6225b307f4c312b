"""Checkov over deploy/ (Kubernetes manifests, the Dockerfile, the Helm chart rendered by
checkov itself): no failed check except the documented ones in deploy/checkov-skips.yaml.

Checkov's severities need a Prisma Cloud API key, which the suite does not have, so
every failed check counts, not only the high-severity ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import tools
from tests.deploy.tools import DEPLOY, ROOT

FRAMEWORKS = ("kubernetes", "dockerfile", "helm")
SKIPS = DEPLOY / "checkov-skips.yaml"


@pytest.fixture(scope="module")
def report() -> dict[str, dict[str, Any]]:
    checkov = tools.require("checkov")
    helm = tools.require("helm")  # checkov renders the chart with it
    env = {**os.environ, "PATH": f"{helm.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("BC_API_KEY", None)  # offline on purpose: the same result on every machine
    proc = tools.run([checkov, "--directory", "deploy", "--framework", *FRAMEWORKS, "--output", "json",
                      "--quiet", "--compact", "--skip-download"], cwd=ROOT, env=env, timeout=300)
    assert proc.returncode in (0, 1), f"checkov crashed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    assert "Failed processing" not in proc.stderr, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    results = data if isinstance(data, list) else [data]
    return {r["check_type"]: r for r in results}


def skips() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(SKIPS.read_text(encoding="utf-8"))


def failed(report: dict[str, dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(framework, c["check_id"], f"{c['file_path']} {c['resource']}")
            for framework, r in report.items() for c in r["results"]["failed_checks"]}


def test_every_framework_scanned_something(report: dict[str, dict[str, Any]]) -> None:
    for framework in FRAMEWORKS:
        assert framework in report, f"checkov did not scan {framework}: {sorted(report)}"
        summary = report[framework]["summary"]
        assert summary["resource_count"] > 0 and summary["parsing_errors"] == 0, (framework, summary)


def test_skips_are_documented() -> None:
    for check_id, entry in skips().items():
        assert set(entry["frameworks"]) <= set(FRAMEWORKS), check_id
        assert len(entry["reason"].split()) >= 8, f"{check_id}: give the reason"


def test_no_failed_check_outside_the_documented_skips(report: dict[str, dict[str, Any]]) -> None:
    allowed = skips()
    unexpected = sorted(f"{fw} {cid} {where}" for fw, cid, where in failed(report)
                        if fw not in allowed.get(cid, {}).get("frameworks", []))
    assert not unexpected, "checkov failures:\n" + "\n".join(unexpected)


def test_no_stale_skips(report: dict[str, dict[str, Any]]) -> None:
    seen = {(fw, cid) for fw, cid, _ in failed(report)}
    stale = sorted(f"{cid} ({fw})" for cid, entry in skips().items() for fw in entry["frameworks"]
                   if (fw, cid) not in seen)
    assert not stale, f"remove from {SKIPS.name}, they pass now: {stale}"


def test_checkov_sees_security_problems(tmp_path: Path) -> None:
    """The scan is real: a privileged, root, writable-root pod fails the checks it should."""
    checkov = tools.require("checkov")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "x"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.37",
                                 "securityContext": {"privileged": True, "runAsUser": 0}}]}}))
    proc = tools.run([checkov, "--directory", tmp_path, "--framework", "kubernetes", "--output", "json",
                      "--quiet", "--compact", "--skip-download"], cwd=tmp_path, timeout=300)
    ids = {c["check_id"] for c in json.loads(proc.stdout)["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_22", "CKV_K8S_20"} <= ids, ids
