"""Evaluation harness for the anomaly checks on generated, labelled streams.

For each check type a seeded generator produces normal traffic (daily and
weekly seasonality, Poisson or Gaussian noise) for a learning period and an
evaluation period, and injects labelled anomalies (known key, start, length
and size) into the evaluation period only. Anomaly sizes are drawn between 3
and 6 standard deviations of the quantity the check monitors (interval count,
window mean, distinct count, failure share), silences last 2-8x the timeout.

An alert is a true positive when its key has an anomaly whose span (plus a
grace of one interval/window) contains the alert's event time; recall counts
anomalies with at least one such alert; ``median_delay_s`` is from anomaly
start to its first alert; ``false_alerts_per_key_week`` divides the other
alerts by keys x evaluation weeks. ``events_per_s`` times ``engine.process``
alone (generation excluded) with one check in the engine. Memory per key is
the tracemalloc growth after loading many keys, scaled to one million.

    python bench/anomaly_eval.py --json [--quick] [--only volume,silence]

``--families`` scores instead the metric check configurations of
``FAMILY_CHECKS`` on the stream families of ``bench/anomaly_families.py``
(real-world properties: seasonality, trends, irregular sampling, gaps,
disorder, quantised counts, flat stretches, heavy tails) with the windowed
score, over several seeds:

    python bench/anomaly_eval.py --families [--seeds 1,2,3] [--quick] [--only metric] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import anomaly_families as fam
from detectors.anomaly import AnomalyEngine, parse_checks
from detectors.model import Match

T0 = 1767571200.0  # 2026-01-05 00:00 UTC, a Monday
DAY = 86400.0
WEEK = 7 * DAY
Batch = list[tuple[dict[str, Any], float]]


@dataclass
class Anomaly:
    key: str
    start: float
    end: float
    kind: str


@dataclass
class Stream:
    check_yaml: str
    batches: Callable[[], Iterator[Batch]]
    anomalies: list[Anomaly]
    keys: int
    eval_start: float
    eval_end: float
    grace: float


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 60:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def seasonal(t: float) -> float:
    """Traffic shape: daytime peak (x2 at 15:00), quiet nights, weekends at 60 %."""
    hour = (t % DAY) / 3600
    weekday = int((t - T0) // DAY) % 7
    daily = 1.0 + 0.6 * math.sin(2 * math.pi * (hour - 9) / 24)
    return daily * (0.6 if weekday >= 5 else 1.0)


def in_any(anoms: list[Anomaly], key: str, t: float) -> Anomaly | None:
    for a in anoms:
        if a.key == key and a.start <= t < a.end:
            return a
    return None


def place(rng: random.Random, keys: list[str], per_key: int, start: float, end: float,
          length: tuple[float, float], kinds: tuple[str, ...], gap: float = 6 * 3600) -> list[Anomaly]:
    out: list[Anomaly] = []
    for key in keys:
        mine: list[Anomaly] = []
        while len(mine) < per_key:
            s = rng.uniform(start, end - length[1] - gap)
            a = Anomaly(key, s, s + rng.uniform(*length), rng.choice(kinds))
            if all(abs(a.start - b.start) > gap + length[1] for b in mine):
                mine.append(a)
        out.extend(mine)
    return out


# -- streams -----------------------------------------------------------------------------------
def volume_stream(rng: random.Random, weeks_eval: int, n_keys: int) -> Stream:
    interval = 600.0
    keys = [f"runner-{i}" for i in range(n_keys)]
    base = {k: rng.uniform(15, 45) for k in keys}
    eval_start, eval_end = T0 + 2 * WEEK, T0 + WEEK * (2 + weeks_eval)
    anomalies = place(rng, keys, 2 * weeks_eval, eval_start, eval_end, (1800, 7200), ("spike", "drop"))
    sizes = {id(a): rng.uniform(3, 6) for a in anomalies}

    def batches() -> Iterator[Batch]:
        r = random.Random(11)
        t = T0
        while t < eval_end:
            batch: Batch = []
            for key in keys:
                lam = base[key] * seasonal(t)
                a = in_any(anomalies, key, t + interval / 2)
                if a is not None:
                    shift = sizes[id(a)] * math.sqrt(lam)
                    lam = lam + shift if a.kind == "spike" else max(0.0, lam - shift)
                for _ in range(poisson(r, lam)):
                    batch.append(({"runner": key}, t + r.random() * interval))
            batch.sort(key=lambda item: item[1])
            yield batch
            t += interval

    yaml_text = """
id: bench-volume
type: volume
by: [runner]
interval: 10m
min_count: 5
learning: 14d
"""
    return Stream(yaml_text, batches, anomalies, n_keys, eval_start, eval_end, interval)


def silence_stream(rng: random.Random, weeks_eval: int, n_keys: int) -> Stream:
    timeout = 600.0
    keys = [f"audit-{i}" for i in range(n_keys)]
    eval_start, eval_end = T0 + DAY, T0 + DAY + WEEK * weeks_eval
    anomalies = place(rng, keys, 2 * weeks_eval, eval_start, eval_end, (2 * timeout, 8 * timeout), ("silence",))

    def batches() -> Iterator[Batch]:
        r = random.Random(12)
        step = 3600.0
        nxt = {k: T0 + r.uniform(0, 30) for k in keys}
        t = T0
        while t < eval_end:
            batch: Batch = []
            for key in keys:
                while nxt[key] < t + step:
                    at = nxt[key]
                    a = in_any(anomalies, key, at)
                    if a is not None:
                        nxt[key] = a.end + r.uniform(0, 5)
                        continue
                    batch.append(({"stream": key}, at))
                    nxt[key] = at + r.expovariate(max(seasonal(at), 0.5) / 20)
            batch.sort(key=lambda item: item[1])
            yield batch
            t += step

    yaml_text = f"""
id: bench-silence
type: silence
by: [stream]
timeout: {int(timeout)}s
"""
    return Stream(yaml_text, batches, anomalies, n_keys, eval_start, eval_end, 0.0)


def metric_stream(rng: random.Random, weeks_eval: int, n_keys: int) -> Stream:
    window, per_window = 600.0, 30
    keys = [f"svc-{i}" for i in range(n_keys)]
    centre = {k: rng.uniform(80, 400) for k in keys}
    eval_start, eval_end = T0 + 2 * DAY, T0 + 2 * DAY + WEEK * weeks_eval
    anomalies = place(rng, keys, 2 * weeks_eval, eval_start, eval_end, (1200, 5400), ("high", "low"))
    sizes = {id(a): rng.uniform(3, 6) for a in anomalies}

    def batches() -> Iterator[Batch]:
        r = random.Random(13)
        t = T0
        while t < eval_end:
            batch: Batch = []
            for key in keys:
                mean = centre[key] * (1 + 0.005 * math.sin(2 * math.pi * (t % DAY) / DAY))
                sd = 0.2 * centre[key]
                a = in_any(anomalies, key, t + window / 2)
                if a is not None:  # size in standard deviations of the window mean
                    mean += (1 if a.kind == "high" else -1) * sizes[id(a)] * sd / math.sqrt(per_window)
                for _ in range(per_window):
                    batch.append(({"service": key, "duration_ms": round(r.gauss(mean, sd), 2)},
                                  t + r.random() * window))
            batch.sort(key=lambda item: item[1])
            yield batch
            t += window

    yaml_text = """
id: bench-metric
type: metric
by: [service]
field: duration_ms
aggregate: mean
window: 10m
halflife: 36
min_samples: 36
"""
    return Stream(yaml_text, batches, anomalies, n_keys, eval_start, eval_end, window)


def new_value_stream(rng: random.Random, weeks_eval: int, n_keys: int) -> Stream:
    keys = [f"service-{i}" for i in range(n_keys)]
    deployers = {k: [f"{k}-dev{j}" for j in range(rng.randint(3, 8))] for k in keys}
    eval_start, eval_end = T0 + WEEK, T0 + WEEK * (1 + weeks_eval)
    anomalies = place(rng, keys, 3 * weeks_eval, eval_start, eval_end, (1, 2), ("new",), gap=3600)
    step = 120.0

    def batches() -> Iterator[Batch]:
        r = random.Random(14)
        pending = sorted(anomalies, key=lambda a: a.start)
        t = T0
        while t < eval_end:
            batch: Batch = []
            for key in keys:
                if r.random() < seasonal(t) / 2:
                    batch.append(({"service": key, "deployer": r.choice(deployers[key])}, t + r.random() * step))
            while pending and pending[0].start < t + step:
                a = pending.pop(0)
                newcomer = f"{a.key}-intruder-{int(a.start)}"
                for extra in range(r.randint(1, 3)):  # the newcomer deploys a few times
                    batch.append(({"service": a.key, "deployer": newcomer}, a.start + extra * 0.5))
            batch.sort(key=lambda item: item[1])
            yield batch
            t += step

    yaml_text = """
id: bench-new-value
type: new_value
by: [service]
fields: [deployer]
learning: 7d
allowed_lateness: 5m
"""
    return Stream(yaml_text, batches, anomalies, n_keys, eval_start, eval_end, 2.0)


def cardinality_stream(rng: random.Random, weeks_eval: int, n_keys: int) -> Stream:
    window = 3600.0
    keys = [f"token-{i}" for i in range(n_keys)]
    usual = {k: [f"repo-{k}-{j}" for j in range(rng.randint(8, 20))] for k in keys}
    eval_start, eval_end = T0 + 2 * DAY, T0 + 2 * DAY + WEEK * weeks_eval
    anomalies = place(rng, keys, 2 * weeks_eval, eval_start, eval_end, (600, 1800), ("sweep",))
    step = 600.0

    def batches() -> Iterator[Batch]:
        r = random.Random(15)
        t = T0
        while t < eval_end:
            batch: Batch = []
            for key in keys:
                for _ in range(poisson(r, 4 * seasonal(t))):
                    batch.append(({"token": key, "repo": r.choice(usual[key])}, t + r.random() * step))
                a = in_any(anomalies, key, t + step / 2)
                if a is not None:
                    for j in range(r.randint(20, 60)):  # a sweep over repositories it never touched
                        batch.append(({"token": key, "repo": f"other-{r.randrange(5000)}-{j}"},
                                      t + r.random() * step))
            batch.sort(key=lambda item: item[1])
            yield batch
            t += step

    yaml_text = """
id: bench-cardinality
type: cardinality
by: [token]
field: repo
window: 1h
baseline: true
learning: 2d
"""
    return Stream(yaml_text, batches, anomalies, n_keys, eval_start, eval_end, window)


def threshold_stream(rng: random.Random, weeks_eval: int, n_keys: int) -> Stream:
    keys = [f"user-{i}" for i in range(n_keys)]
    eval_start, eval_end = T0, T0 + WEEK * weeks_eval
    anomalies = place(rng, keys, 2 * weeks_eval, eval_start, eval_end, (120, 300), ("burst",))
    step = 600.0

    def batches() -> Iterator[Batch]:
        r = random.Random(16)
        bursts = sorted((r.uniform(a.start, a.end), a.key) for a in anomalies for _ in range(r.randint(12, 40)))
        t = T0
        while t < eval_end:
            batch: Batch = []
            for key in keys:
                for _ in range(poisson(r, 2 * seasonal(t))):
                    outcome = "failure" if r.random() < 0.1 else "success"
                    batch.append(({"user": key, "action": "login", "outcome": outcome}, t + r.random() * step))
            while bursts and bursts[0][0] < t + step:
                at, user = bursts.pop(0)
                batch.append(({"user": user, "action": "login", "outcome": "failure"}, at))
            batch.sort(key=lambda item: item[1])
            yield batch
            t += step

    yaml_text = """
id: bench-threshold
type: threshold
by: [user]
selection: {action: login, outcome: failure}
count: 10
window: 10m
"""
    return Stream(yaml_text, batches, anomalies, n_keys, eval_start, eval_end, 60.0)


def ratio_stream(rng: random.Random, weeks_eval: int, n_keys: int) -> Stream:
    window = 3600.0
    keys = [f"pipeline-{i}" for i in range(n_keys)]
    eval_start, eval_end = T0, T0 + WEEK * weeks_eval
    anomalies = place(rng, keys, 2 * weeks_eval, eval_start, eval_end, (3600, 3 * 3600), ("failing",))
    shares = {id(a): rng.uniform(0.35, 0.8) for a in anomalies}
    step = 600.0

    def batches() -> Iterator[Batch]:
        r = random.Random(17)
        t = T0
        while t < eval_end:
            batch: Batch = []
            for key in keys:
                a = in_any(anomalies, key, t + step / 2)
                p_fail = shares[id(a)] if a is not None else 0.05
                for _ in range(poisson(r, 10 * seasonal(t))):
                    status = "failed" if r.random() < p_fail else "success"
                    batch.append(({"pipeline": key, "status": status}, t + r.random() * step))
            batch.sort(key=lambda item: item[1])
            yield batch
            t += step

    yaml_text = """
id: bench-ratio
type: ratio
by: [pipeline]
selection: {status: failed}
max_ratio: 0.25
min_count: 20
window: 1h
"""
    return Stream(yaml_text, batches, anomalies, n_keys, eval_start, eval_end, window)


STREAMS: dict[str, Callable[[random.Random, int, int], Stream]] = {
    "volume": volume_stream, "silence": silence_stream, "metric": metric_stream,
    "new_value": new_value_stream, "cardinality": cardinality_stream, "threshold": threshold_stream,
    "ratio": ratio_stream,
}
KEYS = {"volume": 20, "silence": 30, "metric": 20, "new_value": 40, "cardinality": 40, "threshold": 40,
        "ratio": 30}


# -- scoring -------------------------------------------------------------------------------------
def _alert_time(match: Match) -> tuple[str, float]:
    """The alert's key and the event time at which it was raised: a window alert's ``event_time``
    is its window's first event (what it is about), but it is known only once the window closes."""
    details = match.details or {}
    key = ",".join(str(v) for v in details["key"].values())
    windowed = details["check_type"] in ("metric", "volume", "ratio") or (
        details["check_type"] == "cardinality" and "max" not in (details.get("expected") or {}))
    at = details["window_end"] if windowed else details["event_time"]
    return key, datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def evaluate(name: str, stream: Stream) -> dict[str, Any]:
    specs, errors = parse_checks(stream.check_yaml, source=f"bench:{name}")
    if errors:
        raise SystemExit(f"bench check {name} invalid: {errors}")
    engine = AnomalyEngine(specs)
    alerts: list[Match] = []
    events, spent = 0, 0.0
    process = engine.process
    last = 0.0
    for batch in stream.batches():
        began = time.process_time()
        for event, ts in batch:
            found = process(event, ts)
            if found:
                alerts.extend(found)
        spent += time.process_time() - began
        events += len(batch)
        if batch:
            last = batch[-1][1]
        alerts.extend(engine.advance(last))
    alerts.extend(engine.advance(stream.eval_end))
    hits: dict[int, float] = {}
    false = 0
    total = 0
    for match in alerts:
        if (match.details or {}).get("state") in ("recovered", "resolved"):
            continue
        key, at = _alert_time(match)
        if not stream.eval_start <= at <= stream.eval_end + stream.grace:
            if at < stream.eval_start:
                false += 1  # an alert during learning is a false alert too
                total += 1
            continue
        total += 1
        hit = next((a for a in stream.anomalies if a.key == key and a.start - 0.01 <= at <= a.end + stream.grace),
                   None)
        if hit is None:
            false += 1
        elif id(hit) not in hits:
            hits[id(hit)] = at - hit.start
    weeks = (stream.eval_end - stream.eval_start) / WEEK
    delays = list(hits.values())
    return {
        "precision": round((total - false) / total, 4) if total else None,
        "recall": round(len(hits) / len(stream.anomalies), 4) if stream.anomalies else None,
        "median_delay_s": round(statistics.median(delays), 1) + 0.0 if delays else None,
        "false_alerts_per_key_week": round(false / (stream.keys * weeks), 4),
        "events_per_s": round(events / spent) if spent else None,
        "events": events,
        "anomalies": len(stream.anomalies),
        "alerts": total,
        "keys": stream.keys,
        "eval_weeks": round(weeks, 2),
        "skips": {k: v for k, v in engine.counters.items() if v and k != "alerts"},
    }


# -- memory --------------------------------------------------------------------------------------
MEMORY_EVENT: dict[str, Callable[[int], dict[str, Any]]] = {
    "volume": lambda i: {"runner": f"runner-{i:08d}"},
    "silence": lambda i: {"stream": f"audit-{i:08d}"},
    "metric": lambda i: {"service": f"svc-{i:08d}", "duration_ms": i % 997},
    "new_value": lambda i: {"service": f"service-{i:08d}", "deployer": f"dev-{i % 13}"},
    "cardinality": lambda i: {"token": f"token-{i:08d}", "repo": f"repo-{i % 17}"},
    "threshold": lambda i: {"user": f"user-{i:08d}", "action": "login", "outcome": "failure"},
    "ratio": lambda i: {"pipeline": f"pipeline-{i:08d}", "status": "failed"},
}


def memory_per_key(name: str, stream: Stream, n: int) -> dict[str, Any]:
    """Traced bytes per key: the larger of "all keys in an open window" and "windows closed".

    Each event comes with a Kafka record's position as its origin, as in the service (an open
    window keeps its first event's)."""
    specs, _ = parse_checks(stream.check_yaml)
    engine = AnomalyEngine(specs, max_keys_per_check=2 * n)
    make = MEMORY_EVENT[name]
    events = [make(i) for i in range(n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, event in enumerate(events):
        engine.process(event, T0 + i * 0.001, None, ("logs", 0, 1_000_000 + i))
    open_window = tracemalloc.get_traced_memory()[0] - before
    alerts = len(engine.advance(T0 + 3700))  # past one window/interval/timeout of every bench check
    closed = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_key = max(open_window, closed) / n
    return {"bytes_per_key": round(per_key), "mb_per_1m_keys": round(per_key * 1e6 / 2**20, 1),
            "measured_keys": n, "open_window_bytes_per_key": round(open_window / n),
            "closed_bytes_per_key": round(closed / n), "alerts_while_measuring": alerts}


# -- stream families ---------------------------------------------------------------------------
FAMILY_CHECKS: dict[str, str] = {
    "metric": "type: metric\nby: [series]\nfield: value\ntimestamp_field: t\n",
    "metric_median_mad": "type: metric\nby: [series]\nfield: value\ntimestamp_field: t\nmodel: median_mad\n",
    "metric_mean_10m": "type: metric\nby: [series]\nfield: value\ntimestamp_field: t\naggregate: mean\nwindow: 10m\n",
}
"""Check configurations scored on the families: the documented defaults, only the model or window chosen."""
FAMILY_KEYS = 8


def run_family(check_yaml: str, series: list[fam.Series], end: float) -> tuple[dict[str, list[float]], float, int]:
    """Alert event times per key, CPU seconds spent in ``process``, and events fed."""
    specs, errors = parse_checks(check_yaml, source="bench:families")
    if errors:
        raise SystemExit(f"bench family check invalid: {errors}")
    engine = AnomalyEngine(specs)
    feed = sorted(((arrival, t, value, s.key) for s in series for t, arrival, value in s.points))
    events = [({"series": key, "t": t, "value": value}, arrival) for arrival, t, value, key in feed]
    alerts: list[Match] = []
    process = engine.process
    began = time.process_time()
    for event, arrival in events:
        found = process(event, arrival)
        if found:
            alerts.extend(found)
    spent = time.process_time() - began
    alerts.extend(engine.advance(end + 2 * fam.HOUR))
    times: dict[str, list[float]] = {s.key: [] for s in series}
    for match in alerts:
        if (match.details or {}).get("state") == "resolved":
            continue  # the end of an episode already alerted
        key, at = _alert_time(match)
        times[key].append(at)
    return times, spent, len(events)


def family_memory(check_yaml: str, n: int) -> dict[str, Any]:
    """Traced bytes per key after every key has scored values (and, windowed, with a window open).

    Each event comes with a Kafka record's position as its origin, built as the service builds it:
    an open window keeps its first event's (see ``Match.about``)."""
    specs, _ = parse_checks(check_yaml)
    engine = AnomalyEngine(specs, max_keys_per_check=2 * n)
    events = [{"series": f"series-{i:08d}", "t": T0 + j * 60 + i * 1e-4, "value": float(i % 97 + j)}
              for j in range(3) for i in range(n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for offset, event in enumerate(events, start=1_000_000):
        engine.process(event, float(event["t"]), None, ("logs", 0, offset))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"bytes_per_key": round(grown / n), "measured_keys": n}


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": [round(v, 3) for v in values]}


def evaluate_families(checks: list[str], seeds: list[int], quick: bool, memory_keys: int) -> dict[str, Any]:
    learn, span = (3 * DAY, WEEK) if quick else (WEEK, 2 * WEEK)
    weeks = (learn + span) / WEEK
    out: dict[str, Any] = {}
    for check in checks:
        check_yaml = f"id: fam-{check}\n" + FAMILY_CHECKS[check]
        per_family: dict[str, Any] = {}
        for name in fam.FAMILIES:
            runs: list[dict[str, Any]] = []
            rates: list[float] = []
            for seed in seeds:
                series = fam.family(name, seed, FAMILY_KEYS, T0, learn, span)
                times, spent, events = run_family(check_yaml, series, T0 + learn + span)
                score = fam.Score()
                for s in series:
                    score.add(s.windows, times[s.key])
                runs.append(score.figures(len(series), weeks))
                rates.append(events / spent if spent else math.nan)
            first = runs[0]
            entry: dict[str, Any] = {k: statistics.median(r[k] for r in runs if r[k] is not None)
                                     if any(r[k] is not None for r in runs) else None for k in first}
            entry["window_score"] = _spread([r["window_score"] for r in runs])
            entry["events_per_s"] = _spread(rates)
            per_family[name] = entry
        per_family["_memory"] = family_memory(check_yaml, memory_keys)
        out[check] = per_family
    return out


def families_markdown(result: dict[str, Any]) -> str:
    lines = ["| check | family | window score (median; min-max) | precision | recall | false alerts / key / week "
             "| median delay (s) | events/s | bytes per key |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for check, per_family in result.items():
        if check.startswith("_"):
            continue
        memory = per_family["_memory"]["bytes_per_key"]
        for name, f in per_family.items():
            if name.startswith("_"):
                continue
            ws, rate = f["window_score"], f["events_per_s"]
            lines.append(f"| {check} | {name} | {ws['median']:.1f}; {ws['min']:.1f} to {ws['max']:.1f} | "
                         f"{f['precision']} | {f['recall']} | {f['false_alerts_per_key_week']} | "
                         f"{f['median_delay_s']} | {rate['median']:,.0f} | {memory} |")
    return "\n".join(lines)


def families_compare(labelled: list[tuple[str, dict[str, Any]]]) -> str:
    """Side by side: window score (median; min-max over seeds) and false alerts per key-week per run."""
    labels = [label for label, _ in labelled]
    head = "| check | family | " + " | ".join(f"{x}: score; FA/key/week; recall" for x in labels) + " |"
    lines = [head, "| --- | --- | " + " | ".join("---" for _ in labels) + " |"]
    first = labelled[0][1]
    for check, per_family in first.items():
        if check.startswith("_"):
            continue
        for name in per_family:
            if name.startswith("_"):
                continue
            cells = []
            for _, result in labelled:
                f = result.get(check, {}).get(name)
                if f is None:
                    cells.append("-")
                    continue
                ws = f["window_score"]
                cells.append(f"{ws['median']:.1f} ({ws['min']:.1f} to {ws['max']:.1f}); "
                             f"{f['false_alerts_per_key_week']}; {f['recall']}")
            lines.append(f"| {check} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="shorter streams (one evaluation week)")
    parser.add_argument("--only", default="", help="comma-separated check types")
    parser.add_argument("--memory-keys", type=int, default=50_000)
    parser.add_argument("--families", action="store_true", help="score the metric checks on the stream families")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds of the family streams")
    parser.add_argument("--markdown", action="store_true", help="with --families: a markdown table")
    parser.add_argument("--compare", nargs="+", metavar="LABEL=FILE.json",
                        help="side-by-side table of saved --families results")
    args = parser.parse_args()
    if args.compare:
        runs = [(item.partition("=")[0], json.loads(Path(item.partition("=")[2]).read_text()))
                for item in args.compare]
        print(families_compare(runs))
        return 0
    meta = {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}
    if args.families:
        checks = [c for c in FAMILY_CHECKS if not args.only or c in args.only.split(",")]
        seeds = [int(x) for x in args.seeds.split(",")]
        fresult = evaluate_families(checks, seeds, args.quick, min(args.memory_keys, 20_000))
        fresult["_meta"] = {**meta, "seeds": seeds, "keys_per_family": FAMILY_KEYS, "quick": args.quick}
        print(families_markdown(fresult) if args.markdown else json.dumps(fresult))
        return 0
    names = [n for n in STREAMS if not args.only or n in args.only.split(",")]
    weeks = 1 if args.quick else 2
    result: dict[str, Any] = {}
    for name in names:
        stream = STREAMS[name](random.Random(sum(map(ord, name))), weeks, KEYS[name])
        figures = evaluate(name, stream)
        figures["memory"] = memory_per_key(name, stream, args.memory_keys)
        result[name] = figures
    result["_meta"] = {"python": platform.python_version(), "machine": platform.machine(),
                       "processor": platform.processor() or platform.machine(), "eval_weeks": weeks}
    if args.json:
        print(json.dumps(result))
    else:
        for name, figures in result.items():
            print(name, json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
