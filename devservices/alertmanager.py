"""An Alertmanager (the Debian ``prometheus-alertmanager`` binary) on loopback.

Clustering is off (``--cluster.listen-address=``), grouping waits are short so
notifications leave within about a second, and the only receiver either drops
notifications or, given ``webhook_url``, posts them there (a test can capture
what a pager would have received).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from devservices.fetch import debian_binary
from devservices.process import HttpServerHandle, ManagedProcess, free_port

START_TIMEOUT = 30.0


def alertmanager_binary() -> str:
    # Debian installs it as prometheus-alertmanager; upstream tarballs call it alertmanager.
    return debian_binary(("prometheus-alertmanager", "alertmanager"), "prometheus-alertmanager")


def alertmanager_config(webhook_url: str | None) -> dict[str, Any]:
    receiver: dict[str, Any] = {"name": "default"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    return {
        "route": {
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [receiver],
    }


@dataclass(eq=False)
class AlertmanagerServer(HttpServerHandle):
    """A running Alertmanager; ``url`` is ``http://127.0.0.1:PORT``."""

    LOG_NAME = "alertmanager.log"

    @classmethod
    def start(
        cls, workdir: Path, *, webhook_url: str | None = None, timeout: float = START_TIMEOUT
    ) -> AlertmanagerServer:
        """Start with fresh storage under ``workdir``; notifications go to ``webhook_url`` if set."""
        binary = alertmanager_binary()
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir=workdir, port=free_port())
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(alertmanager_config(webhook_url), sort_keys=False))
        argv = [
            binary, f"--config.file={config_path}", f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{server.port}", "--cluster.listen-address=",
        ]  # fmt: skip
        server._process = ManagedProcess.spawn("alertmanager", argv, server.log_path, cwd=workdir)
        server._process.wait_ready(server._ready, timeout, "/-/ready answers 200")
        return server

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts`` (what Prometheus and pipesentry's pager sink send)."""
        response = httpx.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=10)
        response.raise_for_status()

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``; ``filters`` become ``filter=label="value"`` matchers."""
        params = httpx.QueryParams([("filter", f'{key}="{value}"') for key, value in filters.items()])
        response = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=10)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts
