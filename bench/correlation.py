"""Throughput and memory of the correlation engine itself.

Measures ``CorrelationEngine.process`` fed with pre-built base-rule ``Match``
lists (the Sigma engine is not run: this isolates the correlation engine).
Two correlations reference the same base rule: an ``event_count`` (gte 50 in
10m per user) and a ``value_count`` (gte 20 distinct hosts in 10m per user).
Events rotate over ``--keys`` users (default 10,000 active group keys) with
increasing event times, so every key has live window state throughout.

Memory: tracemalloc growth of the engine after filling ``--memory-keys``
(default 100,000) group keys in both correlations with ``--events-per-key``
(default 3) events each, all inside the window.

    python bench/correlation.py --json [--events 300000] [--keys 10000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
import tracemalloc
from typing import Any

from detectors.correlation import CorrelationEngine, compile_correlations
from detectors.model import Match
from detectors.sigma import RuleText, compile_ruleset

RULES = """
title: Failed login
id: 11111111-1111-4111-8111-111111111111
name: failed
logsource: {product: bench}
detection: {sel: {action: fail}, condition: sel}
---
title: Many failures per user
id: 22222222-2222-4222-8222-222222222222
correlation:
  type: event_count
  rules: [failed]
  group-by: [User]
  timespan: 10m
  condition: {gte: 50}
---
title: One user on many hosts
id: 33333333-3333-4333-8333-333333333333
correlation:
  type: value_count
  rules: [failed]
  group-by: [User]
  timespan: 10m
  condition: {field: Host, gte: 20}
"""


def build(max_keys: int) -> tuple[CorrelationEngine, Match]:
    result = compile_ruleset([RuleText("bench.yml", RULES, "bench")])
    assert not result.errors, result.errors
    engine, errors = compile_correlations(result.ruleset, max_keys=max_keys)
    assert not errors, errors
    base = result.ruleset.get("failed")
    assert base is not None
    return engine, Match(rule=base)


def throughput(events: int, keys: int, rate: float, refs: bool = False) -> dict[str, Any]:
    engine, match = build(max_keys=max(keys * 2, 1000))
    matches = [match]
    stream = [({"action": "fail", "User": f"user{i % keys}", "Host": f"host{(i * 7) % 97}"}, i / rate,
               f"kafka:auth:3:{i}" if refs else None) for i in range(events)]
    warm = min(len(stream) // 10, 20_000)
    for event, ts, ref in stream[:warm]:
        engine.process(event, matches, ts, ref)
    alerts = 0
    process = engine.process
    # Events per key in the measured part: alerts come from value_count (20 distinct hosts) and,
    # with enough events per key, event_count (50 in 10m).
    gc.collect()
    start, cpu_start = time.perf_counter(), time.process_time()
    for event, ts, ref in stream[warm:]:
        alerts += len(process(event, matches, ts, ref))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    measured = len(stream) - warm
    return {
        "events": measured,
        "wall_seconds": round(elapsed, 3),
        "cpu_seconds": round(cpu, 3),
        "events_per_s": round(measured / cpu),
        "events_per_s_wall": round(measured / elapsed),
        "note": "events_per_s is per CPU-second of this process (one core), robust to a shared machine",
        "active_keys": engine.active_keys(),
        "alerts": alerts,
        "event_rate_in_event_time_per_s": rate,
    }


def memory(keys: int, per_key: int) -> dict[str, Any]:
    engine, match = build(max_keys=keys)
    events = [({"action": "fail", "User": f"user{k}", "Host": f"host{j}"}, float(j * keys + k) / 1e6)
              for j in range(per_key) for k in range(keys)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    matches = [match]
    for event, ts in events:
        engine.process(event, matches, ts)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    grown = after - before
    return {
        "active_keys": engine.active_keys(),
        "group_keys_per_correlation": keys,
        "events_per_key": per_key,
        "bytes": grown,
        "mib": round(grown / 2**20, 1),
        "bytes_per_key_per_correlation": round(grown / engine.active_keys()),
        "note": "tracemalloc growth of the engine state (events built beforehand; no event refs passed, "
                "a ref string per event adds its own size per entry)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second of event time")
    parser.add_argument("--memory-keys", type=int, default=100_000)
    parser.add_argument("--events-per-key", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "correlation",
        "what": "CorrelationEngine.process fed pre-built Match lists (Sigma engine not run); "
                "one event_count + one value_count correlation on the same base rule",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count()},
        "throughput": throughput(args.events, args.keys, args.rate),
        "throughput_with_origin_refs": throughput(args.events // 2, args.keys, args.rate, refs=True),
        "memory": memory(args.memory_keys, args.events_per_key),
        "target_events_per_s": 100_000,
    }
    result["meets_target"] = result["throughput"]["events_per_s"] >= 100_000
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
