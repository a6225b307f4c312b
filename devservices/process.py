"""One server process: its own process group, its log file, a readiness wait, a stop.

Each server runs in a new session (``start_new_session``) so that stopping it kills
the whole group (the JVM and anything it forked). Processes started from the main
thread also get ``PR_SET_PDEATHSIG`` so they die with the Python process that
started them even if it is killed without running its finalizers; every process
still alive at interpreter exit is killed by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from devservices.errors import PortLost, StartupFailed

_PR_SET_PDEATHSIG = 1
_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_clash(log_text: str) -> bool:
    """Whether a server log shows it lost a race for its port (worth retrying on new ports)."""
    return "Address already in use" in log_text or "BindException" in log_text


# Resolved once in the parent: the child between fork and exec should do as little as possible.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


@dataclass(eq=False)
class ManagedProcess:
    """A started server process whose output goes to ``log_path``."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    log_offset: int = 0  # where this run's output starts (restarts append to the same log)
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        keep_stdin_open: bool = False,
        run_as: tuple[int, int] | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` in its own session; ``keep_stdin_open`` for servers that quit on stdin EOF;
        ``run_as`` (uid, gid) for servers that refuse root (we must be root then)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        in_main_thread = threading.current_thread() is threading.main_thread()
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if keep_stdin_open else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                # Tied to the forking thread, so only safe from the main thread.
                preexec_fn=_die_with_parent if in_main_thread else None,
                user=run_as[0] if run_as else None,
                group=run_as[1] if run_as else None,
                extra_groups=[] if run_as else None,
            )
        proc = cls(name=name, argv=list(argv), log_path=log_path, popen=popen, log_offset=log_offset)
        with _LIVE_LOCK:
            _LIVE.add(proc)
        return proc

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines this run wrote to its log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``probe`` until it returns True; fail early if the process exits or cannot bind."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self.alive() and port_clash(self.log_tail(10_000)):
                self.kill()
                raise PortLost(f"{self.name} could not bind its ports before {what}; log {self.log_path}:\n"
                               f"{self.log_tail()}")
            if not self.alive():
                output = self.log_tail(10_000)
                failure = PortLost if port_clash(output) else StartupFailed
                raise failure(f"{self.name} exited with code {self.popen.returncode} before {what}; "
                              f"log {self.log_path}:\n{self.log_tail()}")
            try:
                if probe():
                    return
            except Exception:  # a probe failing is the normal "not yet" answer
                pass
            if time.monotonic() >= deadline:
                self.kill()
                raise StartupFailed(
                    f"{self.name} did not reach '{what}' within {timeout:.0f}s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, wait for a clean exit, SIGKILL after ``timeout``. Idempotent."""
        if self._stopped:
            return
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._finish()

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, for fault tests). Idempotent."""
        if self._stopped:
            return
        self._finish()

    def _finish(self) -> None:
        # Children may outlive the leader: always sweep the group with SIGKILL.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._stopped = True
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        with _LIVE_LOCK:
            _LIVE.discard(self)


class ServerHandle:
    """Lifecycle every dev server shares: it holds the :class:`ManagedProcess` it started."""

    _process: ManagedProcess | None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.alive()

    def stop(self) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after 20 s). Idempotent."""
        if self._process is not None:
            self._process.stop()

    def kill(self) -> None:
        """SIGKILL: a crash or an outage, for fault tests. Idempotent."""
        if self._process is not None:
            self._process.kill()


@dataclass(eq=False)
class HttpServerHandle(ServerHandle):
    """A single-binary HTTP server on a loopback port, with its files and log under ``workdir``."""

    LOG_NAME: ClassVar[str]
    workdir: Path
    port: int
    _process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / self.LOG_NAME


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE)
    for proc in leftovers:
        proc.kill()
