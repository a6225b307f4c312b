"""Longer runs of the hostile-input fuzz targets (``tests/support/fuzz_targets.py``), JSON out.

    python bench/fuzz_inputs.py --seconds 300 [--target rules --target decoder:sarif]

Each target gets an equal share of the time, spent in rounds of Hypothesis-generated
inputs; every input whose check names an escape is a finding (kept once per distinct
message, with a shortened input). Prints one JSON document: inputs tried and findings per
target, and the slowest input's time. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fuzzing import Budget, Findings
from tests.support.fuzz_targets import Target, all_targets

ROUND = 200


def _short(value: Any) -> str:
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else repr(value)
    return text if len(text) <= 600 else text[:600] + f"... ({len(text)} chars)"


def fuzz(target: Target, seconds: float) -> dict[str, Any]:
    tried = 0
    slowest = 0.0
    found = Findings(per_kind=1)
    budget = Budget(seconds)

    @settings(max_examples=ROUND, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one_round(data: st.DataObject) -> None:
        nonlocal tried, slowest
        value = data.draw(target.inputs)  # drawn even past the deadline: Hypothesis replays rounds
        if budget.spent():
            return
        start = time.perf_counter()
        finding = target.check(value)
        slowest = max(slowest, time.perf_counter() - start)
        tried += 1
        if finding is not None:
            found.add(finding, {"escape": finding, "input": _short(value)})

    def a_round() -> int:
        before = tried
        one_round()
        return tried - before

    budget.run(a_round)
    return {"inputs": budget.inputs, "slowest_s": round(slowest, 3), "findings": found.samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="total time over all targets")
    parser.add_argument("--target", action="append", default=[], help="target name (repeatable; default all)")
    args = parser.parse_args(argv)
    targets = [t for t in all_targets() if not args.target or t.name in args.target]
    if not targets:
        parser.error(f"no such target; known: {', '.join(t.name for t in all_targets())}")
    share = args.seconds / len(targets)
    report = {"seconds": args.seconds, "targets": {t.name: fuzz(t, share) for t in targets}}
    report["inputs"] = sum(r["inputs"] for r in report["targets"].values())
    report["findings"] = sum(len(r["findings"]) for r in report["targets"].values())
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE).decode())
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
