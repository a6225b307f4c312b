"""``pipesentry hunt``: run Sigma rules over the history already in Elasticsearch or OpenSearch.

The rules (``--rules``, else the configured rule paths) and the rule pack's processing pipelines
(``--pipeline``, else the configured ones; ``--backend-pipeline`` adds one the backend ships) are
converted to Lucene queries by pySigma's Elasticsearch or OpenSearch backend; rules a backend cannot
convert are listed on stderr with the reason and the others run. Each rule runs over the index its
log source maps to in ``hunt.indices`` (else ``hunt.default_index``; ``--index`` overrides both),
within ``--since``/``--until``, paging through the hits by scroll. Each hit becomes an alert of the
streaming engine's model (same rule metadata and author), with origin ``hunt:<index>/<document id>``
and an id stable for (rule, index, document): hunting twice stores nothing twice.

Alerts are printed (``--format json|table|csv``) or, with ``--store``, written to the local alert
store (redacted, as every stored alert), where ``GET /api/v1/alerts`` serves them. A progress line
goes to stderr. The cluster's URL and credentials come from ``hunt:`` in ``--config`` (or
``PIPESENTRY_HUNT__*``); no secret is taken on the command line.

Exit codes (:mod:`service.cli.output`): ``0`` done; ``1`` no rule could be converted, or the node
refused some rules' queries; ``2`` usage (bad time, unreadable config or pipeline, unknown backend
pipeline); ``3`` the cluster cannot be reached or fails, or the store cannot be written.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from detectors.alert import Alert, iso_time
from service.cli.output import FAILED, OK, UNAVAILABLE, USAGE, Column, add_format, column, write_records
from service.cli.rules_cmd import print_load_errors
from service.config import ConfigError, Settings, load_settings
from service.errors import ServiceError
from service.hunt.convert import TARGETS, PipelineError, Target
from service.hunt.settings import check_url
from service.hunt.timerange import TimeRange, parse_when


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "hunt",
        help="run Sigma rules over indexed history in Elasticsearch/OpenSearch and print or store the alerts",
        description="Convert Sigma rules with pySigma's Elasticsearch or OpenSearch backend and run them over"
                    " the log indices of their log sources (hunt.indices in --config), within a time range."
                    " Credentials come from the hunt: settings (api_key/username/password, or their _file"
                    " forms, or PIPESENTRY_HUNT__*), never from the command line.",
        epilog="exit codes: 0 done; 1 no rule converted or queries refused by the node;"
               " 2 usage; 3 cluster or store unavailable",
    )
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="the service's configuration file: rules, pipelines, hunt: (url, credentials,"
                             " index per log source), alert store and redaction")
    parser.add_argument("--rules", action="append", default=None, metavar="PATH",
                        help="rule file or directory (repeatable; default: the configured rule paths)")
    parser.add_argument("--pipeline", action="append", default=None, metavar="FILE",
                        help="pySigma processing pipeline YAML file (repeatable, applied in order;"
                             " default: the configured ones)")
    parser.add_argument("--backend-pipeline", action="append", default=[], metavar="NAME",
                        help="a pipeline the backend ships, applied after --pipeline (repeatable), e.g."
                             " ecs_kubernetes, ecs_windows, ecs_zeek_beats (an unknown name lists them)")
    parser.add_argument("--since", default="7d", metavar="WHEN",
                        help="start of the time range: a duration back from now (7d, 12h, 30m), an RFC 3339"
                             " time or unix seconds (default 7d)")
    parser.add_argument("--until", default=None, metavar="WHEN",
                        help="end of the time range (exclusive; default now)")
    parser.add_argument("--target", choices=TARGETS, default=None,
                        help="the cluster's kind: picks the pySigma backend and client (default hunt.target)")
    parser.add_argument("--url", default=None, metavar="URL", help="the cluster's URL (default hunt.url)")
    parser.add_argument("--index", default=None, metavar="PATTERN",
                        help="run every rule over this index pattern instead of hunt.indices")
    parser.add_argument("--building-blocks", action="store_true",
                        help="also run rules that only feed correlations (generate: false), which raise no"
                             " alert of their own in the engine")
    parser.add_argument("--store", action="store_true",
                        help="write the alerts to the local alert store instead of printing them")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress line on stderr")
    add_format(parser, "json", what="alerts")
    parser.set_defaults(func=run)


def hunt_record(alert: Alert) -> dict[str, Any]:
    """The printed form of a hunt's alert: ids, rule, and where the document is."""
    rule = alert.rule
    index, _, doc_id = (alert.origin.key or "").partition("/")
    return {"alert_id": alert.id, "@timestamp": iso_time(alert.timestamp), "index": index,
            "document_id": doc_id, "rule_id": rule.id, "rule_title": rule.title, "level": alert.level,
            "rule_status": rule.status, "rule_author": rule.author, "rule_ruleset": rule.ruleset,
            "tags": list(rule.tags)}


TABLE_COLUMNS: tuple[Column, ...] = (
    column("TIME", "@timestamp", 24), column("LEVEL", "level", 13), column("RULE_ID", "rule_id", 36),
    column("TITLE", "rule_title", 50), column("AUTHOR", "rule_author", 24), column("INDEX", "index", 40),
    column("DOCUMENT", "document_id", 40),
)


class _ProgressLine:
    """``hunt: rule 12/88, 3,400 hits: <title>`` on stderr: rewritten in place on a terminal,
    one line per rule otherwise."""

    def __init__(self, err: IO[str], quiet: bool) -> None:
        self.err = err
        self.quiet = quiet
        self.tty = err.isatty()

    def __call__(self, p: Any) -> None:
        if self.quiet:
            return
        done = p.rules_done >= p.rules_total
        text = (f"hunt: {p.rules_total} rules run, {p.hits:,} hits" if done
                else f"hunt: rule {p.rules_done + 1}/{p.rules_total}, {p.hits:,} hits: {p.current}")
        if self.tty:
            self.err.write("\r\033[K" + text[:120] + ("\n" if done else ""))
        elif not done:
            self.err.write(text + "\n")
        self.err.flush()


def _fail(message: str, code: int) -> int:
    print(f"pipesentry hunt: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(str(exc), USAGE)
    if not args.rules and args.config is None:
        return _fail("give --rules or --config", USAGE)
    now = time.time()
    try:
        since = parse_when(args.since, now)
        until = parse_when(args.until, now) if args.until else None
        time_range = TimeRange(since, until)
    except ValueError as exc:
        return _fail(f"--since/--until: {exc}", USAGE)
    from service.hunt.hunt import HuntPlan, convert_plan

    hunt = settings.hunt
    if args.url is not None:
        try:
            check_url(args.url)
        except ValueError as exc:
            return _fail(f"--{exc}", USAGE)
    target: Target = args.target or hunt.target
    plan = HuntPlan(rules=tuple(Path(p) for p in args.rules) if args.rules else tuple(settings.rules.resolved_paths()),
                    pipelines=tuple(Path(p) for p in (args.pipeline or settings.rules.pipelines)),
                    backend_pipelines=tuple(args.backend_pipeline), target=target, index=args.index,
                    time_range=time_range, building_blocks=args.building_blocks)
    try:
        conversion = convert_plan(plan)
    except PipelineError as exc:
        return _fail(str(exc), USAGE)
    print_load_errors(conversion.errors, sys.stderr)
    for failure in conversion.failures:
        print(f"not converted: {failure.rule.id} ({failure.rule.title}): {failure.reason}", file=sys.stderr)
    if not conversion.queries:
        return _fail(f"no rule could be converted for {target}", FAILED)
    print(f"hunt: {len(conversion.queries)} rules converted for {target} ({len(conversion.failures)} not),"
          f" {conversion.rules_per_s:,.0f} rules/s", file=sys.stderr)
    return asyncio.run(_hunt(args, settings, plan, conversion, args.url or hunt.url))


async def _hunt(args: argparse.Namespace, settings: Settings, plan: Any, conversion: Any, url: str) -> int:
    from service.hunt.client import SearchError, open_client
    from service.hunt.hunt import run_plan

    output = _Output(args.format) if not args.store else None
    store = _Store(settings) if args.store else None
    if store is not None:
        try:
            store.open()
        except Exception as exc:  # the store's own errors (disk, corrupt file, redaction key)
            return _fail(f"cannot open the alert store: {exc}", UNAVAILABLE)
    sink: Any = store.put if store is not None else output.put if output is not None else None
    client = open_client(settings.hunt, plan.target, url)
    try:
        report = await run_plan(client, conversion, plan, settings.hunt, sink,
                                progress=_ProgressLine(sys.stderr, args.quiet))
    except SearchError as exc:
        return _fail(str(exc), UNAVAILABLE)
    except ServiceError as exc:  # the alert store (disk full, corrupt file)
        return _fail(f"cannot store the alerts: {exc}", UNAVAILABLE)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        return _fail(f"cannot write the alerts: {exc}", UNAVAILABLE)
    finally:
        await client.close()
        if store is not None:
            store.close()
    if output is not None:
        output.finish()
    for run in report.runs:
        if run.error:
            print(f"query refused: {run.rule_id} on {run.index}: {run.error}", file=sys.stderr)
        if run.truncated:
            print(f"stopped at hunt.max_hits_per_rule: {run.rule_id} on {run.index}", file=sys.stderr)
    stored = f", {store.count} alerts stored" if store is not None else ""
    print(f"hunt: {report.hits} hits from {len(report.runs)} rules in {report.seconds:.1f} s{stored}",
          file=sys.stderr)
    return FAILED if any(r.error for r in report.runs) else OK


class _Output:
    """Alerts printed as they come (json) or once at the end (table and csv need every row)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.rows: list[Mapping[str, Any]] = []

    def put(self, alerts: list[Alert]) -> None:
        records = [hunt_record(a) for a in alerts]
        if self.fmt == "json":
            write_records(records, TABLE_COLUMNS, "json")
            sys.stdout.flush()
        else:
            self.rows.extend(records)

    def finish(self) -> None:
        if self.fmt != "json":
            write_records(self.rows, TABLE_COLUMNS, self.fmt)


class _Store:
    """The local alert store, written as the service writes it: redacted documents, upserted by id."""

    def __init__(self, settings: Settings) -> None:
        from service.alerting.store import AlertStore
        from service.redaction import Redaction

        self.redaction = Redaction(settings.redaction, settings.data_dir)
        self.store = AlertStore(Path(settings.data_dir) / "alerting" / "alerts.db")
        self.count = 0

    def open(self) -> None:
        self.redaction.start()
        self.store.open()

    def put(self, alerts: list[Alert]) -> None:
        docs = [a.to_document() for a in alerts]
        if self.redaction.enabled:
            docs = [self.redaction.document(d) for d in docs]
        self.count += self.store.upsert(docs)

    def close(self) -> None:
        self.store.close()
