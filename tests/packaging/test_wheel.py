"""The built wheel works on its own: installed into a fresh venv (no checkout, no editable install),
``pipesentry --version`` answers, ``pipesentry demo`` finds every expected detection with the bundled
rule pack and native screen, and ``pipesentry run`` serves the embedded default. The wheel is one
abi3 wheel (CPython 3.11 and later) and carries the runtime only: no dev servers, no test helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import orjson
import pytest

from devservices.process import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(*cmd: str | Path, cwd: Path, timeout: float = 900, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout."""
    work = tmp_path_factory.mktemp("wheel")
    print("building the wheel (compiles the native screen; a few minutes on a cold cache)", file=sys.stderr)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", ROOT, cwd=work,
         env=_clean_env())
    [built] = (work / "dist").glob("pipesentry-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/`` of a fresh venv with the wheel installed into it."""
    work = tmp_path_factory.mktemp("venv")
    env = _clean_env()
    _run(sys.executable, "-m", "venv", work / "venv", cwd=work, env=env)
    _run(work / "venv" / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=work, env=env)
    return work / "venv" / "bin"


TEST_HELPERS = ("conftest.py", "alerting_helpers.py", "fault_helpers.py", "fuzz_helpers.py", "fuzz_targets.py",
                "correlation_rules.py")


def test_the_wheel_is_one_abi3_wheel_of_the_runtime_only(wheel: Path):
    assert wheel.name.endswith("-cp311-abi3-linux_x86_64.whl"), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    packages = {name.split("/")[0] for name in names if "/" in name and ".dist-info/" not in name
                and ".data/" not in name}
    assert packages == {"detectors", "service"}, packages
    assert not [n for n in names if "devservices" in n or n.endswith(("-pom.xml", ".properties"))]
    assert not [n for n in names if n.rsplit("/", 1)[-1] in TEST_HELPERS or "/tests/" in f"/{n}"]
    assert [n for n in names if n.startswith("detectors/_native")] == ["detectors/_native.abi3.so"]
    console = {"service/console/templates/queue.html", "service/console/templates/base.html",
               "service/console/static/console.js", "service/console/static/console.css",
               "service/console/static/swagger-init.js"}
    assert console <= set(names), console - set(names)  # the console's files travel in the wheel


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH or rules override leaking in from the test run: only the venv's own files count."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIPESENTRY"))}


def test_the_wheel_carries_the_rule_pack_the_native_screen_and_the_licence(installed: Path, tmp_path: Path):
    env = _clean_env()
    assert "native screen: built" in _run(installed / "pipesentry", "--version", cwd=tmp_path, env=env)
    _run(installed / "pipesentry", "rules", "check", installed.parent / "share" / "pipesentry" / "sigma-rules",
         cwd=tmp_path, env=env)  # exits non-zero on any rule error
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    [licence] = site.glob("pipesentry-*.dist-info/**/LICENSE*")
    assert "Apache License" in licence.read_text()
    assert not (site / "tests").exists()


# The demo inside the venv's interpreter, which then reports the native screen it ran with.
DEMO_WITH_SCREEN = """
import sys
from service.cli import main
code = main(["demo", "--quiet", "--data-dir", sys.argv[1]])
import detectors._native as native
from detectors.sigma import screen, screen_abi
assert screen.AVAILABLE and native.ABI_VERSION == screen_abi.ABI_VERSION, "native screen not active"
print("native screen active:", native.__file__)
sys.exit(code)
"""


def test_the_installed_demo_raises_every_expected_detection_with_the_native_screen(installed: Path, tmp_path: Path):
    out = _run(installed / "python", "-c", DEMO_WITH_SCREEN, tmp_path / "data", cwd=tmp_path, env=_clean_env())
    assert "alerts written to" in out  # the demo exits non-zero when an expected detection is missing
    assert f"native screen active: {installed.parent}" in out and out.rstrip().endswith("_native.abi3.so")


def test_the_installed_service_serves_the_embedded_default(installed: Path, tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen([str(installed / "pipesentry"), "run", "--no-stdin", "--port", str(port),
                             "--data-dir", str(tmp_path / "data")], cwd=tmp_path, env=_clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # wait for readiness (rules compiled), not for a fixed time
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "pipesentry run never became ready"
            time.sleep(0.2)
        event = {"verb": "create", "objectRef": {"resource": "pods", "subresource": "exec", "namespace": "prod"},
                 "user": {"username": "mallory"}}
        request = urllib.request.Request(f"{base}/api/v1/events?product=kubernetes&service=audit",
                                         data=orjson.dumps(event), headers={"content-type": "application/x-ndjson"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            result = orjson.loads(answer.read())
        assert result["accepted"] == 1 and result["alerts"], result
        # the console and an offline /docs: every file they load comes from the installed packages
        for path in ("/sign-in", "/console/static/console.js", "/docs", "/console/swagger/swagger-ui-bundle.js"):
            with urllib.request.urlopen(base + path, timeout=30) as answer:
                assert answer.status == 200, path
    finally:
        proc.terminate()
        proc.wait(timeout=60)
