"""A Prometheus server (the Debian ``prometheus`` binary) scraping given loopback targets.

Targets live in a file-based service-discovery file, so :meth:`set_targets` can
change them while the server runs (Prometheus watches the file); a test can start
Prometheus first and point it at an endpoint it opens later. Optionally it loads
rule files and sends alerts to an Alertmanager, to test alerting rules end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from devservices.errors import DevServiceError
from devservices.fetch import debian_binary
from devservices.process import HttpServerHandle, ManagedProcess, free_port

START_TIMEOUT = 30.0


class QueryFailed(DevServiceError):
    """The HTTP API answered a PromQL query with an error."""


def prometheus_binary() -> str:
    return debian_binary(("prometheus",), "prometheus")


def prometheus_config(
    targets_file: Path, scrape_interval: str, rule_files: Sequence[Path], alertmanager: str | None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": "targets",
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
            }
        ],
    }
    if rule_files:
        config["rule_files"] = [str(path) for path in rule_files]
    if alertmanager:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}]
        }
    return config


@dataclass(eq=False)
class PrometheusServer(HttpServerHandle):
    """A running Prometheus; ``url`` is ``http://127.0.0.1:PORT``."""

    LOG_NAME = "prometheus.log"

    @property
    def targets_file(self) -> Path:
        return self.workdir / "targets.json"

    @classmethod
    def start(
        cls,
        workdir: Path,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        *,
        rule_files: Sequence[Path] = (),
        alertmanager_url: str | None = None,
        timeout: float = START_TIMEOUT,
    ) -> PrometheusServer:
        """Start with fresh TSDB storage under ``workdir``, scraping ``host:port`` targets."""
        binary = prometheus_binary()
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir=workdir, port=free_port())
        server.set_targets(scrape_targets)
        rules: list[Path] = []
        for index, source in enumerate(rule_files):
            rules.append(workdir / f"rules-{index}-{source.name}")
            shutil.copyfile(source, rules[-1])
        config = prometheus_config(server.targets_file, scrape_interval, rules, alertmanager_url)
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [
            binary, f"--config.file={config_path}", f"--web.listen-address=127.0.0.1:{server.port}",
            f"--storage.tsdb.path={workdir / 'tsdb'}", "--web.enable-lifecycle",
            f"--web.console.templates={workdir}", f"--web.console.libraries={workdir}",
        ]  # fmt: skip
        server._process = ManagedProcess.spawn("prometheus", argv, server.log_path, cwd=workdir)
        server._process.wait_ready(server._ready, timeout, "/-/ready answers 200")
        return server

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def set_targets(self, targets: Sequence[str]) -> None:
        """Replace the scrape targets (``host:port``).

        Prometheus sees the file at once but batches discovery updates, so the first
        scrape of a new target comes within about 5 s: wait with :meth:`wait_for`.
        """
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": list(targets), "labels": {}}]))
        os.replace(tmp, self.targets_file)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result`` (a list of ``{"metric", "value"}`` for vectors)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise QueryFailed(f"{promql!r}: {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns a non-empty result; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{promql!r} stayed empty for {timeout:.0f}s on {self.url}")
            time.sleep(0.2)

    def active_targets(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=10)
        response.raise_for_status()
        targets: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
        return targets
