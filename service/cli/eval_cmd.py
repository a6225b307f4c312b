"""``pipesentry eval``: run the rules over a file of JSON lines, offline, through the service's pipeline.

Input is NDJSON (one event per line, read by the input's decoder) from a file or ``-``
(stdin). The events go through the very pipeline ``pipesentry run`` uses
(:mod:`service.pipeline`: native screen, decoder, Sigma rules, correlation rules,
anomaly checks) with the same settings (``--config``: the service's configuration
file; the input's settings are those of the ``files:`` entry for this path, else of
``stdin``), and each line gets the origin the live input would give it. So ``eval``
prints the alerts ``run`` raises for the same stream, with the same ``alert_id``
(for a file: read through ``files:`` with ``start_at: beginning`` under the same path;
for ``-``: piped to ``run``'s stdin). Events without a usable time field take the
time they are read at, as in ``run``.

Output is one JSON object per alert on stdout (``--format json``, the default) or an
aligned table for people (``--format table``). Diagnostics (rule load errors, lines the
decoder rejects) go to stderr; the run continues.

Exit codes:

- ``0``: the input was read (bad lines and rule load errors are reported but
  do not fail the run; an empty input is fine);
- ``1``: nothing could be read: the input cannot be opened, or it has lines
  but none of them is an event; or no rule could be loaded (every rule
  path failed);
- ``2``: usage error (bad arguments, malformed ``--logsource``, unreadable ``--config``).

Correlation rules evaluate the input as a time-ordered stream; alerts decided at the end
of the input (windows still open) carry the last line: ``run`` decides those later, when
its heartbeat moves event time on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from detectors.alert import Alert, build_alert
from detectors.model import LogSource
from service.cli.rules_cmd import print_load_errors
from service.config import ConfigError, EventSettings, InputSettings, Settings, load_settings
from service.detection import DetectionSet, Detector, compile_detection
from service.pipeline import tune_gc
from service.pipeline.replay import LineFileSource, Replayed, logsource_spec, reject_text, replay_file
from service.sources.base import InputSpec, Rejected

MatchRecord = dict[str, Any]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="run the rules over NDJSON events (offline), as pipesentry run would",
        description="Run Sigma rules, correlations and anomaly checks over a file of JSON lines through the"
                    " service's pipeline and print one JSON object per alert.",
    )
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="the service's configuration file: rules, pipelines, anomaly checks, event and"
                             " correlation settings and this input's settings are taken from it")
    parser.add_argument("--rules", action="append", default=None, metavar="PATH",
                        help="rule file or directory (repeatable; required without --config)")
    parser.add_argument("--pipeline", action="append", default=None, metavar="FILE",
                        help="pySigma processing pipeline YAML file (repeatable, applied in order)")
    parser.add_argument("--checks", action="append", default=None, metavar="FILE",
                        help="anomaly check file (repeatable)")
    parser.add_argument("--logsource", type=logsource_arg, default=None, metavar="SPEC",
                        help="log source of every event, e.g. product=windows,category=process_creation;"
                             " without it every rule applies to every event")
    parser.add_argument("--logsource-field", default=None, metavar="NAME",
                        help="read each event's log source from this field: an object with product/category/"
                             "service keys or a 'product=X,category=Y' string (bench/eventgen.py writes 'logsource');"
                             " events without it fall back to --logsource")
    parser.add_argument("--time-field", action="append", default=None, metavar="FIELD",
                        help="event-time field (repeatable; default: the input's timestamp_field, else"
                             " events.timestamp_fields: " + ", ".join(EventSettings().timestamp_fields) + ")")
    parser.add_argument("--decoder", default=None, metavar="NAME",
                        help="decoder of each line (default: the input's, json)")
    parser.add_argument("--rules-cache", type=Path, default=None, metavar="DIR",
                        help="keep the compiled ruleset in DIR and start from it while the rules are unchanged"
                             " (default: rules.cache_dir; none: compile every time)")
    parser.add_argument("--format", choices=("json", "table"), default="json",
                        help="json: one object per alert (default); table: aligned columns")
    parser.add_argument("events", nargs="?", default="-", metavar="EVENTS",
                        help="NDJSON file, or - for stdin (default)")
    parser.set_defaults(func=run)


def logsource_arg(text: str) -> LogSource:
    """``--logsource product=X,category=Y`` (argparse type; shared by ``anomaly replay``)."""
    try:
        return LogSource.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _open_input(name: str) -> IO[bytes]:
    if name == "-":
        return sys.stdin.buffer
    return open(name, "rb")


def write_json(records: Iterable[MatchRecord], out: IO[bytes]) -> int:
    count = 0
    dumps = orjson.dumps
    for record in records:
        out.write(dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE))
        count += 1
    return count


TABLE_COLUMNS: tuple[tuple[str, int], ...] = (
    ("LINE", 8), ("LEVEL", 13), ("RULE_ID", 36), ("TITLE", 60), ("AUTHOR", 30), ("MATCHED", 80),
)


def _cell(value: str, limit: int) -> str:
    value = " ".join(value.split())  # no newlines or tabs inside a cell
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _matched_text(record: MatchRecord) -> str:
    parts = []
    for item in record["matched"]:
        value = item["value"]
        shown = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        parts.append(f"{item['field']}={shown}" if item["field"] else shown)
    return ", ".join(parts)


def format_table(records: Iterable[MatchRecord]) -> list[str]:
    """Aligned rows (header first); long cells are cut with an ellipsis."""
    rows = [
        [
            str(r["line"]), str(r["level"]), str(r["rule_id"]), str(r["rule_title"]),
            str(r["rule_author"]), _matched_text(r),
        ]
        for r in records
    ]
    header = [name for name, _ in TABLE_COLUMNS]
    cells = [[_cell(v, limit) for v, (_, limit) in zip(row, TABLE_COLUMNS, strict=True)] for row in rows]
    widths = [max(len(c) for c in column) for column in zip(header, *cells, strict=False)]
    lines = []
    for row in [header, *cells]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)) + "  " + row[-1])
    return [line.rstrip() for line in lines]


def alert_record(line: int, alert: Alert) -> MatchRecord:
    """The JSON document printed for one alert: its id (as ``run`` gives it), rule and matched fields."""
    rule = alert.rule
    record: MatchRecord = {
        "line": line,
        "alert_id": alert.id,
        "rule_id": rule.id,
        "rule_title": rule.title,
        "level": rule.level,
        "rule_author": rule.author,
        "rule_ruleset": rule.ruleset,
        "rule_kind": rule.kind,
        "tags": list(rule.tags),
        "matched": [{"field": name, "value": value} for name, value in alert.matched],
    }
    if alert.details:
        record["details"] = dict(alert.details)
    return record


def _input_settings(settings: Settings, events: str) -> InputSettings:
    """The settings ``run`` reads this input with: the ``files:`` entry of this path, else stdin's."""
    if events != "-":
        wanted = Path(events).resolve()
        for file in settings.files:
            if Path(file.path).resolve() == wanted:
                return file
    return settings.stdin


@dataclass
class Evaluation:
    """What ``eval`` read and raised, in input order."""

    records: list[MatchRecord]
    replayed: Replayed


def evaluate(settings: Settings, args: argparse.Namespace, stream: IO[bytes], err: IO[str],
             detection: DetectionSet) -> Evaluation:
    """Run ``stream`` through the pipeline core with ``settings`` and collect the alerts."""
    base = InputSpec.from_settings(f"file:{args.events}" if args.events != "-" else "stdin",
                                   _input_settings(settings, args.events), settings.events.timestamp_fields)
    if args.decoder is not None or args.logsource is not None or args.time_field:
        from service.decoders import build_decoder

        base = InputSpec(base.name, build_decoder(args.decoder, {}) if args.decoder else base.decoder,
                         args.logsource if args.logsource is not None else base.logsource,
                         tuple(args.time_field) if args.time_field else base.time_fields)

    def on_reject(line: int, reject: Rejected) -> None:
        print(f"line {line}: {reject_text(reject)}", file=err)

    replayed = replay_file(stream, base, detection, path=None if args.events == "-" else args.events,
                           on_reject=on_reject, screen=settings.events.screen, scope=settings.state.scope,
                           spec_of=logsource_spec(args.logsource_field, base) if args.logsource_field else None)
    records = [alert_record(line, alert) for line, alert in replayed.alerts]
    records.extend(alert_record(replayed.source.last_line, alert)
                   for alert in _flush(replayed.detector, replayed.source))
    return Evaluation(records, replayed)


def _flush(detector: Detector, source: LineFileSource) -> list[Alert]:
    """Alerts of correlation windows still open at the end of the input (``run`` decides them later)."""
    correlation = detector.current.correlation
    if correlation is None or source.last_origin is None:
        return []
    import time

    with detector.exclusive():
        matches = correlation.flush()
    now = time.time()
    return [build_alert(match, {}, source.last_origin, event_time=_window_end(match, now), now=now)
            for match in matches]


def _window_end(match: Any, default: float) -> float:
    end = (match.details or {}).get("window_end")
    return float(end) if isinstance(end, int | float) and not isinstance(end, bool) else default


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"pipesentry eval: {exc}", file=sys.stderr)
        return 2
    rules = [Path(p) for p in args.rules] if args.rules else settings.rules.resolved_paths()
    if not args.rules and args.config is None:
        print("pipesentry eval: give --rules or --config", file=sys.stderr)
        return 2
    pipelines = [Path(p) for p in args.pipeline] if args.pipeline else list(settings.rules.pipelines)
    checks = [Path(p) for p in args.checks] if args.checks else list(settings.anomaly.checks)
    outcome = compile_detection(rules, pipelines, skip_invalid=True, correlation=settings.correlation.enabled,
                                anomaly_checks=checks, correlation_max_keys=settings.correlation.max_keys,
                                correlation_lateness_s=settings.correlation.allowed_lateness,
                                regex_timeout_ms=settings.rules.regex_timeout_ms,
                                rules_cache=args.rules_cache or settings.rules.cache_dir)
    detection = outcome.detection
    tune_gc()  # after the compile: the ruleset is long-lived, the events are not
    assert detection is not None  # skip_invalid: always a set
    print_load_errors(list(outcome.errors), sys.stderr)
    ruleset = detection.ruleset
    if outcome.errors and not ruleset.rules and not ruleset.correlations and detection.anomaly is None:
        print("pipesentry eval: no rule could be loaded", file=sys.stderr)
        return 1
    if args.decoder is not None:
        from service.decoders import build_decoder

        try:
            build_decoder(args.decoder, {})
        except KeyError as exc:
            print(f"pipesentry eval: --decoder: {exc.args[0]}", file=sys.stderr)
            return 2
    try:
        stream = _open_input(args.events)
    except OSError as exc:
        print(f"pipesentry eval: cannot open {args.events}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        result = evaluate(settings, args, stream, sys.stderr, detection)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        print(f"pipesentry eval: cannot read {args.events}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if args.format == "table":
        rows = format_table(result.records)
        sys.stdout.write("\n".join(rows) + "\n")
        count = len(rows) - 1
    else:
        sys.stdout.flush()
        out = sys.stdout.buffer
        count = write_json(result.records, out)
        out.flush()
    stats = result.replayed
    checks_loaded = len(detection.anomaly.checks) if detection.anomaly is not None else 0
    print(
        f"{stats.events} events, {count} matches, {stats.bad_lines} bad lines, "
        f"{len(ruleset.rules)} rules, {len(ruleset.correlations)} correlations, {checks_loaded} checks, "
        f"{len(outcome.errors)} rule errors",
        file=sys.stderr,
    )
    engine = detection.correlation
    skipped = {k: v for k, v in engine.counters.items() if v} if engine is not None else {}
    if skipped:
        print("correlation skips: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())), file=sys.stderr)
    if stats.events == 0 and stats.bad_lines > 0:
        return 1
    return 0
