"""``pipesentry eval``: run the rules over a file of events, offline, through the service's pipeline.

Input is NDJSON (one event per line, read by the input's decoder) from a file or ``-``
(stdin), or a JSON document (:mod:`service.cli.event_files`): a JSON array of events or a
rule's own test file ``X.events.json`` from the rule pack (``{"match": [...], "nomatch": [...]}``,
correlation sequences included). The events go through the very pipeline ``pipesentry run`` uses
(:mod:`service.pipeline`: native screen, decoder, Sigma rules, correlation rules,
anomaly checks) with the same settings (``--config``: the service's configuration
file; the input's settings are those of the ``files:`` entry for this path, else of
``stdin``), and each line gets the origin the live input would give it. So ``eval``
prints the alerts ``run`` raises for the same stream, with the same ``alert_id``
(for a file: read through ``files:`` with ``start_at: beginning`` under the same path;
for ``-``: piped to ``run``'s stdin; a JSON document: its events piped, one per line, to
``run``'s stdin). Events without a usable time field take the time they are read at, as in
``run`` (a test file's ``ts``, where it gives one).

Routing: ``--logsource`` gives every event a log source, so only the rules written for it
apply, as in ``run`` (where each input has its log source). Without it every rule applies to
every event (unrouted), except that a test file ``X.events.json`` takes the log source of the
rule ``X.yml`` beside it and correlation test items carry their own. A correlation test file's
sequences (cases) each run as a stream of their own on fresh correlation and anomaly state, so one
case cannot complete another's correlation; the events of a detection rule's test file are one stream.

Output is one JSON object per alert on stdout (``--format json``, the default), an aligned
table (``table``) or CSV (``csv``); ``--min-level`` and ``--status`` keep the alerts of rules
at or above a level and of the given statuses (every rule still runs: correlations see their
building blocks). Diagnostics (rule load errors, lines the decoder rejects) go to stderr.

Exit codes (:mod:`service.cli.output`): ``0`` the input was read (an empty input is fine);
``1`` bad lines (unless ``--allow-bad-lines``), no event at all among the lines, or no rule
could be loaded (every rule path failed); ``2`` usage error (bad arguments, malformed
``--logsource``, unreadable ``--config``, an input that cannot be opened); ``3`` the input
failed while being read.

Correlation rules evaluate the input as a time-ordered stream; alerts decided at the end
of the input (windows still open) carry the last line: ``run`` decides those later, when
its heartbeat moves event time on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import orjson

from detectors.alert import Alert, build_alert
from detectors.model import LEVELS, LogSource, RuleInfo, level_rank
from service.cli.event_files import (
    MAX_DOCUMENT_BYTES,
    EventDocument,
    EventFileError,
    looks_like_document,
    parse_document,
    sibling_rule_logsource,
)
from service.cli.output import (
    FAILED,
    OK,
    UNAVAILABLE,
    USAGE,
    Column,
    add_format,
    cell_text,
    column,
    write_records,
)
from service.cli.rules_cmd import print_load_errors
from service.config import ConfigError, EventSettings, InputSettings, Settings, load_settings
from service.detection import DetectionSet, Detector, compile_detection
from service.pipeline import tune_gc
from service.pipeline.replay import LineFileSource, logsource_spec, reject_text, replay_file
from service.sources.base import InputSpec, Rejected

MatchRecord = dict[str, Any]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="run the rules over events (NDJSON, JSON array, X.events.json) offline, as pipesentry run would",
        description="Run Sigma rules, correlations and anomaly checks over a file of events (NDJSON, a JSON"
                    " array, or a rule pack's X.events.json test file) through the service's pipeline and"
                    " print the alerts. Give --logsource (the routed form, as in pipesentry run); without it"
                    " every rule applies to every event.",
        epilog="exit codes: 0 ok; 1 bad lines (unless --allow-bad-lines), no event, or no rule loaded;"
               " 2 usage or unreadable input; 3 read failure",
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
    add_format(parser, "json", what="alerts")
    parser.add_argument("--min-level", choices=LEVELS, default=None, metavar="LEVEL",
                        help="print only alerts of rules at this level or above (" + ", ".join(LEVELS) + ")")
    parser.add_argument("--status", action="append", default=None, metavar="STATUS",
                        help="print only alerts of rules with this status (repeatable or comma-separated:"
                             " stable, test, experimental, deprecated, unsupported); rules without a status"
                             " (anomaly checks) are left out")
    parser.add_argument("--allow-bad-lines", action="store_true",
                        help="exit 0 even when some lines are not events (they are still reported on stderr)")
    parser.add_argument("--input-format", choices=("auto", "ndjson", "json"), default="auto",
                        help="auto (default): a JSON document when the name ends in .json or the input starts"
                             " with '[', else NDJSON; json: a JSON array or a rule test file; ndjson: JSON lines")
    parser.add_argument("--field-names", choices=("insensitive", "sensitive"), default=None,
                        help="how rule field names meet event keys: insensitive (User matches user) or"
                             " sensitive (spelled exactly) (default: rules.field_names, insensitive)")
    parser.add_argument("--rules-cache", type=Path, default=None, metavar="DIR",
                        help="keep the compiled ruleset in DIR and start from it while the rules are unchanged"
                             " (default: rules.cache_dir; none: compile every time)")
    parser.add_argument("events", nargs="?", default="-", metavar="EVENTS",
                        help="NDJSON file, JSON array, rule test file (X.events.json), or - for stdin (default)")
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


def write_json(records: Iterable[Record], out: IO[bytes]) -> int:
    """One JSON line per record (:meth:`Record.json`), written a block of lines at a time."""
    count = 0
    rules: dict[int, tuple[RuleInfo, bytes, bytes]] = {}
    block: list[bytes] = []
    for record in records:
        block.append(record.json(rules))
        if len(block) >= WRITE_BLOCK:
            out.write(b"".join(block))
            count += len(block)
            block.clear()
    if block:
        out.write(b"".join(block))
        count += len(block)
    return count


WRITE_BLOCK = 1000
"""Records rendered between two writes of :func:`write_json`."""


def _matched_text(record: Mapping[str, Any]) -> str:
    parts = []
    for item in record["matched"]:
        shown = cell_text(item["value"])
        parts.append(f"{item['field']}={shown}" if item["field"] else shown)
    return ", ".join(parts)


TABLE_COLUMNS: tuple[Column, ...] = (
    Column("LINE", lambda r: r.get("case") or r["line"], 16), column("LEVEL", "level", 13),
    column("RULE_ID", "rule_id", 36), column("TITLE", "rule_title", 60), column("AUTHOR", "rule_author", 30),
    Column("MATCHED", _matched_text, 80),
)


def format_table(records: Iterable[MatchRecord]) -> list[str]:
    """Aligned rows (header first); long cells are cut with an ellipsis."""
    from service.cli.output import table_lines

    return table_lines(list(records), TABLE_COLUMNS)


_NO_CASE = object()


class Record:
    """One alert as ``eval`` prints it: its line, id, rule and matched fields (and, for a rule test
    file, its case). Kept this compact until printed; :meth:`as_dict` is the printed document and
    :meth:`json` its JSON line, rendered without building it (the rule's part once per rule)."""

    __slots__ = ("alert_id", "case", "details", "line", "matched", "rule")

    def __init__(self, line: int, alert: Alert) -> None:
        self.line = line
        self.alert_id = alert.id
        self.rule = alert.rule
        self.matched = alert.matched
        self.details = alert.details
        self.case: Any = _NO_CASE
        """The test file's case label (rule test files only)."""

    def as_dict(self) -> MatchRecord:
        """The printed document: line, id, the rule's part, tags, matched fields, details, case."""
        record: MatchRecord = {"line": self.line, "alert_id": self.alert_id, **_rule_part(self.rule),
                               "tags": list(self.rule.tags),
                               "matched": [{"field": name, "value": value} for name, value in self.matched]}
        if self.details:
            record["details"] = dict(self.details)
        if self.case is not _NO_CASE:
            record["case"] = self.case
        return record

    def json(self, rules: dict[int, tuple[RuleInfo, bytes, bytes]] | None = None) -> bytes:
        """``orjson.dumps(self.as_dict(), default=str)`` and a newline, byte for byte: the document's
        parts are rendered one by one (``rules`` keeps each rule's part, id(rule) -> (rule, the part
        after the id, the whole line of an alert that shows no field as a ``line, id`` template))."""
        rule = self.rule
        known = rules.get(id(rule)) if rules is not None else None
        if known is None or known[0] is not rule:
            part = orjson.dumps({**_rule_part(rule), "tags": list(rule.tags)}, default=str)
            tail = b"," + part[1:-1] + b',"matched":'
            known = (rule, tail, b'{"line":%d,"alert_id":"%b"' + tail.replace(b"%", b"%%") + b"[]}\n")
            if rules is not None:
                rules[id(rule)] = known
        alert_id = self.alert_id.encode()
        line = self.line
        if type(line) is not int or not alert_id.isalnum():  # ASCII letters and digits: JSON escapes none
            return orjson.dumps(self.as_dict(), default=str, option=orjson.OPT_APPEND_NEWLINE)  # never, for ids we make
        matched = self.matched
        if not matched and not self.details and self.case is _NO_CASE:
            return known[2] % (line, alert_id)  # most alerts of most rules
        head = b'{"line":%d,"alert_id":"%b"%b%b' % (
            line, alert_id, known[1],
            orjson.dumps([{"field": name, "value": value} for name, value in matched], default=str) if matched else b"[]")
        if not self.details and self.case is _NO_CASE:
            return head + b"}\n"
        parts = [head]
        if self.details:
            parts += (b',"details":', orjson.dumps(dict(self.details), default=str))
        if self.case is not _NO_CASE:
            parts += (b',"case":', orjson.dumps(self.case, default=str))
        parts.append(b"}\n")
        return b"".join(parts)


def _rule_part(rule: RuleInfo) -> dict[str, Any]:
    return {"rule_id": rule.id, "rule_title": rule.title, "level": rule.level, "rule_status": rule.status,
            "rule_author": rule.author, "rule_ruleset": rule.ruleset, "rule_kind": rule.kind}


def alert_record(line: int, alert: Alert) -> MatchRecord:
    """The JSON document printed for one alert: its id (as ``run`` gives it), rule and matched fields."""
    return Record(line, alert).as_dict()


def alert_records(alerts: Iterable[tuple[int, Alert]]) -> list[Record]:
    """The :class:`Record` of each ``(line, alert)`` (made here, slot by slot: one per alert)."""
    out = []
    for line, alert in alerts:
        record = _new(Record)
        record.line = line
        record.alert_id = alert.id
        record.rule = alert.rule
        record.matched = alert.matched
        record.details = alert.details
        record.case = _NO_CASE
        out.append(record)
    return out


_new = object.__new__


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

    records: list[Record]
    events: int = 0
    bad_lines: int = 0
    skips: dict[str, int] = field(default_factory=dict)
    """Correlation skips by reason (late events, evicted keys...)."""


@dataclass
class Input:
    """The opened input: a stream of lines and, for a JSON document, its items (line ``n`` is item ``n-1``)."""

    stream: IO[bytes]
    document: EventDocument | None = None
    logsource: LogSource | None = None
    """The log source of every event when ``--logsource`` is not given (a test file's rule's)."""


def open_input(args: argparse.Namespace, err: IO[str]) -> Input:
    """The input named by ``args.events``: NDJSON as a stream, a JSON document parsed whole.

    Raises OSError (cannot open or read) and EventFileError (a JSON document that holds no events).
    """
    name = args.events
    stream = _open_input(name)
    if args.input_format == "ndjson":
        return Input(stream)
    peek = getattr(stream, "peek", None)
    head: bytes = peek(64) if peek is not None else b""
    if args.input_format == "auto" and not looks_like_document(name if name != "-" else "", head):
        return Input(stream)
    try:
        data = stream.read(MAX_DOCUMENT_BYTES + 1)  # bounded: a larger document must be NDJSON
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if len(data) > MAX_DOCUMENT_BYTES and name != "-" and data.lstrip()[:1] == b"{":
        return Input(_open_input(name))  # a large .json file of JSON lines
    doc = parse_document(data)
    if doc is None:
        if args.input_format == "json" or data.lstrip()[:1] == b"[":
            raise EventFileError("not a JSON document (one JSON array or a rule test file)")
        # a .json file holding JSON lines: read it again as the file it is (its origins are the file's)
        return Input(_bytes_stream(data) if name == "-" else _open_input(name))
    found = Input(doc.ndjson(), doc)
    if doc.pipeline and not args.pipeline:
        print(f"{name}: written for the processing pipeline {doc.pipeline} (give --pipeline <pack>/{doc.pipeline})",
              file=err)
    if name != "-" and args.logsource is None and args.logsource_field is None:
        sibling = sibling_rule_logsource(Path(name))
        if sibling is not None:
            rule, found.logsource = sibling
            print(f"{name}: log source {_logsource_text(found.logsource)} of {rule.name} (--logsource overrides it)",
                  file=err)
    return found


def _bytes_stream(data: bytes) -> IO[bytes]:
    import io

    return io.BytesIO(data)


def _logsource_text(ls: LogSource) -> str:
    return ",".join(f"{k}={v}" for k, v in ls.as_dict().items())


def evaluate(settings: Settings, args: argparse.Namespace, source: Input, err: IO[str],
             detection: DetectionSet) -> Evaluation:
    """Run the input through the pipeline core with ``settings`` and collect the alerts.

    A rule test file with event sequences (correlation cases) runs each case as a stream of its own,
    on fresh correlation and anomaly state, so one case cannot complete another's correlation."""
    document = source.document
    if document is None or not document.has_sequences():
        return _evaluate(settings, args, source.stream, source, document, err, detection)
    total = Evaluation([])
    offset = 0
    for items in document.cases():
        case = EventDocument(items)
        correlation, anomaly = detection.new_engines()
        fresh = replace(detection, correlation=correlation, anomaly=anomaly)
        part = _evaluate(settings, args, case.ndjson(), source, case, err, fresh, line_offset=offset)
        total.records.extend(part.records)
        total.events += part.events
        total.bad_lines += part.bad_lines
        for reason, count in part.skips.items():
            total.skips[reason] = total.skips.get(reason, 0) + count
        offset += len(items)
    return total


def _evaluate(settings: Settings, args: argparse.Namespace, stream: IO[bytes], source: Input,
              document: EventDocument | None, err: IO[str], detection: DetectionSet, *,
              line_offset: int = 0) -> Evaluation:
    from_stdin = args.events == "-" or document is not None  # a document's lines are piped, as stdin
    base = InputSpec.from_settings(f"file:{args.events}" if args.events != "-" else "stdin",
                                   _input_settings(settings, args.events), settings.events.timestamp_fields)
    logsource = args.logsource if args.logsource is not None else source.logsource
    if args.decoder is not None or logsource is not None or args.time_field:
        from service.decoders import build_decoder

        base = InputSpec(base.name, build_decoder(args.decoder, {}) if args.decoder else base.decoder,
                         logsource if logsource is not None else base.logsource,
                         tuple(args.time_field) if args.time_field else base.time_fields)

    def on_reject(line: int, reject: Rejected) -> None:
        print(f"{_where(document, line)}: {reject_text(reject)}", file=err)

    spec_of = logsource_spec(args.logsource_field, base) if args.logsource_field else None
    received_at = None
    if document is not None:
        spec_of = _item_specs(document, base) if spec_of is None else spec_of
        received_at = _item_times(document)
    records: list[Record] = []
    replayed = replay_file(stream, base, detection, path=None if from_stdin else args.events,
                           on_reject=on_reject, screen=settings.events.screen, scope=settings.state.scope,
                           spec_of=spec_of, received_at=received_at, alert_events=False,  # records keep neither
                           on_alerts=lambda alerts: records.extend(alert_records(alerts)))
    records.extend(alert_records((replayed.source.last_line, alert)
                                 for alert in _flush(replayed.detector, replayed.source)))
    if document is not None:
        for record in records:
            record.case = document.items[record.line - 1].label
            record.line += line_offset
    engine = detection.correlation
    skips = {k: v for k, v in engine.counters.items() if v} if engine is not None else {}
    return Evaluation(records, replayed.events, replayed.bad_lines, skips)


def _where(document: EventDocument | None, line: int) -> str:
    return f"line {line}" if document is None else f"event {document.items[line - 1].label}"


def _item_specs(document: EventDocument, base: InputSpec) -> Any:
    """Each line's spec in turn: the item's own log source (correlation test items), else ``base``'s.
    The file source asks once per line, in order (every line of a document is non-blank)."""
    specs: dict[LogSource | None, InputSpec] = {base.logsource: base}
    order = iter(document.items)

    def spec_of(line: bytes) -> InputSpec:
        item = next(order, None)
        ls = item.logsource if item is not None and item.logsource is not None else base.logsource
        spec = specs.get(ls)
        if spec is None:
            spec = specs[ls] = InputSpec(base.name, base.decoder, ls, base.time_fields)
        return spec

    return spec_of


def _item_times(document: EventDocument) -> Any:
    def received_at(line: int) -> float | None:
        return document.items[line - 1].ts if 0 < line <= len(document.items) else None

    return received_at


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


def _statuses(values: list[str] | None) -> frozenset[str] | None:
    if not values:
        return None
    return frozenset(part.strip().lower() for value in values for part in value.split(",") if part.strip())


def keep(record: Record, min_level: str | None, statuses: frozenset[str] | None) -> bool:
    """``--min-level`` and ``--status``: whether an alert is printed."""
    if min_level is not None and level_rank(str(record.rule.level)) < level_rank(min_level):
        return False
    status = record.rule.status
    return statuses is None or (isinstance(status, str) and status.lower() in statuses)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"pipesentry eval: {exc}", file=sys.stderr)
        return USAGE
    rules = [Path(p) for p in args.rules] if args.rules else settings.rules.resolved_paths()
    if not args.rules and args.config is None:
        print("pipesentry eval: give --rules or --config", file=sys.stderr)
        return USAGE
    statuses = _statuses(args.status)
    if args.decoder is not None:
        from service.decoders import build_decoder

        try:
            build_decoder(args.decoder, {})
        except KeyError as exc:
            print(f"pipesentry eval: --decoder: {exc.args[0]}", file=sys.stderr)
            return USAGE
    pipelines = [Path(p) for p in args.pipeline] if args.pipeline else list(settings.rules.pipelines)
    checks = [Path(p) for p in args.checks] if args.checks else list(settings.anomaly.checks)
    outcome = compile_detection(rules, pipelines, skip_invalid=True, correlation=settings.correlation.enabled,
                                anomaly_checks=checks, correlation_max_keys=settings.correlation.max_keys,
                                correlation_lateness_s=settings.correlation.allowed_lateness,
                                regex_timeout_ms=settings.rules.regex_timeout_ms,
                                rules_cache=args.rules_cache or settings.rules.cache_dir,
                                field_names=args.field_names or settings.rules.field_names)
    detection = outcome.detection
    tune_gc(collect=False)  # the ruleset is long-lived, the events are not (load_rules collected and froze it)
    assert detection is not None  # skip_invalid: always a set
    print_load_errors(list(outcome.errors), sys.stderr)
    ruleset = detection.ruleset
    if outcome.errors and not ruleset.rules and not ruleset.correlations and detection.anomaly is None:
        print("pipesentry eval: no rule could be loaded", file=sys.stderr)
        return FAILED
    try:
        source = open_input(args, sys.stderr)
    except OSError as exc:
        print(f"pipesentry eval: cannot open {args.events}: {exc.strerror or exc}", file=sys.stderr)
        return USAGE
    except EventFileError as exc:
        print(f"pipesentry eval: {args.events}: {exc}", file=sys.stderr)
        return FAILED
    try:
        result = evaluate(settings, args, source, sys.stderr, detection)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        print(f"pipesentry eval: cannot read {args.events}: {exc.strerror or exc}", file=sys.stderr)
        return UNAVAILABLE
    finally:
        if source.stream is not sys.stdin.buffer:
            source.stream.close()
    shown = result.records
    if args.min_level is not None or statuses is not None:
        shown = [r for r in shown if keep(r, args.min_level, statuses)]
    if args.format == "json":
        sys.stdout.flush()
        out = sys.stdout.buffer
        count = write_json(shown, out)
        out.flush()
    else:
        count = write_records([record.as_dict() for record in shown], TABLE_COLUMNS, args.format)
    stats = result
    checks_loaded = len(detection.anomaly.checks) if detection.anomaly is not None else 0
    hidden = len(result.records) - len(shown)
    print(
        f"{stats.events} events, {count} matches{f' ({hidden} filtered out)' if hidden else ''}, "
        f"{stats.bad_lines} bad lines, "
        f"{len(ruleset.rules)} rules, {len(ruleset.correlations)} correlations, {checks_loaded} checks, "
        f"{len(outcome.errors)} rule errors",
        file=sys.stderr,
    )
    if result.skips:
        print("correlation skips: " + ", ".join(f"{k}={v}" for k, v in sorted(result.skips.items())),
              file=sys.stderr)
    if stats.bad_lines > 0 and (stats.events == 0 or not args.allow_bad_lines):
        if stats.events > 0:
            print(f"pipesentry eval: {stats.bad_lines} bad lines (--allow-bad-lines accepts them)", file=sys.stderr)
        return FAILED
    return OK
