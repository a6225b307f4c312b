"""Side-by-side runs of a benchmark at two commits, alternating, with the spread.

    python bench/compare.py --base 135f9b8 --bench ingest --runs 3 [--markdown] [-- --events 100000]

The base commit is checked out as a worktree beside the repository (so ``../shared`` resolves
the same way), its native screen built with cargo, and each round runs the benchmark once at
the base and once at the working tree, alternately, so a busy moment of the machine hits both
sides alike. Every numeric figure of the benchmark's JSON (its last stdout line) is collected;
the result gives each side's runs, median, min and max, and the ratio of medians (head/base).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NATIVE = "detectors/_native.cpython-311-x86_64-linux-gnu.so"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def checkout(rev: str) -> Path:
    """A worktree of ``rev`` beside the repository, with its own native screen built."""
    sha = _git("rev-parse", "--short=12", rev)
    tree = ROOT.parent / f".bench-{sha}"
    if not tree.exists():
        _git("worktree", "add", "--detach", str(tree), sha)
    if not (tree / NATIVE).exists():
        print(f"building the native screen of {sha} (cargo, a few minutes cold)", file=sys.stderr, flush=True)
        target = tree / "detectors" / "native" / "target"
        subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path",
                        str(tree / "detectors" / "native" / "Cargo.toml")], check=True,
                       env={**os.environ, "CARGO_TARGET_DIR": str(target)})
        shutil.copy(target / "release" / "lib_native.so", tree / NATIVE)
    return tree


def run_once(tree: Path, bench: str, extra: list[str]) -> dict[str, Any]:
    """One run of ``bench/<bench>.py --json`` with ``tree``'s code first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, f"bench/{bench}.py", "--json", *extra], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{bench} at {tree} exited {done.returncode}:\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    figures: dict[str, Any] = json.loads(lines[-1])
    figures["_wall_s"] = round(time.monotonic() - started, 1)
    return figures


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per numeric figure: each side's values, median, min, max, and head/base of the medians."""
    out: dict[str, Any] = {}
    keys = [k for k, v in runs["head"][0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    for key in keys:
        row: dict[str, Any] = {}
        for side, results in runs.items():
            values = [r[key] for r in results if isinstance(r.get(key), int | float)]
            if values:
                row[side] = {"runs": values, "median": statistics.median(values), "min": min(values),
                             "max": max(values)}
        if "base" in row and row["base"]["median"]:
            row["head/base"] = round(row["head"]["median"] / row["base"]["median"], 3)
        out[key] = row
    return out


def markdown(summary: dict[str, Any], base: str, head: str) -> str:
    def fmt(value: float) -> str:
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"

    lines = [f"| figure | {base} runs (median) | {head} runs (median) | head/base |", "| --- | --- | --- | --- |"]
    for key, row in summary.items():
        cells = []
        for side in ("base", "head"):
            data = row.get(side)
            cells.append(" / ".join(fmt(v) for v in data["runs"]) + f" ({fmt(data['median'])})" if data else "-")
        lines.append(f"| `{key}` | {cells[0]} | {cells[1]} | {row.get('head/base', '-')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="commit to compare against (checked out beside the repo)")
    parser.add_argument("--bench", required=True, help="benchmark name: engine, ingest, pipeline, ...")
    parser.add_argument("--runs", type=int, default=3, help="rounds; each runs base then head")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("extra", nargs="*", help="arguments for the benchmark (after --)")
    args = parser.parse_args()
    base_tree = checkout(args.base)
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
    for round_ in range(args.runs):
        for side, tree in (("base", base_tree), ("head", ROOT)):
            print(f"round {round_ + 1}/{args.runs}: {args.bench} at {side}", file=sys.stderr, flush=True)
            runs[side].append(run_once(tree, args.bench, args.extra))
    head = _git("rev-parse", "--short=12", "HEAD") + ("+dirty" if _git("status", "--porcelain", "-uno") else "")
    result = {"bench": args.bench, "base": _git("rev-parse", "--short=12", args.base), "head": head,
              "runs": args.runs, "args": args.extra, "figures": summarise(runs)}
    print(json.dumps(result))
    if args.markdown:
        print(markdown(result["figures"], result["base"], result["head"]))


if __name__ == "__main__":
    main()
