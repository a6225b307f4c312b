"""Hot reload cost after a few rule files change: full compile vs incremental (issue 19).

A copy of the SigmaHQ corpus is loaded the way a reload loads it (``service.rules.load_rules``:
read every file, compile, collector paused) without a memo (a full compile, what every reload did
before) and with the :class:`~detectors.sigma.memo.CompileMemo` a reload keeps; then 1 and then
``--changed`` files are edited on disk (a rule's title) and loaded again with the memo. Each round
starts from a fresh memo; figures are the median, min and max CPU seconds (process time) over
``--rounds``. ``--check`` also compares every incremental result with a full compile of the same
files (rules, atoms, errors, snapshot bytes).

    python bench/reload.py [--rounds 3] [--changed 50] [--check] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.sigma import LoadResult  # noqa: E402
from detectors.sigma.compiled import rule_parts  # noqa: E402
from detectors.sigma.memo import CompileMemo  # noqa: E402
from detectors.sigma.snapshot import snapshot  # noqa: E402
from service.rules import load_rules  # noqa: E402

SIGMAHQ = ROOT.parent / "shared" / "sigmahq" / "rules"


def timed(run: Callable[[], LoadResult]) -> tuple[LoadResult, float, float]:
    """The result, CPU seconds and wall seconds of ``run`` (garbage of earlier runs collected first)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def edit(path: Path, round_: int) -> None:
    text = path.read_text()
    path.write_text(text.replace("title:", f"title: (edit {round_})", 1))


def same(a: LoadResult, b: LoadResult) -> bool:
    """Same errors, atoms and rules, and the same snapshot bytes (which hold the screen plan too)."""
    return (a.errors == b.errors and a.ruleset.recipes == b.ruleset.recipes
            and [rule_parts(r) for r in a.ruleset.compiled] == [rule_parts(r) for r in b.ruleset.compiled]
            and snapshot(a) == snapshot(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, default=SIGMAHQ, help="rule directory (copied)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changed", type=int, default=50, help="files changed in the larger edit")
    parser.add_argument("--check", action="store_true", help="compare each incremental result with a full compile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}
    checked: list[bool] = []
    counts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp:
        rules = Path(tmp) / "rules"
        shutil.copytree(args.rules, rules)
        files = sorted(p for p in rules.rglob("*") if p.suffix in (".yml", ".yaml"))
        step = max(1, len(files) // max(1, args.changed))

        def add(name: str, cpu: float, wall: float) -> None:
            figures.setdefault(f"{name}_cpu_s", []).append(cpu)
            figures.setdefault(f"{name}_wall_s", []).append(wall)

        for round_ in range(args.rounds):
            full, cpu, wall = timed(lambda: load_rules([rules]))
            add("full", cpu, wall)
            memo = CompileMemo()
            _, cpu, wall = timed(partial(load_rules, [rules], memo=memo))
            add("first_with_memo", cpu, wall)
            counts["rules"] = len(full.ruleset.compiled)
            counts["files"] = len(files)
            for name, chosen in (("one", files[round_ * 7 % len(files):][:1]),
                                 ("many", files[round_ % step::step][:args.changed])):
                for path in chosen:
                    edit(path, round_)
                os.sync()
                result, cpu, wall = timed(partial(load_rules, [rules], memo=memo))
                add(f"reload_{name}", cpu, wall)
                counts[f"reload_{name}_parsed"] = memo.last["parsed"]
                if args.check:
                    checked.append(same(result, load_rules([rules])))
    summary: dict[str, Any] = {
        key: {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3)}
        for key, v in figures.items()}
    summary.update(counts)
    summary["rounds"] = args.rounds
    summary["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    if args.check:
        summary["identical"] = all(checked)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{counts['files']} files, {counts['rules']} rules; CPU s (wall s), median (min-max) of {args.rounds}")
    for name in ("full", "first_with_memo", "reload_one", "reload_many"):
        cpu, wall = summary[f"{name}_cpu_s"], summary[f"{name}_wall_s"]
        parsed = counts.get(f"{name}_parsed")
        print(f"  {name:16} {cpu['median']:7.3f} ({cpu['min']:.3f}-{cpu['max']:.3f})  wall {wall['median']:.3f}"
              + (f"  texts parsed {parsed}" if parsed is not None else ""))
    if args.check:
        print("  identical to a full compile:", summary["identical"])


if __name__ == "__main__":
    main()
