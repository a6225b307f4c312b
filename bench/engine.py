"""Sigma engine benchmark: the SigmaHQ corpus plus the project's rule pack over a mixed event corpus.

Measured in one single-threaded process (one core at a time; ``--pin CPU`` pins it):

- ``cold_start_s``: ``service.rules.load_rules`` (read + parse + compile) of every rule
  (``load_s``) plus the first evaluation of one event of each log source in the corpus,
  which builds the engine's per-log-source routes (``routes_s``); ``cold_start_cpu_s`` is the
  same in process CPU time;
- ``events_per_s``: one pass of ``Ruleset.evaluate(event, logsource)`` over all events
  (each event with its own log source, as the service evaluates them), no per-event timing,
  wall clock; ``events_per_s_cpu`` is the same pass divided by the process' CPU time, the
  better figure on a shared machine (``load_avg_1m`` tells how busy it was);
- ``us_per_event_p50`` / ``p99``: a second pass timing each event on its own (wall clock;
  the ``_cpu`` variants use the thread's CPU clock, which preemption does not inflate);
- ``naive_events_per_s``: ``Ruleset.evaluate_naive`` (every routed rule checked, no index)
  over a uniform sample (every k-th event, so the log-source mix is the same), extrapolated
  as sample size / sample time; ``naive_agrees`` says whether both evaluators returned the same
  matches on that sample;
- ``native_*`` (when the native screen is built): the raw-JSON path of the pipeline core over
  the same events as compact JSON, in batches of :data:`NATIVE_BATCH` split by log source (an
  input reads one): ``screen.decide``, then for the picked messages ``orjson.loads`` and the
  engine's ``evaluate_decided`` (or ``evaluate`` without a decision). Beside it, the same
  batches through the clear-only screen (``screen.scan``, then decode and ``evaluate`` the picked
  ones: ``screen_only_*``) and without any screen (decode and ``evaluate`` each:
  ``json_*``); ``native_agrees`` says whether the native path made exactly the matches
  (matched fields included) of ``evaluate`` on every event; ``native_cleared_share`` and
  ``native_decided_share`` are the events cleared, and decided in full (no rule left to Python);
- ``rss_mb``: peak RSS of the process (includes the generated events) before the raw-JSON lanes
  (``native_rss_mb``: after them, with the events' JSON texts and every lane's matches);
  ``rss_after_load_mb``: RSS right after loading the rules, before events exist.

Events come from ``bench/eventgen.py`` (seeded). The garbage collector stays on; after
setup, ``gc.freeze()`` moves the ruleset and events out of the collector's generations,
as a long-running service would do after a (re)load.

    python bench/engine.py [--json] [--events N] [--seed S] [--naive-sample N] [--breakdown] [--pin CPU]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.eventgen import generate  # noqa: E402
from service.rules import default_rules_dir, load_rules  # noqa: E402

SIGMAHQ = ROOT.parent / "shared" / "sigmahq"
SITE_PIPELINE = ROOT / "tests" / "conformance" / "site_placeholders.yml"


def _rss_mb(which: str) -> float:
    if which == "peak":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pin(cpu: int | None) -> int | None:
    if cpu is None:
        return None
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError) as exc:
        print(f"warning: cannot pin to CPU {cpu}: {exc}", file=sys.stderr)
        return None
    return cpu


def _percentile(sorted_values: list[int], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index] / 1000.0


def _breakdown(corpus: list[tuple[Any, Any]], cpu_ns: list[int]) -> dict[str, dict[str, float]]:
    """Per log source: share of events, mean and p99 CPU microseconds per event (hotspot finder)."""
    groups: dict[str, list[int]] = {}
    for (logsource, _), ns in zip(corpus, cpu_ns, strict=True):
        key = "/".join(part or "*" for part in (logsource.product, logsource.category, logsource.service))
        groups.setdefault(key, []).append(ns)
    out: dict[str, dict[str, float]] = {}
    for key, values in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        values.sort()
        out[key] = {
            "events": len(values),
            "cpu_share": round(sum(values) / max(1, sum(cpu_ns)), 3),
            "us_mean_cpu": round(sum(values) / len(values) / 1000, 1),
            "us_p99_cpu": round(_percentile(values, 0.99), 1),
        }
    return out


NATIVE_BATCH = 1000
"""Events per batch of the raw-JSON lanes (``pipesentry eval`` reads 1,000 lines at a time)."""


def _batches(raws: list[tuple[Any, bytes]]) -> list[tuple[Any, list[int], list[bytes]]]:
    """The events in batches of :data:`NATIVE_BATCH`, each split by log source (in event order)."""
    out: list[tuple[Any, list[int], list[bytes]]] = []
    for start in range(0, len(raws), NATIVE_BATCH):
        groups: dict[Any, tuple[list[int], list[bytes]]] = {}
        for position in range(start, min(start + NATIVE_BATCH, len(raws))):
            logsource, raw = raws[position]
            positions, values = groups.setdefault(logsource, ([], []))
            positions.append(position)
            values.append(raw)
        out.extend((logsource, positions, values) for logsource, (positions, values) in groups.items())
    return out


def _lane(rs: Any, batches: list[tuple[Any, list[int], list[bytes]]], size: int, mode: str) -> list[Any]:
    """One pass of a raw-JSON lane (``json``, ``screen`` or ``native``): matches per event."""
    import orjson

    loads = orjson.loads
    evaluate, decided = rs.evaluate, rs.evaluate_decided
    out: list[Any] = [()] * size
    for logsource, positions, values in batches:
        screen = rs.screen(logsource) if mode != "json" else None
        if screen is None:
            for position, raw in zip(positions, values, strict=True):
                out[position] = evaluate(loads(raw), logsource)
        elif mode == "screen":
            for picked in screen.scan(values, [], None, 1 << 20, 64)[0]:
                out[positions[picked]] = evaluate(loads(values[picked]), logsource)
        else:
            picked, _, decisions = screen.decide(values, [], None, 1 << 20, 64)
            rules = screen.rules
            for at, decision in zip(picked, decisions, strict=True):
                event = loads(values[at])
                out[positions[at]] = evaluate(event, logsource) if decision is None else \
                    decided(event, rules, decision, logsource)
    return out


def _native_lanes(rs: Any, corpus: list[tuple[Any, Any]]) -> dict[str, Any]:
    """The raw-JSON lanes (see the module docstring); empty without the native screen."""
    from detectors.sigma.screen import AVAILABLE

    if not AVAILABLE:
        return {"native": "not built"}
    import orjson

    raws = [(logsource, orjson.dumps(event)) for logsource, event in corpus]
    batches = _batches(raws)
    warm = _batches(raws[:2000])
    figures: dict[str, Any] = {}
    results: dict[str, list[Any]] = {}
    for mode, name in (("json", "json"), ("screen", "screen_only"), ("native", "native")):
        _lane(rs, warm, len(raws), mode)
        started, cpu_started = time.perf_counter(), time.process_time()
        results[mode] = _lane(rs, batches, len(raws), mode)
        elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
        figures[f"{name}_events_per_s"] = round(len(raws) / elapsed)
        figures[f"{name}_events_per_s_cpu"] = round(len(raws) / cpu_elapsed) if cpu_elapsed else None
    disagreements = sum(1 for (logsource, event), got in zip(corpus, results["native"], strict=True)
                        if list(got) != rs.evaluate(event, logsource))
    cleared = decided = 0
    for logsource, _, values in batches:
        screen = rs.screen(logsource)
        if screen is None:
            continue
        picked, _, decisions = screen.decide(values, [], None, 1 << 20, 64)
        cleared += len(values) - len(picked)
        decided += sum(1 for decision in decisions if decision is not None and not decision[1])
    figures["native_agrees"] = disagreements == 0
    figures["native_disagreements"] = disagreements
    figures["native_cleared_share"] = round(cleared / len(raws), 4)
    figures["native_decided_share"] = round(decided / len(raws), 4)
    figures["native_vs_screen_only"] = round(figures["native_events_per_s_cpu"] / figures["screen_only_events_per_s_cpu"], 2)
    return figures


def run(events_n: int, seed: int, naive_sample: int, sigmahq: Path, breakdown: bool = False,
        pin: int | None = None) -> dict[str, Any]:
    cpu = _pin(pin)
    paths = [p for p in (sigmahq, default_rules_dir()) if p.is_dir()]
    pipelines = [SITE_PIPELINE] if SITE_PIPELINE.is_file() else []
    started, cpu_started = time.perf_counter(), time.process_time()
    result = load_rules(paths, pipelines)
    cold_start, cold_start_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    rs = result.ruleset
    rss_after_load = _rss_mb("current")

    corpus = generate(events_n, seed)
    evaluate = rs.evaluate
    firsts: dict[Any, Any] = {}
    for logsource, event in corpus:
        firsts.setdefault(logsource, event)
    started, cpu_started = time.perf_counter(), time.process_time()
    for logsource, event in firsts.items():  # the engine builds each log source's route on first use
        evaluate(event, logsource)
    routes, routes_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    gc.collect()
    gc.freeze()
    for logsource, event in corpus[:2000]:  # warm-up: caches, branch predictors, lazy imports
        evaluate(event, logsource)

    matches = 0
    matched_events = 0
    load_before = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    for logsource, event in corpus:
        found = evaluate(event, logsource)
        if found:
            matches += len(found)
            matched_events += 1
    elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started

    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    latencies: list[int] = []
    cpu_latencies: list[int] = []  # in corpus order until sorted below
    append, cpu_append = latencies.append, cpu_latencies.append
    for logsource, event in corpus:
        c0 = cpu_clock()
        t0 = clock()
        evaluate(event, logsource)
        append(clock() - t0)
        cpu_append(cpu_clock() - c0)
    by_logsource = _breakdown(corpus, cpu_latencies) if breakdown else None
    latencies.sort()
    cpu_latencies.sort()

    step = max(1, len(corpus) // max(1, naive_sample))
    sample = corpus[::step][:naive_sample]
    naive = rs.evaluate_naive
    disagreements = 0
    naive_time = 0.0
    for logsource, event in sample:
        naive_started = time.perf_counter()
        slow = naive(event, logsource)
        naive_time += time.perf_counter() - naive_started
        fast = evaluate(event, logsource)
        if sorted(m.rule.id for m in slow) != sorted(m.rule.id for m in fast):
            disagreements += 1
    naive_eps = len(sample) / naive_time if naive_time else 0.0
    eps = len(corpus) / elapsed
    figures: dict[str, Any] = {
        "events_per_s": round(eps),
        "events_per_s_cpu": round(len(corpus) / cpu_elapsed) if cpu_elapsed else None,
        "us_per_event_p50": round(_percentile(latencies, 0.50), 2),
        "us_per_event_p99": round(_percentile(latencies, 0.99), 2),
        "us_per_event_p50_cpu": round(_percentile(cpu_latencies, 0.50), 2),
        "us_per_event_p99_cpu": round(_percentile(cpu_latencies, 0.99), 2),
        "cold_start_s": round(cold_start + routes, 2),
        "cold_start_cpu_s": round(cold_start_cpu + routes_cpu, 2),
        "load_s": round(cold_start, 2),
        "routes_s": round(routes, 2),
        "rss_mb": round(_rss_mb("peak"), 1),
        "rss_after_load_mb": round(rss_after_load, 1),
        "naive_events_per_s": round(naive_eps),
        "naive_sample": len(sample),
        "naive_agrees": disagreements == 0,
        "naive_disagreements": disagreements,
        "speedup_vs_naive": round(eps / naive_eps, 1) if naive_eps else None,
        "rules": len(rs.rules),
        "correlations": len(rs.correlations),
        "rule_errors": len(result.errors),
        "rulesets": sorted({r.ruleset for r in rs.rules}),
        "events": len(corpus),
        "matches": matches,
        "matched_events": matched_events,
        "matched_share": round(matched_events / len(corpus), 4),
        "seed": seed,
        "cpu": cpu,
        "load_avg_1m": round(load_before, 2),
        "python": sys.version.split()[0],
    }
    figures.update(_native_lanes(rs, corpus))
    figures["native_rss_mb"] = round(_rss_mb("peak"), 1)
    if by_logsource is not None:
        figures["by_logsource"] = by_logsource
    return figures


def print_table(figures: dict[str, Any]) -> None:
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key.ljust(width)}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the Sigma engine (see module docstring).")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--naive-sample", type=int, default=2_000, help="events evaluated naively")
    parser.add_argument("--sigmahq", type=Path, default=SIGMAHQ, help="SigmaHQ corpus directory")
    parser.add_argument("--breakdown", action="store_true", help="add CPU cost per log source")
    parser.add_argument("--pin", type=int, default=None, metavar="CPU",
                        help="pin the process to this CPU (default: not pinned; the benchmark is single-threaded,"
                             " so it uses one core at a time either way, and on a shared machine the scheduler"
                             " can move it to an idle one)")
    args = parser.parse_args(argv)
    if not args.sigmahq.is_dir():
        print(f"warning: {args.sigmahq} not found; benchmarking the project's rules only", file=sys.stderr)
    figures = run(args.events, args.seed, args.naive_sample, args.sigmahq, args.breakdown, pin=args.pin)
    if args.json:
        import orjson

        print(orjson.dumps(figures).decode())
    else:
        print_table(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
