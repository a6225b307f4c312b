"""``pipesentry config check FILE``: validate a settings file (plus environment) without starting.

Exit 0 and a short summary when valid; exit 2 and one line per bad key otherwise.
``--show`` prints the effective settings as JSON with secrets masked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from service.config import ConfigError, describe, load_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="work with settings files")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate a settings file without starting")
    check.add_argument("file", type=Path, nargs="?", help="YAML settings file (omit: defaults + environment)")
    check.add_argument("--show", action="store_true", help="print the effective settings (secrets masked)")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        print(f"pipesentry: {exc}", file=sys.stderr)
        return 2
    missing = [str(p) for p in settings.rules.resolved_paths() if not p.exists()]
    if missing:
        print(f"pipesentry: rules path(s) do not exist: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.show:
        sys.stdout.write(orjson.dumps(describe(settings), option=orjson.OPT_INDENT_2).decode() + "\n")
    inputs = [name for name, on in (("kafka", settings.kafka is not None),
                                    ("http", settings.http_ingest.enabled and settings.api.enabled),
                                    ("stdin", settings.stdin.enabled is not False),
                                    ("files", bool(settings.files))) if on]
    print(f"{args.file or 'defaults'}: valid (inputs: {', '.join(inputs) or 'none'}; "
          f"sinks: {', '.join(s.name for s in settings.alerting.sinks) or 'none'})")
    return 0
