"""The container image definition: hadolint, its structure (multi-stage, non-root,
read-only root, health check), and the constraints file that pins its dependencies."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from service.config import load_settings
from tests.deploy import tools
from tests.deploy.tools import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"
CONSTRAINTS = DEPLOY / "constraints.txt"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def final() -> list[tuple[str, str]]:
    return stages()[-1]


def named(name: str) -> list[tuple[str, str]]:
    [stage] = [stage for stage in stages() if stage[0][1].endswith(f" AS {name}")]
    return stage


def values(stage: list[tuple[str, str]], word: str) -> list[str]:
    return [args for w, args in stage if w == word]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in values(stage, "ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def test_hadolint_reports_no_errors_or_warnings() -> None:
    proc = tools.run([tools.require("hadolint"), "--format", "json", DOCKERFILE])
    findings = json.loads(proc.stdout or "[]")
    bad = [f for f in findings if f["level"] in {"error", "warning"}]
    assert not bad, "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in bad)


def test_multi_stage_on_slim_python_311() -> None:
    """Python stages on slim 3.11; one Rust stage builds the native screen for the build stage.
    Fully qualified names: buildah and podman resolve no short names unless configured to."""
    froms = [args for stage in stages() for w, args in stage if w == "FROM"]
    assert len(froms) >= 2
    python = [image for image in froms if not image.startswith("docker.io/library/rust:")]
    assert [image for image in froms if image not in python] == [
        "docker.io/library/rust:1.95.0-slim-bookworm AS native"]
    for image in python:
        assert re.match(r"docker\.io/library/python:3\.11\.\d+-slim", image), image
    assert any("--from=build" in args for args in values(final(), "COPY"))
    assert not any("--from=native" in args for args in values(final(), "COPY"))


def test_the_image_carries_the_native_screen() -> None:
    build = named("build")
    copies = values(build, "COPY")
    assert any(args.startswith("--from=native") and args.endswith("detectors/_native.abi3.so") for args in copies)
    assert any("s.AVAILABLE" in args for args in values(build, "RUN")), "the build checks it imports"
    cargo = DEPLOY.parent / "detectors" / "native" / "Cargo.toml"
    assert "abi3 = [\"pyo3/abi3-py311\"]" in cargo.read_text(encoding="utf-8")


def test_final_stage_has_no_build_tools_and_runs_as_non_root() -> None:
    stage = final()
    runs = " ".join(values(stage, "RUN"))
    for tool in ("apt-get", "gcc", "build-essential", "make ", "pip install"):
        assert tool not in runs, f"final stage runs {tool!r}"
    [user] = values(stage, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, "numeric non-root uid (runAsNonRoot can verify it)"
    after_user = [w for w, _ in stage[[w for w, _ in stage].index("USER"):]]
    assert "RUN" not in after_user


def test_only_the_data_dir_is_writable() -> None:
    stage = final()
    env = env_of(stage)
    data_dir = env["PIPESENTRY_DATA_DIR"]
    assert values(stage, "VOLUME") == [f'["{data_dir}"]']
    runs = " ".join(values(stage, "RUN"))
    assert f"chown 10001:10001 {data_dir}" in runs
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "no .pyc writes into a read-only root"


def test_healthcheck_uses_python_on_healthz() -> None:
    stage = final()
    [check] = values(stage, "HEALTHCHECK")
    assert "CMD" in check and '"python"' in check
    assert "curl" not in check and "wget" not in check
    assert env_of(stage)["HEALTHCHECK_URL"].endswith(":8080/healthz")
    assert "urlopen(os.environ['HEALTHCHECK_URL']" in check


def test_default_command_and_baked_config(monkeypatch: pytest.MonkeyPatch) -> None:
    stage = final()
    [entry] = values(stage, "ENTRYPOINT")
    [cmd] = values(stage, "CMD")
    assert json.loads(entry) == ["pipesentry"]
    args = json.loads(cmd)
    from service.cli import build_parser

    parsed = build_parser().parse_args(args)
    assert parsed.command == "run"
    copied = {a.split()[-1]: a.split()[-2] for a in values(stage, "COPY") if "--from" not in a}
    baked = ROOT / copied[str(parsed.config)]
    for key in [k for k in os.environ if k.upper().startswith("PIPESENTRY_")]:
        monkeypatch.delenv(key)
    for key, value in env_of(stage).items():
        if key.startswith("PIPESENTRY_"):
            monkeypatch.setenv(key, value)
    settings = load_settings(baked)
    assert settings.api.host == "0.0.0.0" and settings.api.port == 8080
    assert str(settings.data_dir) == env_of(stage)["PIPESENTRY_DATA_DIR"]
    assert settings.stdin.enabled is False


def test_rules_are_installed_where_the_service_looks() -> None:
    build = named("build")
    rules_copy = next(a for a in values(build, "COPY") if a.startswith("sigma-rules "))
    # service.rules.default_rules_dir: <sys.prefix>/share/pipesentry/sigma-rules; the venv is the prefix.
    assert rules_copy.split()[-1] == "/opt/pipesentry/share/pipesentry/sigma-rules"
    assert any("venv /opt/pipesentry" in r for r in values(build, "RUN"))
    assert env_of(final())["PIPESENTRY_RULES_DIR"] == "/opt/pipesentry/share/pipesentry/sigma-rules"


def test_dependencies_install_from_the_constraints_as_binary_wheels() -> None:
    runs = " ".join(values(named("build"), "RUN"))
    assert "--only-binary=:all:" in runs
    assert "--constraint /src/deploy/constraints.txt" in runs
    assert "--no-deps /src" in runs, "the project itself must not pull unpinned dependencies"


def test_dockerignore_lets_every_copied_path_through() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert "*" in ignore, "the ignore file starts from nothing and lists what the build needs"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in stages():
        for args in values(stage, "COPY"):
            if "--from" in args:
                continue
            for src in args.split()[:-1]:
                path = src.rstrip("/")
                assert any(path == a or path.startswith(a + "/") for a in allowed), (
                    f"COPY {src} is excluded by Dockerfile.dockerignore")
                assert (ROOT / src).exists(), f"COPY {src}: no such path"


def pins() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {line}"
            out[canonicalize_name(name)] = Version(version)
    return out


def test_constraints_pin_every_runtime_dependency_within_pyproject_ranges() -> None:
    pinned = pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for text in project["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not pinned in deploy/constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} violates {req}"
    tools_only = {"pytest", "pytest-asyncio", "ruff", "mypy", "sigma-cli"}  # dev extras nothing at runtime needs
    assert not tools_only & set(pinned), f"dev tools in the image: {sorted(tools_only & set(pinned))}"


def test_constraints_are_closed_under_requirements() -> None:
    """Every requirement of a pinned package is pinned too. Checked with the metadata of the
    installed distributions whose version equals the pin (others describe another version)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_constraints", DEPLOY / "constraints.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pinned = pins()
    checked = 0
    for name, version in pinned.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version) != version:
            continue
        checked += 1
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**module.TARGET, "extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            assert dep in pinned, f"{name} needs {req}, not pinned: run python deploy/constraints.py"
            assert req.specifier.contains(pinned[dep], prereleases=True), f"{name} needs {req}, pinned {pinned[dep]}"
    assert checked, "no pin matches the installed environment: run python deploy/constraints.py"


def healthcheck_command() -> list[str]:
    [check] = values(final(), "HEALTHCHECK")
    return json.loads(check[check.index("CMD") + 3:].strip())


def test_healthcheck_command_follows_the_service(tmp_path: Path) -> None:
    """The image's HEALTHCHECK one-liner against ``pipesentry run`` with the baked settings:
    healthy while it serves, unhealthy once it is gone."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIPESENTRY_")}
    env.update({"PIPESENTRY_DATA_DIR": str(tmp_path / "data"), "PIPESENTRY_API__HOST": "127.0.0.1",
                "PIPESENTRY_API__PORT": str(port), "HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthz"})
    command = healthcheck_command()
    assert command[0] == "python"
    probe = [sys.executable, *command[1:]]
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "run", "--config",
                               str(DEPLOY / "docker" / "config.yaml")],
                              env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            result = subprocess.run(probe, env=env, capture_output=True, timeout=30, check=False)
            if result.returncode == 0:
                break
            assert server.poll() is None, f"pipesentry exited: {server.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "pipesentry never became healthy"
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stderr:
            server.stderr.close()
    assert subprocess.run(probe, env=env, capture_output=True, timeout=30, check=False).returncode != 0


def arg_defaults(stage: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for args in values(stage, "ARG"):
        name, _, default = args.partition("=")
        out[name] = default
    return out


def labels(stage: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for args in values(stage, "LABEL"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            out[key] = value
    return out


def test_oci_labels_carry_source_version_and_revision_from_build_args() -> None:
    stage = final()
    found = labels(stage)
    args = arg_defaults(stage)
    assert found["org.opencontainers.image.source"] == "${SOURCE}"
    assert found["org.opencontainers.image.version"] == "${VERSION}"
    assert found["org.opencontainers.image.revision"] == "${REVISION}"
    assert args["SOURCE"].startswith("https://")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert args["VERSION"] == project["version"], "VERSION defaults to the release in pyproject.toml"
    assert "REVISION" in args
    # An ARG is visible from where it is declared in its stage on: before the LABEL.
    words = [w for w, _ in stage]
    assert max(i for i, w in enumerate(words) if w == "ARG") < words.index("LABEL")
    for key in ("title", "description", "licenses"):
        assert found[f"org.opencontainers.image.{key}"], key


SBOM_PATH = "/opt/pipesentry/share/pipesentry/sbom.cdx.json"
SBOM_TOOL_PINS = DEPLOY / "sbom-requirements.txt"


def sbom_command() -> list[str]:
    """The cyclonedx-py command line of the build stage."""
    for args in values(named("build"), "RUN"):
        for part in args.split("&&"):
            words = shlex.split(part)
            if words and words[0].endswith("/cyclonedx-py"):
                return words
    pytest.fail("the build stage writes no SBOM")


def test_the_sbom_is_written_from_the_shipped_virtualenv() -> None:
    build = named("build")
    runs = values(build, "RUN")
    command = sbom_command()
    assert command[1] == "environment" and command[-1] == "/opt/pipesentry/bin/python"
    assert command[command.index("--output-file") + 1] == SBOM_PATH
    assert command[command.index("--output-format") + 1] == "JSON"
    assert "--output-reproducible" in command
    # After pip and setuptools leave the venv, so it lists what ships and nothing else.
    uninstall = next(i for i, r in enumerate(runs) if "pip uninstall -y pip setuptools wheel" in r)
    writes = next(i for i, r in enumerate(runs) if "cyclonedx-py environment" in r)
    assert uninstall < writes
    # The tool has its own venv outside /opt/pipesentry, which the runtime stage copies whole.
    assert "venv /opt/sbom-tool" in runs[writes] and command[0].startswith("/opt/sbom-tool/")
    assert any(a == "--from=build /opt/pipesentry /opt/pipesentry" for a in values(final(), "COPY"))
    assert "--requirement /src/deploy/sbom-requirements.txt" in runs[writes]


def test_the_sbom_tool_is_pinned() -> None:
    lines = [line for line in SBOM_TOOL_PINS.read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    pinned = {}
    for line in lines:
        name, sep, version = line.partition("==")
        assert sep and Version(version), f"not an exact pin: {line}"
        pinned[canonicalize_name(name)] = version
    assert "cyclonedx-bom" in pinned


def test_the_sbom_command_lists_the_pinned_dependencies(tmp_path: Path) -> None:
    """The build stage's command line, run by the same pinned tool against this interpreter's
    environment (which holds the pins the image installs): a CycloneDX document naming the
    project and every pinned runtime dependency at its version, with a PyPI package URL."""
    command = sbom_command()
    out = tmp_path / "sbom.cdx.json"
    local = [str(tools.require("cyclonedx-py")), *command[1:]]
    local[local.index("--output-file") + 1] = str(out)
    local[local.index("--pyproject") + 1] = str(ROOT / "pyproject.toml")
    local[-1] = sys.executable
    proc = tools.run(local, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bom = json.loads(out.read_text(encoding="utf-8"))
    assert bom["bomFormat"] == "CycloneDX"
    assert (bom["metadata"]["component"]["name"], bom["metadata"]["component"]["version"]) == ("pipesentry", "0.1.0")
    components = {canonicalize_name(c["name"]): c for c in bom["components"]}
    checked = 0
    for name, version in pins().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
        if installed != version:
            continue
        checked += 1
        assert Version(components[name]["version"]) == version, name
        assert components[name]["purl"].startswith(f"pkg:pypi/{name}@"), components[name]["purl"]
    assert checked, "no pin matches the installed environment: run python deploy/constraints.py"
