"""Long spool fault run: many more seeded corruption examples and SIGKILLed writers than the unit suite.

    python bench/fault_spool.py [--examples 5000] [--kills 50] [--seed 0]

Same checks as ``tests/unit/service/alerting/test_spool_fuzz.py`` (every intact or acknowledged record is
delivered, every skipped byte is counted), from seed ``--seed`` on. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import pytest

    from tests.support.faults import fuzz_once, kill_writers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("service.alerting.spool").setLevel(logging.CRITICAL)  # one error line per skip otherwise
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        root = Path(tmp)
        for seed in range(args.seed, args.seed + args.examples):
            fuzz_once(root, seed, mp)
        corrupt_s = time.monotonic() - started
        for seed in range(args.seed, args.seed + args.kills):
            kill_writers(root / f"kill{seed}", seed, rounds=5)
    print(json.dumps({"corruption_examples": args.examples, "kill_examples": args.kills,
                      "corruption_s": round(corrupt_s, 1), "total_s": round(time.monotonic() - started, 1),
                      "result": "ok"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
