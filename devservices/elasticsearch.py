"""A single Elasticsearch 8 or 9 node on loopback, from Elastic's integration-test distribution.

The zips come from Maven Central (``elasticsearch-pom.xml``, unpacked by ``fetch``). They are a
real, runnable node (launcher, server, the entitlement agent in ``lib/``, modules
``transport-netty4``, ``x-pack-core``, ``x-pack-security``, ``apm``) without a bundled JDK and
without the optional modules (no data-stream REST endpoints, no ``GET /``: it answers 405).

Elasticsearch refuses to run as root, and CI runs as root: then the node runs as the system user
``pipesentry-es`` (created with ``useradd`` if missing). Its config, data, logs and temp dir live
in a runtime directory it owns, outside the caller's work dir (pytest's temp dirs are 0700, so
another user could not reach them); ``workdir/runtime`` links to it and it is removed at exit.
The shared, unpacked home must be readable by that user: when one of its parents is not (a
clone under ``/root``), it is copied once to ``/var/tmp``.

``security=True`` starts it with ``xpack.security.enabled`` and a file-realm superuser
(``bin/elasticsearch-users``): basic auth as ``.username``/``.password``, and API keys made
with them. HTTP stays plain on loopback unless ``tls`` is given: a :class:`NodeTLS` (the PEM files
of a CA and of a server certificate + key it signed for 127.0.0.1, made by the caller) turns on
``xpack.security.http.ssl`` with those files copied into the node's config dir (the node only
reads files there, and they must belong to its user); ``url`` is then ``https://`` and the
readiness probe verifies the certificate against that CA. Transport TLS stays off (one node).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pwd
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devservices.errors import PrerequisiteMissing, StartupFailed
from devservices.fetch import ELASTICSEARCH_DISTS, dist_home, fetch, java_home
from devservices.process import ManagedProcess, ServerHandle, free_port, port_open

START_TIMEOUT = 180.0
START_ATTEMPTS = 3
HEAP = "-Xms512m -Xmx512m"
SERVICE_USER = "pipesentry-es"
SUPERUSER = "pipesentry-admin"
# The JDKs each major runs on: 8.17 refuses JDK 24+, 9.x needs 21+.
JAVA_RANGES: dict[int, tuple[int, int | None]] = {8: (17, 23), 9: (21, None)}
_NODES: set[ElasticsearchNode] = set()


def version_for(major: int) -> str:
    """The version of ``major`` that ``elasticsearch-pom.xml`` pins."""
    for version in ELASTICSEARCH_DISTS.versions():
        if version.split(".")[0] == str(major):
            return version
    raise PrerequisiteMissing(f"elasticsearch-pom.xml pins no Elasticsearch {major}.x")


def _as_root() -> bool:
    return os.geteuid() == 0


def service_account() -> tuple[int, int] | None:
    """(uid, gid) to run the node as: ``pipesentry-es`` when we are root (created if missing), else None."""
    if not _as_root():
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        entry = None
    if entry is None:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise PrerequisiteMissing("running as root and `useradd` is missing: cannot make a user "
                                      "for Elasticsearch (it refuses root); apt-get install passwd")
        done = subprocess.run([useradd, "--system", "--user-group", "--no-create-home",
                               "--shell", "/usr/sbin/nologin", SERVICE_USER],
                              capture_output=True, text=True, check=False)
        if done.returncode not in (0, 9):  # 9: created meanwhile by a concurrent start
            raise PrerequisiteMissing(f"useradd {SERVICE_USER} failed: {done.stderr.strip()}")
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _reachable_by_others(path: Path) -> bool:
    """Whether every directory down to ``path`` lets any user traverse it (o+x)."""
    return all(part.stat().st_mode & 0o001 for part in [path, *path.parents])


def readable_home(version: str) -> Path:
    """The unpacked home of ``version``, copied once to /var/tmp if another user cannot reach it."""
    home = dist_home(ELASTICSEARCH_DISTS, version)
    if not _as_root() or _reachable_by_others(home):
        return home
    stamp = (home.parent.parent / ".stamp").read_text().strip()[:12]
    copy_root = Path("/var/tmp/pipesentry-devservices")
    copy_root.mkdir(mode=0o755, exist_ok=True)
    copy = copy_root / f"{home.name}-{stamp}"
    with (copy_root / f".{home.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (copy / "bin").is_dir():
            staging = copy_root / f".{home.name}.staging-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(home, staging, symlinks=True)
            staging.rename(copy)
    return copy


@dataclass(frozen=True)
class NodeTLS:
    """PEM files for HTTPS on the node: the CA, and the server certificate and (unencrypted) key it signed."""

    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A client context trusting only ``ca``."""
        return ssl.create_default_context(cafile=str(self.ca))


TLS_DIR = "tls"  # under the node's config dir; the paths in elasticsearch.yml are relative to it


def elasticsearch_yml(node: ElasticsearchNode) -> str:
    lines = {
        "cluster.name": "pipesentry-dev",
        "node.name": "node-1",
        "discovery.type": "single-node",
        "network.host": "127.0.0.1",
        "http.port": str(node.port),
        "transport.port": str(node.transport_port),
        "path.data": str(node.runtime_dir / "data"),
        "path.logs": str(node.runtime_dir / "logs"),
        "xpack.security.enabled": "true" if node.security else "false",
        # The disks of CI machines can be fuller than the default watermarks allow.
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "action.auto_create_index": "true",
    }
    if node.security:
        lines |= {"xpack.security.http.ssl.enabled": "true" if node.tls else "false",
                  "xpack.security.transport.ssl.enabled": "false",
                  "xpack.security.authc.api_key.enabled": "true"}
    if node.security and node.tls:
        lines |= {"xpack.security.http.ssl.certificate": f"{TLS_DIR}/http.crt",
                  "xpack.security.http.ssl.key": f"{TLS_DIR}/http.key",
                  "xpack.security.http.ssl.certificate_authorities": f"{TLS_DIR}/ca.crt"}
    return "".join(f"{key}: {value}\n" for key, value in lines.items())


@dataclass(eq=False)
class ElasticsearchNode(ServerHandle):
    """A running node. ``url`` is ``http://127.0.0.1:PORT``; ``flavor`` is "elasticsearch"."""

    workdir: Path
    major: int
    port: int
    transport_port: int
    runtime_dir: Path
    security: bool = False
    tls: NodeTLS | None = None
    flavor: str = "elasticsearch"
    version: str = ""
    username: str | None = None
    password: str | None = None
    start_seconds: float = 0.0
    _process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What ``httpx`` needs to reach the node: a context trusting the node's CA when it serves TLS."""
        return self.tls.context() if self.tls else True

    @property
    def log_path(self) -> Path:
        return self.workdir / "elasticsearch.log"

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None

    @classmethod
    def start(
        cls, workdir: Path, major: int = 8, *, security: bool = False, tls: NodeTLS | None = None,
        timeout: float = START_TIMEOUT,
    ) -> ElasticsearchNode:
        """Start a fresh single node of Elasticsearch ``major`` (8 or 9) under ``workdir``;
        ``tls`` (HTTPS with the caller's CA and certificate) needs ``security``."""
        if tls is not None and not security:
            raise ValueError("tls needs security=True: Elasticsearch serves HTTPS only with security on")
        began = time.monotonic()
        fetch(ELASTICSEARCH_DISTS)
        version = version_for(major)
        home = readable_home(version)
        java = java_home(*JAVA_RANGES.get(major, (21, None)))
        account = service_account()
        for attempt in range(1, START_ATTEMPTS + 1):
            runtime = Path(tempfile.mkdtemp(prefix=f"pipesentry-es{major}-"))
            node = cls(workdir=workdir / f"node-{attempt}", major=major, port=free_port(),
                       transport_port=free_port(), runtime_dir=runtime, security=security, tls=tls)
            _NODES.add(node)
            node.workdir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                (node.workdir / "runtime").symlink_to(runtime)
            node._prepare(home, account)
            try:
                node._launch(home, java, account, timeout)
                node.start_seconds = round(time.monotonic() - began, 2)
                return node
            except StartupFailed as exc:
                lost_port = port_open(node.port) or port_open(node.transport_port)
                if attempt == START_ATTEMPTS or not (exc.retriable or lost_port):
                    raise
        raise AssertionError("unreachable")

    def _env(self, java: Path | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ES_", "JAVA_"))}
        env |= {"ES_PATH_CONF": str(self.runtime_dir / "config"), "ES_TMPDIR": str(self.runtime_dir / "tmp"),
                "ES_JAVA_OPTS": HEAP, "HOME": str(self.runtime_dir)}
        if java is not None:
            env["ES_JAVA_HOME"] = str(java)
        return env

    def _prepare(self, home: Path, account: tuple[int, int] | None) -> None:
        """Config (copied from the home), data, logs and tmp in the runtime dir, owned by the node's user."""
        shutil.copytree(home / "config", self.runtime_dir / "config")
        for name in ("data", "logs", "tmp"):
            (self.runtime_dir / name).mkdir()
        (self.runtime_dir / "config" / "elasticsearch.yml").write_text(elasticsearch_yml(self))
        if self.tls is not None:
            tls_dir = self.runtime_dir / "config" / TLS_DIR
            tls_dir.mkdir()
            for source, name in ((self.tls.ca, "ca.crt"), (self.tls.cert, "http.crt"), (self.tls.key, "http.key")):
                shutil.copyfile(source, tls_dir / name)
                (tls_dir / name).chmod(0o600 if name.endswith(".key") else 0o640)
        if self.security:
            self.username, self.password = SUPERUSER, secrets.token_urlsafe(18)
            java = java_home(*JAVA_RANGES.get(self.major, (21, None)))
            done = subprocess.run(
                [str(home / "bin" / "elasticsearch-users"), "useradd", self.username, "-r", "superuser"],
                input=f"{self.password}\n{self.password}\n",
                env=self._env(java) | {"ES_JAVA_OPTS": "-Xmx128m"},
                capture_output=True, text=True, check=False, timeout=120,
            )  # fmt: skip
            if done.returncode != 0:
                raise StartupFailed(f"elasticsearch-users useradd failed (exit {done.returncode}): "
                                    f"{(done.stdout + done.stderr)[-2000:]}")
        self.runtime_dir.chmod(0o750)
        if account is not None:
            uid, gid = account
            for path in [self.runtime_dir, *self.runtime_dir.rglob("*")]:
                os.chown(path, uid, gid, follow_symlinks=False)

    def _launch(self, home: Path, java: Path, account: tuple[int, int] | None, timeout: float) -> None:
        argv = [str(home / "bin" / "elasticsearch")]
        self._process = ManagedProcess.spawn(
            f"elasticsearch{self.major}", argv, self.log_path, cwd=self.runtime_dir, env=self._env(java),
            run_as=account,
        )
        self._process.wait_ready(self._healthy, timeout, "cluster health yellow")
        self.version = self.info()["version"]["number"]

    def _healthy(self) -> bool:
        response = httpx.get(f"{self.url}/_cluster/health", params={"wait_for_status": "yellow", "timeout": "1s"},
                             auth=self.auth, verify=self.verify, timeout=5)
        return response.status_code == 200 and response.json().get("status") in ("yellow", "green")

    def info(self) -> dict[str, Any]:
        """``GET /`` where the node answers it; this distribution answers 405, so it is rebuilt
        from ``GET /_nodes/_local`` (cluster name, version number, build flavor)."""
        response = httpx.get(self.url, auth=self.auth, verify=self.verify, timeout=10)
        if response.status_code != 405:
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body
        nodes = httpx.get(f"{self.url}/_nodes/_local", auth=self.auth, verify=self.verify, timeout=10)
        nodes.raise_for_status()
        local = nodes.json()
        (node,) = local["nodes"].values()
        return {"name": node["name"], "cluster_name": local["cluster_name"],
                "version": {"number": node["version"], "build_flavor": node.get("build_flavor"),
                            "build_type": node.get("build_type")}}

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._healthy():
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                raise StartupFailed(f"elasticsearch at {self.url} is not healthy after {timeout:.0f}s")
            time.sleep(0.2)

    def restart(self, *, timeout: float = START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same ports with the same data."""
        self.stop()
        self._launch(readable_home(self.version or version_for(self.major)),
                     java_home(*JAVA_RANGES.get(self.major, (21, None))), service_account(), timeout)

    def remove(self) -> None:
        """Stop and delete the runtime dir (data, logs)."""
        self.stop()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        _NODES.discard(self)


@atexit.register
def _remove_runtime_dirs() -> None:
    # Registered after process.py's hook, so it runs first: kill the nodes before deleting their data.
    for node in list(_NODES):
        node.kill()
        shutil.rmtree(node.runtime_dir, ignore_errors=True)
