"""Where the dev services keep their files, and how their jars get there.

Kafka and the search node are plain Maven artifacts: a small POM shipped in this
package lists them, and ``mvn dependency:copy-dependencies`` copies the resolved
runtime classpath into ``<workdir>/<name>/lib``. Elasticsearch is a distribution zip
per version (:class:`DistSet`): ``mvn dependency:copy`` fetches each one and it is
unpacked into ``<workdir>/elasticsearch/dist/elasticsearch-<version>``. A stamp file
holding the POM's hash makes a second fetch a no-op (milliseconds); changing the POM
refetches.
Fetches go to a temporary directory first and are renamed into place, under a
file lock, so an interrupted or concurrent fetch never leaves a half-filled lib.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
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


@dataclass(frozen=True)
class DistSet(JarSet):
    """Server distribution zips, one per version property of the POM, unpacked side by side.

    The POM documents the artifact and pins the versions; ``copy-dependencies`` cannot be used
    (Maven keeps one version of an artifact per resolution), so each zip is ``dependency:copy``-ed.
    """

    artifact: str = ""  # groupId:artifactId
    version_properties: tuple[str, ...] = ()

    def versions(self) -> list[str]:
        return [self.pom_property(key) for key in self.version_properties]


KAFKA_JARS = JarSet("kafka", "kafka-pom.xml")
OPENSEARCH_JARS = JarSet("opensearch", "opensearch-pom.xml")
ELASTICSEARCH_DISTS = DistSet(
    "elasticsearch", "elasticsearch-pom.xml",
    artifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch",
    version_properties=("elasticsearch8.version", "elasticsearch9.version"),
)  # fmt: skip
ALL_JARSETS: tuple[JarSet, ...] = (KAFKA_JARS, OPENSEARCH_JARS, ELASTICSEARCH_DISTS)
Progress = Callable[[str], None]


def print_progress(message: str) -> None:
    """The default progress reporter of ``fetch``: one line on stderr, at once."""
    print(f"devservices: {message}", file=sys.stderr, flush=True)


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


def dist_home(dists: DistSet, version: str, workdir: Path | None = None) -> Path:
    """Where ``fetch`` unpacked one version of a distribution (its ``ES_HOME``, say)."""
    return (workdir or devservices_dir()) / dists.name / "dist" / f"{dists.name}-{version}"


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
    if isinstance(jars, DistSet):
        return all((dist_home(jars, v, workdir) / "bin").is_dir() for v in jars.versions())
    return any(lib_dir(jars, workdir).glob("*.jar"))


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PrerequisiteMissing("Maven (`mvn`) is not on PATH: apt-get install maven")
    return mvn


def _maven_repo_args(maven_repo: Path | None) -> list[str]:
    repo = maven_repo or (Path(os.environ[ENV_MAVEN_REPO]) if os.environ.get(ENV_MAVEN_REPO) else None)
    return [f"-Dmaven.repo.local={repo}"] if repo is not None else []


def _unzip(archive: Path, into: Path) -> None:
    """Unpack keeping the archive's Unix modes (``zipfile`` drops them), readable by everyone.

    Readable by all: Elasticsearch runs as an unprivileged user that must read its home.
    """
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            target = into / info.filename
            if not target.resolve().is_relative_to(into.resolve()):
                raise PrerequisiteMissing(f"{archive.name}: entry {info.filename!r} escapes the target")
            zipped.extract(info, into)
            mode = (info.external_attr >> 16) & 0o777
            if info.is_dir() or mode & stat.S_IXUSR:
                mode |= 0o755
            else:
                mode |= 0o644
            target.chmod(mode)


def _fetch_dists(dists: DistSet, staging: Path, maven_repo: Path | None, progress: Progress | None) -> None:
    zips = staging / "zips"
    for version in dists.versions():
        if progress:
            progress(f"fetching {dists.artifact}:{version}:zip (about 95 MB) with Maven")
        argv = [
            _mvn(), "-B", "-q", "-f", str(staging / "pom.xml"), f"{DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={dists.artifact}:{version}:zip", f"-DoutputDirectory={zips}",
            "-Dmaven.wagon.http.retryHandler.count=3", *_maven_repo_args(maven_repo),
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        archives = list(zips.glob(f"*-{version}.zip"))
        if done.returncode != 0 or not archives:
            raise PrerequisiteMissing(
                f"fetching {dists.artifact}:{version}:zip with Maven failed (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-4000:]}"
            )
        if progress:
            progress(f"unpacking {archives[0].name}")
        (staging / "dist").mkdir(exist_ok=True)
        _unzip(archives[0], staging / "dist")
        archives[0].unlink()
        if not (staging / "dist" / f"{dists.name}-{version}" / "bin").is_dir():
            raise PrerequisiteMissing(f"{archives[0].name} has no {dists.name}-{version}/bin directory")
    shutil.rmtree(zips, ignore_errors=True)


def fetch(
    jars: JarSet,
    *,
    workdir: Path | None = None,
    maven_repo: Path | None = None,
    progress: Progress | None = None,
) -> bool:
    """Make ``lib_dir(jars)`` hold the POM's runtime classpath (for a :class:`DistSet`: unpack
    every version under ``dist/``). Returns True if it downloaded."""
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
        if isinstance(jars, DistSet):
            try:
                _fetch_dists(jars, staging, maven_repo, progress)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            (staging / ".stamp").write_text(_pom_digest(jars) + "\n")
            staging.chmod(0o755)
            if base.exists():
                shutil.rmtree(base)
            staging.rename(base)
            return True
        if progress:
            progress(f"fetching the {jars.name} jars with Maven")
        argv = [
            _mvn(), "-B", "-q", "-f", str(pom),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={staging / 'lib'}",
            # Ride out a flaky connection to Central instead of failing the CI run.
            "-Dmaven.wagon.http.retryHandler.count=3", *_maven_repo_args(maven_repo),
        ]  # fmt: skip
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


def fetch_all(
    *, workdir: Path | None = None, maven_repo: Path | None = None, progress: Progress | None = None
) -> dict[str, float]:
    """Fetch every jar set; returns seconds spent per set (about 0 when already fetched)."""
    spent: dict[str, float] = {}
    for jars in ALL_JARSETS:
        began = time.monotonic()
        fetched = fetch(jars, workdir=workdir, maven_repo=maven_repo, progress=progress)
        if progress:
            progress(f"{jars.name}: {'fetched' if fetched else 'already fetched'} "
                     f"({time.monotonic() - began:.1f}s)")
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


JDK_DIRS = (Path("/usr/lib/jvm"), Path("/opt"), Path("/opt/java"))


@cache
def java_home(min_major: int, max_major: int | None = None) -> Path:
    """A JDK home whose ``bin/java`` is ``min_major``..``max_major``: ``$PIPESENTRY_JAVA`` and
    ``$JAVA_HOME`` first, then ``java`` on PATH, then every JDK under /usr/lib/jvm and /opt.

    Elasticsearch needs this: 8.x refuses the newest JDKs, 9.x needs Java 21+, and its launcher
    takes a home (``ES_JAVA_HOME``), not a binary.
    """
    candidates: list[Path] = []
    for java in (os.environ.get(ENV_JAVA), shutil.which("java")):
        if java:
            candidates.append(Path(java).resolve().parent.parent)
    if os.environ.get("JAVA_HOME"):
        candidates.insert(1, Path(os.environ["JAVA_HOME"]))
    for root in JDK_DIRS:
        if root.is_dir():
            candidates.extend(sorted(p for p in root.iterdir() if (p / "bin" / "java").is_file()))
    for home in candidates:
        binary = home / "bin" / "java"
        if not os.access(binary, os.X_OK):
            continue
        major = java_major(str(binary))
        if major >= min_major and (max_major is None or major <= max_major):
            return home
    wanted = f"{min_major}-{max_major}" if max_major else f"{min_major}+"
    raise PrerequisiteMissing(
        f"no Java {wanted} JDK found ({ENV_JAVA}, JAVA_HOME, PATH, {', '.join(map(str, JDK_DIRS))}): "
        f"install one (e.g. apt-get install openjdk-{min_major}-jdk-headless)"
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
