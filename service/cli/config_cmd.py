"""``pipesentry config check|schema``: validate a settings file without starting; print the settings' schema.

``check``: exit 0 and a one-line summary (on stderr) when valid; exit 1 and one line per bad key
otherwise (a failed check, as ``rules check``). ``--show`` prints the effective settings on stdout
with secrets masked: one JSON document (``--format json``, the default, so stdout pipes into ``jq``),
or one ``key  value`` row per dotted key (``table``, ``csv``).

``schema``: the JSON Schema of :class:`service.config.Settings` (for editors and CI linting of
settings files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from service.cli.output import FAILED, FORMATS, KEY_VALUE_COLUMNS, OK, flatten, write_records
from service.config import ConfigError, Settings, describe, load_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="work with settings files")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate a settings file without starting; exit 1 when invalid")
    check.add_argument("file", type=Path, nargs="?", help="YAML settings file (omit: defaults + environment)")
    check.add_argument("--show", action="store_true",
                       help="print the effective settings on stdout (secrets masked); the status line goes to stderr")
    check.add_argument("--format", choices=FORMATS, default="json",
                       help="with --show: json (one document, default), table or csv (one row per dotted key)")
    check.set_defaults(func=run_check)
    schema = sub.add_parser("schema", help="print the JSON Schema of the settings file")
    schema.set_defaults(func=run_schema)


def run_check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        print(f"pipesentry: {exc}", file=sys.stderr)
        return FAILED
    missing = [str(p) for p in settings.rules.resolved_paths() if not p.exists()]
    if missing:
        print(f"pipesentry: rules path(s) do not exist: {', '.join(missing)}", file=sys.stderr)
        return FAILED
    if args.show:
        doc = describe(settings)
        if args.format == "json":
            sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            write_records(flatten(doc), KEY_VALUE_COLUMNS, args.format)
    inputs = [name for name, on in (("kafka", settings.kafka is not None),
                                    ("http", settings.http_ingest.enabled and settings.api.enabled),
                                    ("stdin", settings.stdin.enabled is not False),
                                    ("files", bool(settings.files))) if on]
    print(f"{args.file or 'defaults'}: valid (inputs: {', '.join(inputs) or 'none'}; "
          f"sinks: {', '.join(s.name for s in settings.alerting.sinks) or 'none'})",
          file=sys.stderr if args.show else sys.stdout)
    return OK


def settings_schema() -> dict[str, Any]:
    """The JSON Schema of the settings file (validation mode: what a file may hold)."""
    return Settings.model_json_schema()


def run_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(orjson.dumps(settings_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return OK
