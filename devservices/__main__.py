"""``python -m devservices fetch | start SERVICE``.

``fetch`` downloads the Kafka and search-node jars and the Elasticsearch 8/9 zips
(idempotent; instant when done; progress on stderr) and checks the JDKs and the
Debian binaries. ``start`` runs one server in the
foreground on free loopback ports, prints where it listens as one JSON line on
stdout, and stops it on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from devservices.alertmanager import AlertmanagerServer, alertmanager_binary
from devservices.elasticsearch import JAVA_RANGES, ElasticsearchNode
from devservices.errors import DevServiceError, PrerequisiteMissing
from devservices.fetch import devservices_dir, fetch_all, java_executable, java_home, print_progress
from devservices.kafka import KafkaServer
from devservices.prometheus import PrometheusServer, prometheus_binary
from devservices.search import SearchNode

SERVICES = ("kafka", "search", "elasticsearch8", "elasticsearch9", "prometheus", "alertmanager")


def _fetch(args: argparse.Namespace) -> int:
    java = java_executable(17)
    began = time.monotonic()
    spent = fetch_all(maven_repo=args.maven_repo, progress=print_progress)
    report: dict[str, Any] = {
        "devservices_dir": str(devservices_dir()),
        "java": java,
        "fetch_seconds": spent,
        "total_seconds": round(time.monotonic() - began, 2),
    }
    missing: list[str] = []
    for major, (low, high) in JAVA_RANGES.items():
        try:
            report[f"elasticsearch{major}_java_home"] = str(java_home(low, high))
        except PrerequisiteMissing as exc:
            missing.append(f"Elasticsearch {major}: {exc}")
    for name, find in (("prometheus", prometheus_binary), ("alertmanager", alertmanager_binary)):
        try:
            report[name] = find()
        except PrerequisiteMissing as exc:
            missing.append(str(exc))
    kcat = shutil.which("kcat")
    report["kcat"] = kcat
    if kcat is None:
        missing.append("kcat not found on PATH: apt-get install kcat (or `make system-packages`)")
    print(json.dumps(report))
    for message in missing:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def _describe(name: str, server: Any) -> dict[str, Any]:
    if name == "kafka":
        return {"service": name, "bootstrap": server.bootstrap, "version": server.version}
    if name == "search":
        return {"service": name, "url": server.url, "flavor": server.flavor, "version": server.version}
    if name.startswith("elasticsearch"):
        described = {"service": name, "url": server.url, "flavor": server.flavor, "version": server.version}
        if server.auth is not None:  # the password goes to a 0600 file, never to stdout
            secret = server.workdir / "credentials.json"
            secret.touch(mode=0o600)
            secret.write_text(json.dumps({"username": server.username, "password": server.password}))
            described["credentials_file"] = str(secret)
        return described
    return {"service": name, "url": server.url}


def _starter(args: argparse.Namespace, workdir: Path) -> Callable[[], Any]:
    match args.service:
        case "kafka":
            return lambda: KafkaServer.start(workdir)
        case "search":
            return lambda: SearchNode.start(workdir)
        case "elasticsearch8" | "elasticsearch9":
            major = int(args.service[-1])
            return lambda: ElasticsearchNode.start(workdir, major, security=args.security)
        case "prometheus":
            return lambda: PrometheusServer.start(
                workdir, scrape_targets=args.target, scrape_interval=args.scrape_interval
            )
        case "alertmanager":
            return lambda: AlertmanagerServer.start(workdir, webhook_url=args.webhook_url)
        case _:
            raise ValueError(f"unknown service {args.service}")


def _start(args: argparse.Namespace) -> int:
    own_dir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix=f"pipesentry-{args.service}-")) if own_dir else args.workdir
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    began = time.monotonic()
    server = _starter(args, workdir)()
    try:
        info = _describe(args.service, server) | {
            "workdir": str(workdir),
            "start_seconds": round(time.monotonic() - began, 2),
        }
        print(json.dumps(info), flush=True)
        while not stop.wait(0.5):
            if not server.running():
                print(f"{args.service} exited; log in {workdir}", file=sys.stderr)
                return 1
        return 0
    finally:
        server.stop()
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devservices", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download the Kafka, OpenSearch and Elasticsearch servers, check binaries")
    fetch.add_argument("--maven-repo", type=Path, help="Maven local repository to use (-Dmaven.repo.local)")
    start = sub.add_parser("start", help="run one server in the foreground until Ctrl-C")
    start.add_argument("service", choices=SERVICES)
    start.add_argument("--workdir", type=Path, help="keep data and logs here (default: a temp dir, removed)")
    start.add_argument("--target", action="append", default=[], help="prometheus: host:port to scrape")
    start.add_argument("--scrape-interval", default="1s", help="prometheus: scrape interval")
    start.add_argument("--webhook-url", help="alertmanager: deliver notifications to this URL")
    start.add_argument("--security", action="store_true",
                       help="elasticsearch*: security on, a file-realm superuser (in credentials_file)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _fetch(args) if args.command == "fetch" else _start(args)
    except DevServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
