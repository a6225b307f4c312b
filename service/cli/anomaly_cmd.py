"""``pipesentry anomaly replay|check``: run anomaly checks over a recorded stream, offline.

``replay`` runs NDJSON events through the pipeline core ``pipesentry run`` and
``pipesentry eval`` use (:func:`service.pipeline.replay.replay_file`: the same file
source, decoder, event time and alert ids) with only the anomaly checks loaded, so
a backtest cannot disagree with production. Each event's time is read from the
service's configured time fields (``events.timestamp_fields`` of ``--config``, whose
default is the list of :mod:`detectors.event`; ``--timestamp-field``, repeatable,
replaces it); an event without a usable one takes the time it is read at, as in
``run``, and the summary says how many did and which fields were looked for.
``--checks`` defaults to the configuration's ``anomaly.checks``. It prints one JSON object per alert: check id, key, event time of
the alert, observed value, expected band or baseline, score, window, ``alert_key``
and ``alert_id``. A summary (events, alerts, skips by reason, checks still
learning) goes to stderr. ``--state-in``/``--state-out`` load and save an engine
snapshot, so a replay can continue where another stopped (the same format the
service persists per scope).

``check`` validates check files and exits 1 when any check is invalid.

Exit codes (:mod:`service.cli.output`): 0 ok; 1 no valid check, bad lines (unless
``--allow-bad-lines``), a state file that cannot be restored, or a check file with errors
for ``check``; 2 usage error (bad flags, invalid ``--config``, an input that cannot be
opened); 3 the input failed while being read.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from detectors.alert import Alert, build_alert
from detectors.anomaly import AnomalyEngine, CheckError
from detectors.event import DEFAULT_TIME_FIELDS, BadTimestamp, event_time, parse_timestamp
from detectors.model import Origin
from detectors.sigma import Ruleset
from detectors.state import StateError
from service.anomaly_checks import load_check_files
from service.cli import anomaly_explain
from service.cli.eval_cmd import logsource_arg
from service.cli.output import FAILED, OK, UNAVAILABLE, USAGE, add_format, column, write_records
from service.config import ConfigError, load_settings
from service.decoders import Decoder, build_decoder
from service.detection import DetectionSet
from service.pipeline import tune_gc
from service.pipeline.replay import Replayed, reject_text, replay_file
from service.sources.base import InputSpec, Rejected


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("anomaly", help="replay or validate anomaly checks",
                                   description="Run anomaly checks over recorded events, or validate check files.")
    sub = parser.add_subparsers(dest="anomaly_command", metavar="ACTION", required=True)

    replay = sub.add_parser("replay", help="run checks over an NDJSON stream in event time",
                            description="Run anomaly checks over NDJSON events; one JSON object per alert.")
    replay.add_argument("--config", "-c", type=Path, default=None, metavar="FILE",
                        help="the service's settings file: its events.timestamp_fields and anomaly.checks")
    replay.add_argument("--checks", action="append", default=None, metavar="FILE",
                        help="check file (YAML; repeatable; default: anomaly.checks of --config)")
    replay.add_argument("--timestamp-field", action="append", default=None, metavar="FIELD",
                        help="event-time field (repeatable; replaces the configured events.timestamp_fields,"
                             " by default: " + ", ".join(DEFAULT_TIME_FIELDS) + ")")
    add_format(replay, "json", what="alerts")
    replay.add_argument("--allow-bad-lines", action="store_true",
                        help="exit 0 even when some lines are not events (they are still reported on stderr)")
    replay.add_argument("--decoder", default="json", metavar="NAME", help="decoder of each line (default json)")
    replay.add_argument("--logsource", type=logsource_arg, default=None, metavar="SPEC",
                        help="log source of every event, e.g. product=github,service=audit")
    replay.add_argument("--max-keys", type=int, default=100_000, metavar="N",
                        help="keys kept per check before LRU eviction (default 100000)")
    replay.add_argument("--until", default=None, metavar="TIME",
                        help="advance the clock to TIME at the end (closes windows, detects silence)")
    replay.add_argument("--state-in", type=Path, default=None, metavar="FILE", help="snapshot to start from")
    replay.add_argument("--state-out", type=Path, default=None, metavar="FILE", help="write a snapshot at the end")
    replay.add_argument("--explain", action="store_true",
                        help="add to each metric alert what the model expected: centre, season and phase, band, "
                             "what set its width, probability")
    replay.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="draw one metric key's series with its band and alerts (needs matplotlib: "
                             "pip install 'pipesentry[plot]')")
    replay.add_argument("--plot-check", default=None, metavar="ID", help="metric check to plot (default: the first)")
    replay.add_argument("--plot-key", default=None, metavar="FIELD=VALUE[,...]",
                        help="key to plot (default: the key of the first alert, else the first key)")
    replay.add_argument("events", metavar="EVENTS", help="NDJSON file, or - for stdin")
    replay.set_defaults(func=run_replay)

    check = sub.add_parser("check", help="validate check files; exit 1 on any error",
                           description="Parse and validate anomaly check files.")
    check.add_argument("paths", nargs="+", metavar="FILE")
    check.set_defaults(func=run_check)


def alert_record(alert: Alert) -> dict[str, Any]:
    """The JSON object printed for one alert."""
    details = dict(alert.details or {})
    return {
        "check": details.pop("check", alert.rule.id),
        "check_type": details.pop("check_type", None),
        "title": alert.rule.title,
        "level": alert.rule.level,
        "key": details.pop("key", {}),
        "event_time": details.pop("event_time", None),
        "observed": details.pop("observed", None),
        "expected": details.pop("expected", None),
        "score": details.pop("score", None),
        **details,
        "alert_id": alert.id,
    }


ALERT_COLUMNS = (
    column("EVENT_TIME", "event_time", 24), column("LEVEL", "level", 13), column("CHECK", "check", 30),
    column("KEY", "key", 40), column("OBSERVED", "observed", 20), column("EXPECTED", "expected", 40),
    column("SCORE", "score", 8), column("ALERT_ID", "alert_id", 32),
)


class _Untimed:
    """The input's decoder, counting the events without a usable time (they take the time read)."""

    def __init__(self, decoder: Decoder, time_fields: Sequence[str]) -> None:
        self.decoder = decoder
        self.time_fields = tuple(time_fields)
        self.count = 0

    def __call__(self, data: bytes) -> list[dict[str, Any]]:
        events = self.decoder(data)
        self.count += sum(1 for event in events if event_time(event, self.time_fields) is None)
        return events


def _fail(message: str, code: int) -> int:
    print(f"pipesentry anomaly replay: {message}", file=sys.stderr)
    return code


def run_replay(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(str(exc), USAGE)
    check_files = list(args.checks) if args.checks else [str(p) for p in settings.anomaly.checks]
    if not check_files:
        return _fail("give --checks or a --config with anomaly.checks", USAGE)
    specs, errors = load_check_files(check_files)
    for error in errors:
        print(f"check error: {error}", file=err)
    engine = AnomalyEngine(specs, max_keys_per_check=args.max_keys)
    for error in engine.errors:
        print(f"check error: {error}", file=err)
    if not engine.checks:
        return _fail("no valid check", FAILED)
    if args.state_in is not None:
        try:
            dropped = engine.restore(orjson.loads(args.state_in.read_bytes()))
        except (OSError, orjson.JSONDecodeError, StateError) as exc:
            return _fail(f"cannot restore {args.state_in}: {exc}", FAILED)
        for cid in dropped:
            print(f"state of check {cid} dropped (configuration changed or state unusable)", file=err)
    until: float | None = None
    if args.until is not None:
        try:
            until = parse_timestamp(args.until)
        except BadTimestamp as exc:
            return _fail(f"--until: {exc}", USAGE)
    try:
        recorder = _recorder(args, engine)
    except (ValueError, anomaly_explain.PlotUnavailable) as exc:
        return _fail(str(exc), USAGE)
    time_fields = tuple(args.timestamp_field or settings.events.timestamp_fields)
    try:
        untimed = _Untimed(build_decoder(args.decoder, {}), time_fields)
    except KeyError as exc:
        return _fail(f"--decoder: {exc.args[0]}", USAGE)
    path = None if args.events == "-" else args.events
    spec = InputSpec("stdin" if path is None else f"file:{path}", untimed, args.logsource, time_fields)
    try:
        stream = sys.stdin.buffer if path is None else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        return _fail(f"cannot open {args.events}: {exc.strerror or exc}", USAGE)

    def on_reject(line: int, reject: Rejected) -> None:
        print(f"line {line}: {reject_text(reject)}", file=err)

    detection = DetectionSet(Ruleset([], [], [], [], {"regex_timeouts": 0}, recipes=()), anomaly=engine)
    tune_gc()
    try:
        replayed = replay_file(stream, spec, detection, path=path, on_reject=on_reject)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        return _fail(f"cannot read {args.events}: {exc.strerror or exc}", UNAVAILABLE)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    alerts = [alert for _, alert in replayed.alerts]
    if until is not None:
        alerts.extend(_advance(replayed, engine, until))
    records = [alert_record(alert) for alert in alerts]
    write_records([recorder.annotate(r) for r in records] if recorder else records, ALERT_COLUMNS, args.format)
    sys.stdout.flush()
    if recorder is not None and args.plot is not None:
        try:
            drawn = anomaly_explain.draw(recorder, args.plot)
        except OSError as exc:
            return _fail(f"cannot write {args.plot}: {exc.strerror or exc}", UNAVAILABLE)
        print(f"plot: {args.plot} ({recorder.title()}, {drawn} points, {len(recorder.alerts)} alerts)", file=err)
    if args.state_out is not None:
        args.state_out.write_bytes(orjson.dumps(engine.snapshot()))
    _summary(engine, replayed, len(alerts), untimed, err)
    if replayed.bad_lines > 0 and (replayed.events == 0 or not args.allow_bad_lines):
        if replayed.events > 0:
            print(f"pipesentry anomaly replay: {replayed.bad_lines} bad lines (--allow-bad-lines accepts them)",
                  file=err)
        return FAILED
    return OK


def _recorder(args: argparse.Namespace, engine: AnomalyEngine) -> anomaly_explain.Recorder | None:
    """``--explain``/``--plot``: observe the metric checks (``ValueError``/``PlotUnavailable``: usage)."""
    if not args.explain and args.plot is None:
        return None
    if args.plot is not None:
        anomaly_explain.require_matplotlib()
    key = anomaly_explain.parse_key(args.plot_key) if args.plot_key is not None else None
    return anomaly_explain.Recorder(engine, explain=args.explain, plot=args.plot is not None,
                                    plot_check=args.plot_check, plot_key=key)


def _advance(replayed: Replayed, engine: AnomalyEngine, until: float) -> list[Alert]:
    """``--until``: alerts due once event time reaches ``until`` (windows close, keys fall silent)."""
    with replayed.detector.exclusive():
        matches = engine.advance(until)
    now = time.time()
    origin = replayed.source.last_origin or Origin("replay")
    return [build_alert(match, {}, origin, event_time=until, now=now) for match in matches]


def _summary(engine: AnomalyEngine, replayed: Replayed, alerts: int, untimed: _Untimed, err: IO[str]) -> None:
    skips = {k: v for k, v in sorted(engine.counters.items()) if v and k != "alerts"}
    learning = sorted(cid for cid, flag in engine.learning().items() if flag)
    print(f"{replayed.events} events, {alerts} alerts, {replayed.bad_lines} bad lines, "
          f"{untimed.count} events without a time (taken at the time read), {len(engine.checks)} checks", file=err)
    if untimed.count:
        print(f"{untimed.count} events have no time field (looked for: {', '.join(untimed.time_fields)});"
              " give --timestamp-field or events.timestamp_fields in --config", file=err)
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
    return FAILED if problems else OK
