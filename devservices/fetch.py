"""Where the dev services keep their files, and how their jars get there.

Kafka and the search node are plain Maven artifacts: a small POM shipped in this
package lists them, and ``mvn dependency:copy-dependencies`` copies the resolved
runtime classpath into ``<workdir>/<name>/lib``. A stamp file holding the POM's
hash makes a second fetch a no-op (milliseconds); changing the POM refetches.
Fetches go to a temporary directory first and are renamed into place, under a
file lock, so an interrupted or concurrent fetch never leaves a half-filled lib.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from devservices.errors import PrerequisiteMissing

ENV_WORKDIR = "PIPESENTRY_DEVSERVICES_DIR"
ENV_MAVEN_REPO = "PIPESENTRY_MAVEN_REPO_LOCAL"
ENV_JAVA = "PIPESENTRY_JAVA"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


@dataclass(frozen=True)
class JarSet:
    """A runtime classpath described by one POM of this package."""

    name: str
    pom: str  # package resource name

    def pom_text(self) -> str:
        return resources.files(__package__).joinpath(self.pom).read_text()

    def pom_property(self, key: str) -> str:
        match = re.search(rf"<{re.escape(key)}>([^<]+)</{re.escape(key)}>", self.pom_text())
        if match is None:
            raise ValueError(f"{self.pom} has no <{key}> property")
        return match.group(1).strip()


KAFKA_JARS = JarSet("kafka", "kafka-pom.xml")
OPENSEARCH_JARS = JarSet("opensearch", "opensearch-pom.xml")
ALL_JARSETS = (KAFKA_JARS, OPENSEARCH_JARS)


def devservices_dir() -> Path:
    """``$PIPESENTRY_DEVSERVICES_DIR``, else ``<repo>/.devservices`` (gitignored)."""
    override = os.environ.get(ENV_WORKDIR)
    if override:
        return Path(override).expanduser().resolve()
    repo = Path(__file__).resolve().parents[1]
    base = repo if (repo / "pyproject.toml").is_file() else Path.cwd()
    return base / ".devservices"


def lib_dir(jars: JarSet, workdir: Path | None = None) -> Path:
    return (workdir or devservices_dir()) / jars.name / "lib"


def classpath(jars: JarSet, workdir: Path | None = None) -> str:
    """The ``-cp`` argument for a fetched jar set; fails clearly when it was never fetched."""
    lib = lib_dir(jars, workdir)
    if not is_fetched(jars, workdir):
        raise PrerequisiteMissing(
            f"{jars.name} jars are not fetched into {lib}: run `python -m devservices fetch`"
        )
    return str(lib / "*")


def _stamp_path(jars: JarSet, workdir: Path | None) -> Path:
    return (workdir or devservices_dir()) / jars.name / ".stamp"


def _pom_digest(jars: JarSet) -> str:
    return hashlib.sha256(jars.pom_text().encode()).hexdigest()


def is_fetched(jars: JarSet, workdir: Path | None = None) -> bool:
    stamp = _stamp_path(jars, workdir)
    if not (stamp.is_file() and stamp.read_text().strip() == _pom_digest(jars)):
        return False
    return any(lib_dir(jars, workdir).glob("*.jar"))


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PrerequisiteMissing("Maven (`mvn`) is not on PATH: apt-get install maven")
    return mvn


def fetch(jars: JarSet, *, workdir: Path | None = None, maven_repo: Path | None = None) -> bool:
    """Make ``lib_dir(jars)`` hold the POM's runtime classpath. Returns True if it downloaded."""
    base = (workdir or devservices_dir()) / jars.name
    base.parent.mkdir(parents=True, exist_ok=True)
    with (base.parent / f".{jars.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_fetched(jars, workdir):
            return False
        staging = base.parent / f".{jars.name}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        pom = staging / "pom.xml"
        pom.write_text(jars.pom_text())
        argv = [
            _mvn(), "-B", "-q", "-f", str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={staging / 'lib'}",
            # Ride out a flaky connection to Central instead of failing the CI run.
            "-Dmaven.wagon.http.retryHandler.count=3",
        ]  # fmt: skip
        repo = maven_repo or (Path(os.environ[ENV_MAVEN_REPO]) if os.environ.get(ENV_MAVEN_REPO) else None)
        if repo is not None:
            argv.append(f"-Dmaven.repo.local={repo}")
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not any((staging / "lib").glob("*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise PrerequisiteMissing(
                f"fetching {jars.name} jars with Maven failed (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-4000:]}"
            )
        (staging / ".stamp").write_text(_pom_digest(jars) + "\n")
        if base.exists():
            shutil.rmtree(base)
        staging.rename(base)
        return True


def fetch_all(*, workdir: Path | None = None, maven_repo: Path | None = None) -> dict[str, float]:
    """Fetch every jar set; returns seconds spent per set (about 0 when already fetched)."""
    spent: dict[str, float] = {}
    for jars in ALL_JARSETS:
        began = time.monotonic()
        fetch(jars, workdir=workdir, maven_repo=maven_repo)
        spent[jars.name] = round(time.monotonic() - began, 2)
    return spent


@cache
def java_executable(min_major: int = 17) -> str:
    """``$PIPESENTRY_JAVA``, ``$JAVA_HOME/bin/java`` or ``java`` on PATH, at least ``min_major``."""
    candidates = [os.environ.get(ENV_JAVA)]
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    candidates.append(shutil.which("java"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and java_major(candidate) >= min_major:
            return candidate
    raise PrerequisiteMissing(
        f"no Java {min_major}+ found (set {ENV_JAVA} or JAVA_HOME): apt-get install openjdk-17-jre-headless"
    )


def java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def debian_binary(names: tuple[str, ...], package: str) -> str:
    """Path of the first of ``names`` on PATH; the error says which apt package provides it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise PrerequisiteMissing(
        f"{' / '.join(names)} not found on PATH: apt-get install {package} (or `make system-packages`)"
    )
