"""What ``state.snapshots: kafka`` costs: saving a partition's snapshot to the changelog topic and
loading it at a takeover, beside the local state store (``data_dir/state``), for snapshots of a
few sizes; median, min and max over ``--rounds`` (wall and CPU milliseconds per operation).

    python bench/changelog.py [--sizes 10000,100000,1000000,10000000] [--rounds 5] [--saves 20] [--json]
                              [--bootstrap HOST:PORT]

Without ``--bootstrap`` a private broker is started with ``devservices``. A load reads the scope's
changelog partition from its start: it holds every save made so far that compaction has not
removed yet (``--saves`` of them here, the uncompacted tail after as many snapshot intervals), so
the load figure is that of a takeover ``--saves`` intervals after the last compaction.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import KafkaSettings
from service.state_changelog import ChangelogStore
from service.state_store import StateStore


def snapshot(size: int) -> dict[str, Any]:
    """A partition document of about ``size`` bytes of JSON: group keys with their window counts."""
    keys = max(1, size // 48)
    return {"format": "pipesentry.partition-state/1", "offset": 1000, "writer": "bench#0", "accepts": ["bench#0"],
            "clock": None, "detectors": {"correlation": {secrets.token_hex(12): [i, 1.5 * i] for i in range(keys)}}}


async def timed(action: Awaitable[Any]) -> tuple[float, float]:
    """Wall and CPU milliseconds of awaiting ``action`` (a coroutine does nothing before it is awaited)."""
    wall, cpu = time.perf_counter(), time.process_time()
    await action
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, Any]:
    kafka = KafkaSettings(bootstrap_servers=[bootstrap], topics={"bench": {}}, group_id="bench")
    results: dict[str, Any] = {}
    for size in args.sizes:
        doc = snapshot(size)
        rows: dict[str, list[float]] = {k: [] for k in ("kafka_save_ms", "kafka_save_cpu_ms", "kafka_load_ms",
                                                         "kafka_load_cpu_ms", "local_save_ms", "local_load_ms")}
        for round_ in range(args.rounds):
            topic = f"changelog-bench-{size}-{round_}-{secrets.token_hex(3)}"
            scope = "kafka:bench:0"
            writer = ChangelogStore(StateStore(workdir / "w"), kafka, topic, 1)
            local = StateStore(workdir / f"local-{size}-{round_}")
            try:
                await writer.save_async(scope, "partition", doc)  # creates the topic, connects
                for _ in range(args.saves - 1):
                    wall, cpu = await timed(writer.save_async(scope, "partition", doc))
                    rows["kafka_save_ms"].append(wall)
                    rows["kafka_save_cpu_ms"].append(cpu)
                    wall, _ = await timed(local.save_async(scope, "partition", doc))
                    rows["local_save_ms"].append(wall)
            finally:
                await writer.stop()
            reader = ChangelogStore(StateStore(workdir / "r"), kafka, topic, 1)
            try:
                wall, cpu = await timed(reader.load_async(scope, "partition"))
            finally:
                await reader.stop()
            rows["kafka_load_ms"].append(wall)
            rows["kafka_load_cpu_ms"].append(cpu)
            wall, _ = await timed(local.load_async(scope, "partition"))
            rows["local_load_ms"].append(wall)
        results[str(len(json.dumps(doc)))] = {key: spread(values) for key, values in rows.items()}
    return {"rounds": args.rounds, "saves": args.saves, "by_snapshot_bytes": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda text: [int(v) for v in text.split(",")],
                        default=[10_000, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--saves", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipesentry-bench-") as tmp:
        workdir = Path(tmp)
        from devservices.kafka import broker

        with broker(args.bootstrap, workdir) as bootstrap:
            result = asyncio.run(bench(args, bootstrap, workdir))
    if args.json:
        print(json.dumps(result))
    else:
        for size, rows in result["by_snapshot_bytes"].items():
            print(f"snapshot {size} bytes")
            for key, row in rows.items():
                print(f"  {key:20} {row['median']:>10} ms  ({row['min']}-{row['max']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
