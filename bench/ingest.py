"""Push-input benchmark: a sidecar following log files, with and without the native screen.

    python bench/ingest.py --json [--events 200000]

The mixed corpus of ``bench/pipeline.py`` (``bench/eventgen.py`` plus CI job logs) is written
as NDJSON, one file per log source. Each file is then followed from its start by the real
``FileFollower`` (the ``files`` input) into ``Pipeline.ingest`` with the rules of
``bench/pipeline.py`` (project rules plus the SigmaHQ cloud, linux, web and application
rules) and a router that only counts alerts; every file is read to its end. The same run
repeats with the screen off, and the two are printed side by side:

* ``files_per_s`` / ``files_unscreened_per_s``: events per second of wall time;
* ``speedup``: their ratio;
* ``alerts`` / ``alerts_unscreened``: must be equal;
* ``screened_share``: events the screen cleared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import _slug, corpus, rule_paths, topic_map  # noqa: E402


class CountingRouter:
    def __init__(self) -> None:
        self.alerts = 0

    async def submit(self, alerts: Sequence[Any]) -> None:
        self.alerts += len(alerts)


def write_files(events: list[tuple[dict[str, str], dict[str, Any]]], folder: Path) -> dict[Path, dict[str, str]]:
    """One NDJSON file per log source; returns each file's log source."""
    lines: dict[str, list[bytes]] = {}
    for ls, event in events:
        lines.setdefault(_slug(ls), []).append(orjson.dumps(event))
    out = {}
    for slug, ls in topic_map(events).items():
        path = folder / f"{slug}.ndjson"
        path.write_bytes(b"\n".join(lines[slug]) + b"\n")
        out[path] = ls
    return out


async def follow_all(files: dict[Path, dict[str, str]], total: int, screen: bool) -> dict[str, Any]:
    from detectors.model import LogSource
    from service.config import Settings
    from service.decoders import build_decoder
    from service.detection import Detector
    from service.metrics import EVENTS_SCREENED
    from service.pipeline import Pipeline, drive, tune_gc
    from service.reload import compile_configured
    from service.sources.base import InputSpec
    from service.sources.filetail import FileFollower

    settings = Settings(rules={"paths": rule_paths(), "skip_invalid": True, "watch": False})
    outcome = compile_configured(settings.rules, settings.correlation, settings.anomaly, 1)
    assert outcome.detection is not None
    tune_gc()
    router = CountingRouter()
    pipeline = Pipeline(Detector(outcome.detection), router, screen=screen)
    decoder = build_decoder("json", {})
    fields = tuple(settings.events.timestamp_fields)
    followers = []
    for path, ls in files.items():
        logsource = LogSource(**ls)
        pipeline.detector.current.ruleset.screen(logsource)  # built before timing (the service builds it lazily)
        spec = InputSpec(path.name, decoder, logsource, fields)
        followers.append(FileFollower(path, spec, start_at="beginning", poll_interval_s=0.01))
    screened_before = EVENTS_SCREENED.labels("file")._value.get()
    stop = asyncio.Event()
    started = time.perf_counter()
    cpu_started = time.process_time()
    tasks = [asyncio.create_task(drive(f, pipeline, stop)) for f in followers]
    while sum(f.lines for f in followers) < total:
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    stop.set()
    await asyncio.gather(*tasks)
    return {"per_s": total / elapsed, "per_cpu_s": total / cpu, "alerts": router.alerts,
            "screened": int(EVENTS_SCREENED.labels("file")._value.get() - screened_before)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from detectors.sigma.screen import AVAILABLE

    events = corpus(args.events)
    with tempfile.TemporaryDirectory(prefix="pipesentry-ingest-") as tmp:
        files = write_files(events, Path(tmp))
        screened = await follow_all(files, len(events), screen=True)
        plain = await follow_all(files, len(events), screen=False)
    return {
        "events": len(events),
        "files": len(files),
        "native_screen": AVAILABLE,
        "files_per_s": round(screened["per_s"]),
        "files_unscreened_per_s": round(plain["per_s"]),
        "speedup": round(screened["per_s"] / plain["per_s"], 2),
        "files_per_cpu_s": round(screened["per_cpu_s"]),
        "files_unscreened_per_cpu_s": round(plain["per_cpu_s"]),
        "alerts": screened["alerts"],
        "alerts_unscreened": plain["alerts"],
        "screened_share": round(screened["screened"] / len(events), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0 if result["alerts"] == result["alerts_unscreened"] else 1


if __name__ == "__main__":
    sys.exit(main())
