"""Cost of ``Alert.to_document()`` on the match-heavy mix: microseconds per alert, in process.

The alerts are those of ``bench/pipeline.py``'s builtin corpus (``--events``, ``--suspicious-share``;
60,000 events at 0.35 make about 24,000 alerts) under the rule pack plus SigmaHQ's cloud, linux, web
and application rules (``pipeline.rule_paths()``). Each repeat builds the alerts afresh (an alert
derives ``event.original`` and its entities on first use, as in the router) and times:

- ``cold``: the first ``to_document()`` of every alert (what the router pays per alert);
- ``warm``: a second ``to_document()`` of the same alerts (the document without the derivation);
- ``router``: ``AlertRouter.decide`` of fresh alerts in batches of 500 with a null sink and the default
  redaction (a new router per repeat, nothing suppressed: the corpus's alerts are all distinct), the
  router's CPU per alert of which ``to_document`` is a part.

CPU time of this process, median (min, max) over ``--repeats``. ``digest`` is the sha256 of every
document dumped by orjson with sorted keys (``pipesentry.rule_source`` relative to the tree): equal
digests of two trees mean byte-identical documents.

    python bench/alert_document.py --json [--events 60000] [--suspicious-share 0.35] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.pipeline import EPOCH, corpus, rule_paths  # noqa: E402
from detectors.alert import Alert, build_alert  # noqa: E402
from detectors.model import LogSource, Origin  # noqa: E402
from service.alerting.config import AlertingSettings  # noqa: E402
from service.alerting.router import AlertRouter  # noqa: E402
from service.rules import load_rules  # noqa: E402


def matches(events: int, share: float) -> list[tuple[Any, dict[str, Any], Origin, LogSource, float]]:
    """Every (match, event, origin, log source, time) of the corpus: alerts are built from these per repeat."""
    ruleset = load_rules(rule_paths()).ruleset
    out = []
    for i, (ls, event) in enumerate(corpus(events, "builtin", share)):
        logsource = LogSource(**ls)
        origin = Origin("kafka", topic="bench." + "-".join(ls.values()), partition=0, offset=i)
        for match in ruleset.evaluate(event, logsource):
            out.append((match, event, origin, logsource, EPOCH + i / 100))
    return out


def alerts(found: list[tuple[Any, dict[str, Any], Origin, LogSource, float]]) -> list[Alert]:
    return [build_alert(m, event, origin, event_time=ts, now=EPOCH + 3600.0, logsource=ls)
            for m, event, origin, ls, ts in found]


def _cpu_us(batch: list[Alert]) -> float:
    gc.collect()
    start = time.process_time()
    for alert in batch:
        alert.to_document()
    return (time.process_time() - start) / len(batch) * 1e6


def _router_us(batch: list[Alert]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        router = AlertRouter(AlertingSettings(sinks=[{"type": "null"}]), Path(tmp))
        gc.collect()
        start = time.process_time()
        for i in range(0, len(batch), 500):
            router.decide(batch[i:i + 500], now=EPOCH + 7200.0)
        return (time.process_time() - start) / len(batch) * 1e6


def run(events: int, share: float, repeats: int) -> dict[str, Any]:
    found = matches(events, share)
    digest = hashlib.sha256()
    for alert in alerts(found):
        doc = alert.to_document()
        doc["pipesentry"]["rule_source"] = os.path.relpath(doc["pipesentry"]["rule_source"], ROOT)
        digest.update(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n")
    cold, warm, router = [], [], []
    for _ in range(repeats):
        batch = alerts(found)
        cold.append(_cpu_us(batch))
        warm.append(_cpu_us(batch))
        router.append(_router_us(alerts(found)))

    def figures(values: list[float]) -> dict[str, float]:
        return {"median_us": round(statistics.median(values), 2), "min_us": round(min(values), 2),
                "max_us": round(max(values), 2)}

    return {"alerts": len(found), "rules": len({m.rule.id for m, *_ in found}), "cold": figures(cold),
            "warm": figures(warm), "router": figures(router), "digest": digest.hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--suspicious-share", type=float, default=0.35)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.events, args.suspicious_share, args.repeats)
    results["load_avg_1m"] = round(os.getloadavg()[0], 2)
    results["params"] = vars(args)
    print(json.dumps(results) if args.json else "\n".join(f"{k:>8}: {v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
