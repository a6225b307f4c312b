"""``pipesentry anomaly replay|check``: run anomaly checks over a recorded stream, offline.

``replay`` reads NDJSON events in order and runs the checks in event time: the
clock is each event's ``--timestamp-field`` (default ``@timestamp``; events
without a readable one reuse the previous event's time, and events before the
first timestamp are skipped and counted). It prints one JSON object per alert:
check id, key, event time of the alert, observed value, expected band or
baseline, score, window and ``alert_key``. A summary (events, alerts, skips by
reason, checks still learning) goes to stderr. ``--state-in``/``--state-out``
load and save an engine snapshot, so a replay can continue where another
stopped (the same format the service persists per scope).

``check`` validates check files and exits 1 when any check is invalid.

Exit codes: 0 ok; 1 nothing usable (no valid check, unreadable input, or a
check file with errors for ``check``); 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from detectors.anomaly import AnomalyEngine, CheckError
from detectors.event import MISSING, BadTimestamp, get, parse_timestamp
from detectors.model import LogSource, Match, Origin
from detectors.state import StateError
from service.anomaly_checks import load_check_files
from service.cli.eval_cmd import logsource_arg
from service.decoders import build_decoder
from service.pipeline.replay import numbered_lines, reject_text
from service.sources.base import InputSpec, RawMessage, decode_batch


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("anomaly", help="replay or validate anomaly checks",
                                   description="Run anomaly checks over recorded events, or validate check files.")
    sub = parser.add_subparsers(dest="anomaly_command", metavar="ACTION", required=True)

    replay = sub.add_parser("replay", help="run checks over an NDJSON stream in event time",
                            description="Run anomaly checks over NDJSON events; one JSON object per alert.")
    replay.add_argument("--checks", action="append", required=True, metavar="FILE",
                        help="check file (YAML; repeatable)")
    replay.add_argument("--timestamp-field", default="@timestamp", metavar="FIELD",
                        help="event field holding the event time (default @timestamp)")
    replay.add_argument("--decoder", default="json", metavar="NAME", help="decoder of each line (default json)")
    replay.add_argument("--logsource", type=logsource_arg, default=None, metavar="SPEC",
                        help="log source of every event, e.g. product=github,service=audit")
    replay.add_argument("--max-keys", type=int, default=100_000, metavar="N",
                        help="keys kept per check before LRU eviction (default 100000)")
    replay.add_argument("--until", default=None, metavar="TIME",
                        help="advance the clock to TIME at the end (closes windows, detects silence)")
    replay.add_argument("--state-in", type=Path, default=None, metavar="FILE", help="snapshot to start from")
    replay.add_argument("--state-out", type=Path, default=None, metavar="FILE", help="write a snapshot at the end")
    replay.add_argument("events", metavar="EVENTS", help="NDJSON file, or - for stdin")
    replay.set_defaults(func=run_replay)

    check = sub.add_parser("check", help="validate check files; exit 1 on any error",
                           description="Parse and validate anomaly check files.")
    check.add_argument("paths", nargs="+", metavar="FILE")
    check.set_defaults(func=run_check)


def alert_record(match: Match) -> dict[str, Any]:
    """The JSON object printed for one alert."""
    details = dict(match.details or {})
    return {
        "check": details.pop("check", match.rule.id),
        "check_type": details.pop("check_type", None),
        "title": match.rule.title,
        "level": match.rule.level,
        "key": details.pop("key", {}),
        "event_time": details.pop("event_time", None),
        "observed": details.pop("observed", None),
        "expected": details.pop("expected", None),
        "score": details.pop("score", None),
        **details,
    }


@dataclass
class InputStats:
    """What the reader saw; decides the exit code."""

    lines: int = 0
    events: int = 0
    bad_lines: int = 0


def read_events(stream: IO[bytes], spec: InputSpec, stats: InputStats, err: IO[str]) -> Iterator[dict[str, Any]]:
    """The events of each line, read as ``eval`` and ``run`` read them (the input's decoder through
    :func:`decode_batch`); rejected lines are reported on ``err``."""
    origin = Origin("replay")
    for number, _, line in numbered_lines(stream, stats):
        decoded = decode_batch([RawMessage(line, origin, 0.0)], spec)
        for reject in decoded.rejected:
            stats.bad_lines += 1
            print(f"line {number}: {reject_text(reject)}", file=err)
        for item in decoded.items:
            stats.events += 1
            yield item.event


@dataclass
class _Stats(InputStats):
    no_clock: int = 0
    alerts: int = 0


def replay(engine: AnomalyEngine, events: Iterable[dict[str, Any]], timestamp_field: str,
           logsource: LogSource | None, stats: _Stats) -> Iterator[Match]:
    """Alerts of ``engine`` over ``events``: each event at its own time, the clock at the latest."""
    clock: float | None = None
    for event in events:
        t: float | None = None
        raw = get(event, timestamp_field)
        if raw is not MISSING and raw is not None:
            try:
                t = parse_timestamp(raw)
            except BadTimestamp:
                t = None
        if t is None and clock is None:
            stats.no_clock += 1
            continue
        yield from engine.process(event, t if t is not None else clock or 0.0, logsource)
        if t is not None and (clock is None or t > clock):
            clock = t
            yield from engine.advance(clock)


def run_replay(args: argparse.Namespace) -> int:
    err = sys.stderr
    specs, errors = load_check_files(args.checks)
    for error in errors:
        print(f"check error: {error}", file=err)
    engine = AnomalyEngine(specs, max_keys_per_check=args.max_keys)
    for error in engine.errors:
        print(f"check error: {error}", file=err)
    if not engine.checks:
        print("pipesentry anomaly replay: no valid check", file=err)
        return 1
    if args.state_in is not None:
        try:
            dropped = engine.restore(orjson.loads(args.state_in.read_bytes()))
        except (OSError, orjson.JSONDecodeError, StateError) as exc:
            print(f"pipesentry anomaly replay: cannot restore {args.state_in}: {exc}", file=err)
            return 1
        for cid in dropped:
            print(f"state of check {cid} dropped (configuration changed or state unusable)", file=err)
    until: float | None = None
    if args.until is not None:
        try:
            until = parse_timestamp(args.until)
        except BadTimestamp as exc:
            print(f"pipesentry anomaly replay: --until: {exc}", file=err)
            return 2
    try:
        spec = InputSpec(args.events, build_decoder(args.decoder, {}), args.logsource, (args.timestamp_field,))
    except KeyError as exc:
        print(f"pipesentry anomaly replay: --decoder: {exc.args[0]}", file=err)
        return 2
    stats = _Stats()
    try:
        stream = sys.stdin.buffer if args.events == "-" else open(args.events, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"pipesentry anomaly replay: cannot open {args.events}: {exc.strerror or exc}", file=err)
        return 1
    out = sys.stdout.buffer
    dumps = orjson.dumps
    try:
        matches: Iterable[Match] = replay(engine, read_events(stream, spec, stats, err), args.timestamp_field,
                                          args.logsource, stats)
        for match in matches:
            out.write(dumps(alert_record(match), default=str, option=orjson.OPT_APPEND_NEWLINE))
            stats.alerts += 1
        if until is not None:
            for match in engine.advance(until):
                out.write(dumps(alert_record(match), default=str, option=orjson.OPT_APPEND_NEWLINE))
                stats.alerts += 1
        out.flush()
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if args.state_out is not None:
        args.state_out.write_bytes(orjson.dumps(engine.snapshot()))
    _summary(engine, stats, err)
    if stats.events == 0 and stats.bad_lines > 0:
        return 1
    return 0


def _summary(engine: AnomalyEngine, stats: _Stats, err: IO[str]) -> None:
    skips = {k: v for k, v in sorted(engine.counters.items()) if v and k != "alerts"}
    learning = sorted(cid for cid, flag in engine.learning().items() if flag)
    print(f"{stats.events} events, {stats.alerts} alerts, {stats.bad_lines} bad lines, "
          f"{stats.no_clock} events before the first timestamp, {len(engine.checks)} checks", file=err)
    if skips:
        print("skips: " + ", ".join(f"{k}={v}" for k, v in skips.items()), file=err)
    if learning:
        print("still learning: " + ", ".join(learning), file=err)


def run_check(args: argparse.Namespace) -> int:
    specs, errors = load_check_files(args.paths)
    engine = AnomalyEngine(specs) if specs else None
    problems: Sequence[CheckError] = [*errors, *(engine.errors if engine else [])]
    for error in problems:
        print(f"check error: {error}", file=sys.stderr)
    count = len(engine.checks) if engine else 0
    print(f"{count} checks valid, {len(problems)} errors")
    return 1 if problems else 0
