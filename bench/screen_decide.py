"""The native screen's ``Screen.decide`` alone, per lane: events per CPU second (issue 19).

    python bench/screen_decide.py --rules DIR [--rules-cache DIR] LANE.jsonl ... [--rounds 5] [--json F]

``pipesentry eval`` spends much of a no-match or raw-Windows event in ``decide``; timing the whole
process buries a change to it under decoding, rule loading and output. This loads the rules as
``eval`` does (default settings, ``--rules-cache`` to skip compiling), takes the screen ``eval``
uses for events without a log source, and calls ``decide`` over each file's lines in batches of
``--batch`` (``eval`` reads 1,000 lines a batch), ``--rounds`` times, after one warm-up round (the
screen builds a field's automaton on its first value), with ``eval``'s garbage collector
thresholds. Figures are CPU time, median with min and
max over the rounds, and a digest of every round's decisions (equal digests: equal decisions; it
must not change with a change meant to be faster only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.cli.eval_cmd import _input_settings  # noqa: E402
from service.config import load_settings  # noqa: E402
from service.detection import compile_detection  # noqa: E402
from service.gctune import tune_gc  # noqa: E402
from service.screening import screening_for  # noqa: E402
from service.sources.base import InputSpec  # noqa: E402


def load_screen(rules: Path, cache: Path | None) -> tuple[Any, int, int]:
    """The screen ``eval`` uses on events without a log source, with its size and depth limits."""
    settings = load_settings(None)
    outcome = compile_detection([rules], [], skip_invalid=True, correlation=settings.correlation.enabled,
                                rules_cache=cache,
                                field_names=settings.rules.field_names)
    assert outcome.detection is not None
    spec = InputSpec.from_settings("stdin", _input_settings(settings, "-"), settings.events.timestamp_fields)
    screening = screening_for(spec, outcome.detection)
    if screening is None:
        raise SystemExit("no native screen (is the extension built?)")
    screen, _, max_bytes, max_depth = screening
    return screen, max_bytes, max_depth


def lane(screen: Any, lines: list[bytes], batch: int, rounds: int, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """Decide ``lines`` a batch at a time, one warm-up round and ``rounds`` timed ones."""
    batches = [lines[i:i + batch] for i in range(0, len(lines), batch)]
    times: list[float] = []
    digests = set()
    for round_ in range(rounds + 1):
        digest = hashlib.sha256()
        spent = 0.0
        picked = 0
        for values in batches:  # each batch's result dropped before the next, as `eval` does
            started = time.process_time()
            chosen, _, decisions = screen.decide(values, [], None, max_bytes, max_depth)
            spent += time.process_time() - started
            digest.update(repr((chosen, decisions)).encode())
            picked += len(chosen)
            del chosen, decisions
        digests.add(digest.hexdigest())
        if round_:
            times.append(spent)
    rates = sorted(len(lines) / spent for spent in times)
    return {"events": len(lines), "picked": picked, "events_per_cpu_s": round(statistics.median(rates)),
            "min": round(rates[0]), "max": round(rates[-1]),
            "us_per_event": round(statistics.median(times) / len(lines) * 1e6, 3),
            "digest": digests.pop()[:16] if len(digests) == 1 else "differs between rounds"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lanes", nargs="+", type=Path, help="JSON lines files (bench/peers.py's workloads)")
    parser.add_argument("--rules", type=Path, required=True)
    parser.add_argument("--rules-cache", type=Path)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    screen, max_bytes, max_depth = load_screen(args.rules, args.rules_cache)
    tune_gc(collect=False)  # as `eval` does after loading the rules
    figures = {}
    for path in args.lanes:
        lines = [line.rstrip(b"\n") for line in path.read_bytes().splitlines() if line.strip()]
        figures[path.stem] = lane(screen, lines, args.batch, args.rounds, max_bytes, max_depth)
        print(path.stem, json.dumps(figures[path.stem]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
