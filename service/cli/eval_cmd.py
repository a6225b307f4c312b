"""``pipesentry eval``: run Sigma rules over a file of JSON lines, offline.

Input is NDJSON (one JSON object per line) from a file or ``-`` (stdin).
Output is one JSON object per match on stdout (``--format json``, the default)
or an aligned table for people (``--format table``). Diagnostics (rule load
errors, lines that are not JSON objects) go to stderr; the run continues.

Exit codes:

- ``0``: the input was read (bad lines and rule load errors are reported but
  do not fail the run; an empty input is fine);
- ``1``: nothing could be read: the input cannot be opened, or it has lines
  but none of them is a JSON object; or no rule could be loaded (every rule
  path failed);
- ``2``: usage error (bad arguments, malformed ``--logsource``).

Correlation rules among the loaded rules are evaluated too: the input is then a
time-ordered stream (event time from ``--time-field``, default the usual
timestamp fields); alerts decided at the end of the input carry the last line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson

from detectors.correlation import CorrelationEngine, compile_correlations
from detectors.correlation.stream import CorrelatingEvaluator
from detectors.event import DEFAULT_TIME_FIELDS, event_time
from detectors.model import Event, LogSource, Match
from detectors.sigma import Ruleset
from service.cli.rules_cmd import print_load_errors
from service.rules import load_rules

MatchRecord = dict[str, Any]


@dataclass
class InputStats:
    """What the reader saw; decides the exit code."""

    lines: int = 0
    events: int = 0
    bad_lines: int = 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate Sigma rules over NDJSON events (offline)",
        description="Evaluate Sigma rules over a file of JSON lines and print one JSON object per match.",
    )
    parser.add_argument("--rules", action="append", required=True, metavar="PATH",
                        help="rule file or directory (repeatable)")
    parser.add_argument("--pipeline", action="append", default=[], metavar="FILE",
                        help="pySigma processing pipeline YAML file (repeatable, applied in order)")
    parser.add_argument("--logsource", type=_parse_logsource, default=None, metavar="SPEC",
                        help="log source of every event, e.g. product=windows,category=process_creation;"
                             " without it every rule applies to every event")
    parser.add_argument("--logsource-field", default=None, metavar="NAME",
                        help="read each event's log source from this field: an object with product/category/"
                             "service keys or a 'product=X,category=Y' string (bench/eventgen.py writes 'logsource');"
                             " events without it fall back to --logsource")
    parser.add_argument("--time-field", action="append", default=None, metavar="FIELD",
                        help="event-time field for correlation rules (repeatable; default: "
                             + ", ".join(DEFAULT_TIME_FIELDS) + ")")
    parser.add_argument("--format", choices=("json", "table"), default="json",
                        help="json: one object per match (default); table: aligned columns")
    parser.add_argument("events", nargs="?", default="-", metavar="EVENTS",
                        help="NDJSON file, or - for stdin (default)")
    parser.set_defaults(func=run)


def _parse_logsource(text: str) -> LogSource:
    try:
        return LogSource.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def read_events(stream: IO[bytes], stats: InputStats, err: IO[str]) -> Iterator[tuple[int, Event]]:
    """``(line number, event)`` for each JSON object line; other lines are reported on ``err``.

    Blank lines are skipped silently (a trailing newline is not an error).
    """
    loads = orjson.loads
    for number, raw in enumerate(stream, start=1):
        stats.lines = number
        if not raw.strip():
            continue
        try:
            event = loads(raw)
        except orjson.JSONDecodeError as exc:
            stats.bad_lines += 1
            print(f"line {number}: invalid JSON: {exc}", file=err)
            continue
        if not isinstance(event, dict):
            stats.bad_lines += 1
            print(f"line {number}: not a JSON object (got {type(event).__name__})", file=err)
            continue
        stats.events += 1
        yield number, event


def match_record(line: int, match: Match) -> MatchRecord:
    """The JSON document printed for one match."""
    rule = match.rule
    record: MatchRecord = {
        "line": line,
        "rule_id": rule.id,
        "rule_title": rule.title,
        "level": rule.level,
        "rule_author": rule.author,
        "rule_ruleset": rule.ruleset,
        "rule_kind": rule.kind,
        "tags": list(rule.tags),
        "matched": [{"field": name, "value": value} for name, value in match.fields],
    }
    if match.details:
        record["details"] = dict(match.details)
    return record


def event_logsource(event: Event, field: str, default: LogSource | None) -> LogSource | None:
    """The log source an event carries in ``field`` (object or ``product=X,...`` string), else ``default``."""
    value = event.get(field)
    if isinstance(value, dict):
        parts = {k: value.get(k) for k in ("product", "category", "service")}
        if any(isinstance(v, str) for v in parts.values()):
            return LogSource(**{k: v if isinstance(v, str) else None for k, v in parts.items()})
    elif isinstance(value, str):
        try:
            return LogSource.parse(value)
        except ValueError:
            pass
    return default


def evaluate_stream(
    ruleset: Ruleset,
    events: Iterable[tuple[int, Event]],
    logsource: LogSource | None = None,
    logsource_field: str | None = None,
    time_fields: Sequence[str] = DEFAULT_TIME_FIELDS,
    engine: CorrelationEngine | None = None,
) -> Iterator[MatchRecord]:
    """Match records for a time-ordered stream of ``(line, event)`` pairs.

    The one place events meet the ruleset in ``eval``: base-rule matches, minus
    those a correlation suppresses, plus correlation matches as they become due.
    ``engine`` defaults to one compiled from the ruleset's correlation rules.
    """
    if engine is None:
        engine, _ = compile_correlations(ruleset)
    evaluator = CorrelatingEvaluator(ruleset, engine)
    line = 0
    for line, event in events:
        source = logsource if logsource_field is None else event_logsource(event, logsource_field, logsource)
        for match in evaluator.evaluate(event, source, event_time(event, time_fields), ref=line):
            yield match_record(line, match)
    for match in evaluator.flush():
        yield match_record(line, match)


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


def run(args: argparse.Namespace) -> int:
    result = load_rules(args.rules, args.pipeline)
    print_load_errors(result.errors, sys.stderr)
    engine, correlation_errors = compile_correlations(result.ruleset)
    print_load_errors(correlation_errors, sys.stderr)
    if result.errors and not result.ruleset.rules and not result.ruleset.correlations:
        print("pipesentry eval: no rule could be loaded", file=sys.stderr)
        return 1
    try:
        stream = _open_input(args.events)
    except OSError as exc:
        print(f"pipesentry eval: cannot open {args.events}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stats = InputStats()
    try:
        records = evaluate_stream(result.ruleset, read_events(stream, stats, sys.stderr), args.logsource,
                                  args.logsource_field, args.time_field or DEFAULT_TIME_FIELDS, engine)
        if args.format == "table":
            rows = format_table(records)
            sys.stdout.write("\n".join(rows) + "\n")
            count = len(rows) - 1
        else:
            sys.stdout.flush()
            out = sys.stdout.buffer
            count = write_json(records, out)
            out.flush()
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        print(f"pipesentry eval: cannot read {args.events}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    print(
        f"{stats.events} events, {count} matches, {stats.bad_lines} bad lines, "
        f"{len(result.ruleset.rules)} rules, {len(result.ruleset.correlations)} correlations, "
        f"{len(result.errors) + len(correlation_errors)} rule errors",
        file=sys.stderr,
    )
    skipped = {k: v for k, v in engine.counters.items() if v}
    if skipped:
        print("correlation skips: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())), file=sys.stderr)
    if stats.events == 0 and stats.bad_lines > 0:
        return 1
    return 0
