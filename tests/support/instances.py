"""A pipesentry service under test: in this event loop (:class:`InProcess`) or as a child process.

:class:`ServiceProcess` is ``pipesentry run --config FILE`` as a child process whose stdout sink
prints one JSON line per alert (a SIGKILL may cut the last line; it is skipped). The integration
tests and the crash-points bench (``bench/crash_points.py``) both drive it; :class:`Instance` adds
a private API port and the readiness and metrics reads of the integration tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from devservices.process import free_port
from tests.support.routers import RecordingRouter
from tests.support.rules import PIPED_SCRIPT_RULE, ROOT_LOGIN_FAILURE_RULE


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


class ServiceProcess:
    """One ``pipesentry run --config`` child process, its stdout (alerts) and stderr (log) in files.

    The environment is the parent's without ``PIPESENTRY_*``, so only the config file configures it.
    """

    def __init__(self, config_path: Path, stdout: Path, stderr: Path) -> None:
        self.config_path = config_path
        self.stdout = stdout
        self.stderr = stderr
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPESENTRY_")}
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "run", "--config",
                                          str(self.config_path)], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=env)

    def alerts(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout.read_bytes().splitlines():
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut by SIGKILL
            if isinstance(doc, dict) and "alert_id" in doc:
                out.append(doc)
        return out

    def alert_ids(self) -> list[str]:
        return [doc["alert_id"] for doc in self.alerts()]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")[-4000:]


class Instance(ServiceProcess):
    """``pipesentry run`` in ``tmp_path/name`` with its own data dir and API port, started at once.

    The config's ``api`` keys (tokens) are kept; ``port``, ``data_dir`` and ``stdin`` are the instance's.
    ``suffix`` names the files of another run on the same directory (see :meth:`restarted`);
    ``state_dir``: the data dir's ``state`` is a link to it (a volume the group's instances share).
    """

    def __init__(self, tmp_path: Path, name: str, config: dict[str, Any], suffix: str = "",
                 state_dir: Path | None = None) -> None:
        self.dir = tmp_path / name
        self.dir.mkdir(exist_ok=bool(suffix))
        if state_dir is not None and not (self.dir / "data" / "state").exists():
            (self.dir / "data").mkdir(exist_ok=True)
            (self.dir / "data" / "state").symlink_to(state_dir, target_is_directory=True)
        self.port = free_port()
        self.config = {**config, "data_dir": str(self.dir / "data"), "stdin": {"enabled": False},
                       "api": {**config.get("api", {}), "port": self.port}}
        super().__init__(write_config(self.dir / f"pipesentry{suffix}.yml", self.config),
                         self.dir / f"stdout{suffix}.jsonl", self.dir / f"stderr{suffix}.log")
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def restarted(self) -> Instance:
        """A new process on the same directory, data dir and config (a new API port)."""
        return Instance(self.dir.parent, self.dir.name, self.config, suffix="-restart")

    async def get(self, path: str) -> httpx.Response | None:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return await client.get(self.url + path)
        except httpx.HTTPError:
            return None

    async def ready(self) -> bool:
        response = await self.get("/readyz")
        return response is not None and response.status_code == 200

    async def metric(self, name: str) -> float:
        response = await self.get("/metrics")
        assert response is not None
        for line in response.text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


class InProcess:
    """A ``Service`` running in this event loop, with a recording wrapper around the real alert router."""

    def __init__(self, settings: Any) -> None:
        from service.alerting.router import AlertRouter
        from service.app import Service

        self.router = RecordingRouter(AlertRouter(settings.alerting, settings.data_dir))
        self.service = Service(settings, router=self.router)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InProcess:
        await self.service.build()
        self.task = asyncio.create_task(self.service.run(install_signals=False))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.service.request_stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 60)

    def ids_by_token(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for alert in self.router.alerts:
            out.setdefault(alert.origin.token(), set()).add(alert.id)
        return out


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def rules_dir(tmp_path: Path, *texts: str) -> Path:
    """``tmp_path/rules`` holding one file per rule text (default: the piped-script rule)."""
    path = tmp_path / "rules"
    path.mkdir(exist_ok=True)
    for index, text in enumerate(texts or (PIPED_SCRIPT_RULE,)):
        (path / f"rule{index}.yml").write_text(text)
    return path


def kafka_settings(tmp_path: Path, bootstrap: str, topics: dict[str, Any], **kafka: Any) -> Any:
    """Settings of an in-process service reading ``topics`` with the piped-script and sshd rules,
    alerts into the local store, no API and no stdin."""
    from service.config import Settings

    return Settings(
        data_dir=tmp_path / "data",
        kafka={"bootstrap_servers": [bootstrap], "group_id": f"g-{uuid.uuid4().hex[:8]}", "topics": topics,
               "commit_interval_s": 0.2, "connect_backoff_initial_s": 0.2, "connect_backoff_max_s": 1.0,
               **kafka},
        rules={"paths": [str(rules_dir(tmp_path, PIPED_SCRIPT_RULE, ROOT_LOGIN_FAILURE_RULE))], "watch": False},
        alerting={"sinks": [{"type": "store"}]},
        api={"enabled": False}, stdin={"enabled": False})
