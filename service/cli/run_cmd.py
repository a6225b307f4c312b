"""``pipesentry run``: start the service; with no configuration at all, the embedded default.

Embedded default: API and HTTP ingest on http://127.0.0.1:8080, stdin when it
is piped, the project's ``sigma-rules/``, alerts printed to stdout and kept in
``./pipesentry-data/alerting/alerts.db`` (served by ``GET /api/v1/alerts``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from service.cli.output import OK, UNAVAILABLE, USAGE
from service.config import ConfigError, Settings, api_base_url, load_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run the detection service",
                                   description="Run pipesentry. Without --config: HTTP ingest on "
                                               "127.0.0.1:8080, stdin when piped, the project's rules, "
                                               "alerts to stdout and the local store.")
    parser.add_argument("--config", "-c", type=Path, help="YAML settings file (PIPESENTRY_* env overrides it)")
    parser.add_argument("--host", help="API listen address (overrides api.host)")
    parser.add_argument("--port", type=int, help="API port (overrides api.port)")
    parser.add_argument("--no-stdin", action="store_true", help="do not read events from standard input")
    parser.add_argument("--rules", action="append", type=Path, metavar="PATH",
                        help="rule file or directory (repeatable; overrides rules.paths)")
    parser.add_argument("--data-dir", type=Path, help="where the alert store and spools live (overrides data_dir)")
    parser.set_defaults(func=run)


def apply_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line flags win over the file and the environment."""
    api: dict[str, Any] = {}
    if args.host:
        api["host"] = args.host
    if args.port is not None:
        api["port"] = args.port
    update: dict[str, Any] = {}
    if api:
        update["api"] = settings.api.model_copy(update=api)
        if settings.alerting.alert_base_url == api_base_url(settings.api):  # the default: follow the flags
            update["alerting"] = settings.alerting.model_copy(
                update={"alert_base_url": api_base_url(update["api"])})
    if args.no_stdin:
        update["stdin"] = settings.stdin.model_copy(update={"enabled": False})
    if args.rules:
        update["rules"] = settings.rules.model_copy(update={"paths": list(args.rules)})
    if args.data_dir:
        update["data_dir"] = args.data_dir
    return settings.model_copy(update=update) if update else settings


def _load(config: Path | None, args: argparse.Namespace) -> Settings:
    """The settings; their secrets are registered with the log redactor before anything can log them."""
    from service.logs import register_settings_secrets

    settings = apply_flags(load_settings(config), args)
    register_settings_secrets(settings)
    return settings


def run(args: argparse.Namespace) -> int:
    from service.logs import configure_logging, redact

    try:
        settings = _load(args.config, args)
    except ConfigError as exc:
        print(f"pipesentry: {redact(str(exc))}", file=sys.stderr)
        return USAGE
    configure_logging(settings.log_level)
    from service.app import Service, StartupError

    try:
        config_path = Path(args.config) if args.config else None
        loader = (lambda: _load(config_path, args)) if config_path else None
        asyncio.run(Service(settings, config_path=config_path, settings_loader=loader).run())
    except StartupError as exc:
        print(f"pipesentry: cannot start: {redact(str(exc))}", file=sys.stderr)
        return UNAVAILABLE
    return OK
