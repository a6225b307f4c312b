"""Stream families with the properties of real operational series, and the windowed score.

Why: the per-type streams of ``anomaly_eval.py`` are kind (stationary noise,
one sample a minute, no gaps); real series have daily and hourly rhythms,
trends, irregular sampling, gaps, disorder, quantised low counts, flat
stretches and heavy tails. Each family below holds one of those properties on
top of Gaussian noise of known scale, and injects labelled anomaly windows of
at least 3 noise scales into its evaluation part only, so a check's defaults
are measured on what breaks them.

Every family yields, per key, points ``(event_time, arrival, value)`` and
anomaly windows ``(start, end, kind)``. Events carry the time in the field
``t`` and arrive at ``arrival`` (later than ``t`` in the disorder family).

The window score (defined in docs/anomaly.md, "Evaluation on stream
families"): the first alert inside a window earns ``credit(p)``, a sigmoid of
its relative position ``p`` in the window (1 at the start, about 0.05 at the
end); a window without an alert costs ``MISS_COST``; every alert outside all
windows costs ``FALSE_COST``; further alerts inside a window neither earn nor
cost. The raw sum is normalised so that raising no alerts scores 0 and the
first alert at the very start of every window with no false alert scores 100.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

DAY = 86400.0
WEEK = 7 * DAY
HOUR = 3600.0
STEP = 300.0
"""Default sampling: one value every five minutes."""

SIGMOID_K = 6.0
FALSE_COST = 0.1
MISS_COST = 1.0
GRACE = 900.0
"""Alerts up to 15 minutes after a window's end still count for it (window aggregates close late)."""


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float
    kind: str


@dataclass(slots=True)
class Series:
    key: str
    points: list[tuple[float, float, float]]  # event time, arrival time, value
    windows: list[Window] = field(default_factory=list)


Points = list[tuple[float, float, float]]
Made = tuple[Points, list[Window]]
Generator = Callable[[random.Random, float, float, float], Made]


# -- building blocks ---------------------------------------------------------------------------
def regular(t0: float, t1: float, step: float = STEP) -> Iterator[float]:
    t = t0
    while t < t1:
        yield t
        t += step


def place(rng: random.Random, start: float, end: float, per_week: float, length: tuple[float, float],
          spacing: float = 12 * HOUR) -> list[tuple[float, float]]:
    """Non-overlapping ``(start, end)`` spans, at least ``spacing`` apart, in ``[start, end)``."""
    wanted = max(1, round(per_week * (end - start) / WEEK))
    spans: list[tuple[float, float]] = []
    tries = 0
    while len(spans) < wanted and tries < 1000:
        tries += 1
        s = rng.uniform(start, end - length[1] - HOUR)
        e = s + rng.uniform(*length)
        if all(s > b + spacing or e < a - spacing for a, b in spans):
            spans.append((s, e))
    return sorted(spans)


def shifts(rng: random.Random, eval_start: float, end: float, sigma: float,
           length: tuple[float, float] = (1800.0, 7200.0), size: tuple[float, float] = (4.0, 6.0)
           ) -> tuple[Callable[[float], float], list[Window]]:
    """Temporary level shifts (up or down) of ``size`` noise scales: an offset function and its windows."""
    spans = place(rng, eval_start, end, 2, length)
    offsets = [(a, b, rng.choice((1, -1)) * rng.uniform(*size) * sigma) for a, b in spans]
    windows = [Window(a, b, "shift") for a, b in spans]

    def offset(t: float) -> float:
        for a, b, d in offsets:
            if a <= t < b:
                return d
        return 0.0

    return offset, windows


def base_level(rng: random.Random) -> tuple[float, float]:
    level = rng.uniform(50, 500)
    return level, 0.05 * level


def daily_wave(t: float, amplitude: float) -> float:
    return amplitude * math.sin(2 * math.pi * ((t % DAY) / DAY - 0.375))  # peak at 15:00 UTC


# -- the families --------------------------------------------------------------------------------
def fam_daily(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """Daily rhythm of +-6 noise scales; temporary shifts."""
    level, sigma = base_level(rng)
    offset, windows = shifts(rng, eval_start, t1, sigma)
    pts = [(t, t, level + daily_wave(t, 6 * sigma) + offset(t) + rng.gauss(0, sigma)) for t in regular(t0, t1)]
    return pts, windows


def fam_hourly(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """A job at the top of every hour lifts the value by 8 noise scales for 10 minutes; temporary shifts."""
    level, sigma = base_level(rng)
    offset, windows = shifts(rng, eval_start, t1, sigma)
    pts = [(t, t, level + (8 * sigma if t % HOUR < 600 else 0.0) + offset(t) + rng.gauss(0, sigma))
           for t in regular(t0, t1)]
    return pts, windows


def fam_trend(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """A steady trend of 20 noise scales a week (growth); temporary shifts."""
    level, sigma = base_level(rng)
    slope = rng.choice((1, -1)) * 20 * sigma / WEEK
    offset, windows = shifts(rng, eval_start, t1, sigma)
    pts = [(t, t, level + slope * (t - t0) + offset(t) + rng.gauss(0, sigma)) for t in regular(t0, t1)]
    return pts, windows


def fam_irregular(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """Sampling intervals log-uniform between 1 s and 1 h; shifts of 1-3 h so they hold samples."""
    level, sigma = base_level(rng)
    offset, windows = shifts(rng, eval_start, t1, sigma, length=(HOUR, 3 * HOUR))
    pts: Points = []
    t = t0
    while t < t1:
        pts.append((t, t, level + offset(t) + rng.gauss(0, sigma)))
        t += math.exp(rng.uniform(0.0, math.log(3600.0)))
    return pts, windows


def fam_gaps(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """Five-minute sampling with three gaps of 2 h to 3 days (the source was down); temporary shifts."""
    level, sigma = base_level(rng)
    offset, windows = shifts(rng, eval_start, t1, sigma)
    gaps = place(rng, t0 + DAY, t1, 3 * WEEK / (t1 - t0), (2 * HOUR, 3 * DAY), spacing=DAY)
    gaps = [(a, b) for a, b in gaps if not any(a - DAY < w.end and w.start < b + DAY for w in windows)]
    pts = [(t, t, level + offset(t) + rng.gauss(0, sigma)) for t in regular(t0, t1)
           if not any(a <= t < b for a, b in gaps)]
    return pts, windows


def fam_disorder(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """One value a minute arriving 0-45 s late (out of order) and 5 % delivered twice; temporary shifts."""
    level, sigma = base_level(rng)
    offset, windows = shifts(rng, eval_start, t1, sigma)
    pts: Points = []
    for t in regular(t0, t1, 60.0):
        point = (t, t + rng.uniform(0, 45), level + offset(t) + rng.gauss(0, sigma))
        pts.append(point)
        if rng.random() < 0.05:
            pts.append((t, point[1] + rng.uniform(0, 10), point[2]))
    return pts, windows


def fam_level_shift(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """One lasting level shift of 5-8 noise scales per key: the window is its first two hours."""
    level, sigma = base_level(rng)
    at = rng.uniform(eval_start + DAY, t1 - 3 * DAY)
    step = rng.choice((1, -1)) * rng.uniform(5, 8) * sigma
    pts = [(t, t, level + (step if t >= at else 0.0) + rng.gauss(0, sigma)) for t in regular(t0, t1)]
    return pts, [Window(at, at + 2 * HOUR, "level_shift")]


def fam_drift(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """Slow drifts: a ramp to 6 noise scales over 3-8 h, held 2 h, ramped back."""
    level, sigma = base_level(rng)
    spans = place(rng, eval_start, t1, 2, (8 * HOUR, 18 * HOUR))
    drifts = []
    for a, b in spans:
        ramp = (b - a - 2 * HOUR) / 2
        drifts.append((a, ramp, b, rng.choice((1, -1)) * 6 * sigma))

    def offset(t: float) -> float:
        for a, ramp, b, size in drifts:
            if a <= t < b:
                return size * min(1.0, (t - a) / ramp, (b - t) / ramp)
        return 0.0

    pts = [(t, t, level + offset(t) + rng.gauss(0, sigma)) for t in regular(t0, t1)]
    return pts, [Window(a, b, "drift") for a, _, b, _ in drifts]


def fam_spikes(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """Single-sample spikes of 5-10 noise scales (up or down)."""
    level, sigma = base_level(rng)
    spans = place(rng, eval_start, t1, 3, (STEP, STEP))
    spikes = {a - a % STEP: rng.choice((1, -1)) * rng.uniform(5, 10) * sigma for a, _ in spans}
    pts = [(t, t, level + spikes.get(t, 0.0) + rng.gauss(0, sigma)) for t in regular(t0, t1)]
    return pts, [Window(t, t + STEP, "spike") for t in sorted(spikes)]


def poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def fam_low_counts(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """Quantised low counts (Poisson, mean 0.2-2 per 5 min); bursts to mean + 6 sd + 3 for 30-120 min."""
    lam = rng.uniform(0.2, 2.0)
    spans = place(rng, eval_start, t1, 2, (1800.0, 7200.0))
    burst = lam + 6 * math.sqrt(lam) + 3
    pts = [(t, t, float(poisson(rng, burst if any(a <= t < b for a, b in spans) else lam)))
           for t in regular(t0, t1)]
    return pts, [Window(a, b, "burst") for a, b in spans]


def fam_flat(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """Exactly constant for most of the day (a gauge that only moves under load), noisy 14:00-16:00 daily;
    temporary shifts of 6 noise scales placed in the flat stretches."""
    level, sigma = base_level(rng)
    offset, windows = shifts(rng, eval_start, t1, sigma, size=(6.0, 6.0))
    windows = [w for w in windows if not any(14 * HOUR - 7200 <= (x % DAY) < 16 * HOUR for x in (w.start, w.end))]
    kept = [(w.start, w.end) for w in windows]

    def value(t: float) -> float:
        v = level + (offset(t) if any(a <= t < b for a, b in kept) else 0.0)
        if 14 * HOUR <= t % DAY < 16 * HOUR:
            v += rng.gauss(0, sigma)
        return round(v, 1)

    return [(t, t, value(t)) for t in regular(t0, t1)], windows


def fam_heavy_tail(rng: random.Random, t0: float, eval_start: float, t1: float) -> Made:
    """Student-t noise with 3 degrees of freedom (scale = sigma); shifts of 8 scales for 30-120 min."""
    level, sigma = base_level(rng)
    offset, windows = shifts(rng, eval_start, t1, sigma, size=(8.0, 8.0))

    def student3() -> float:
        chi = sum(rng.gauss(0, 1) ** 2 for _ in range(3))
        return rng.gauss(0, 1) / math.sqrt(chi / 3)

    pts = [(t, t, level + offset(t) + sigma * student3()) for t in regular(t0, t1)]
    return pts, windows


FAMILIES: dict[str, Generator] = {
    "daily": fam_daily, "hourly": fam_hourly, "trend": fam_trend, "irregular": fam_irregular,
    "gaps": fam_gaps, "disorder": fam_disorder, "level_shift": fam_level_shift, "drift": fam_drift,
    "spikes": fam_spikes, "low_counts": fam_low_counts, "flat": fam_flat, "heavy_tail": fam_heavy_tail,
}


def family(name: str, seed: int, keys: int, t0: float, learn: float, evaluate: float) -> list[Series]:
    """``keys`` seeded series of family ``name``: ``learn`` seconds of normal data, then ``evaluate``."""
    gen = FAMILIES[name]
    rng = random.Random(f"{name}:{seed}")
    out = []
    for i in range(keys):
        pts, windows = gen(rng, t0, t0 + learn, t0 + learn + evaluate)
        out.append(Series(f"{name}-{i}", pts, windows))
    return out


# -- scoring ---------------------------------------------------------------------------------------
def credit(position: float) -> float:
    """Credit of a first alert at relative position ``position`` (0 = window start, 1 = end)."""
    p = min(1.0, max(0.0, position))
    return (1 + math.exp(-SIGMOID_K / 2)) / (1 + math.exp(SIGMOID_K * (p - 0.5)))


@dataclass(slots=True)
class Score:
    windows: int = 0
    detected: int = 0
    true_alerts: int = 0
    false_alerts: int = 0
    credit: float = 0.0
    delays: list[float] = field(default_factory=list)

    def add(self, windows: list[Window], alert_times: list[float]) -> None:
        """Score one key's alerts (event times) against its windows."""
        self.windows += len(windows)
        first: dict[int, float] = {}
        for at in alert_times:
            hit = next((i for i, w in enumerate(windows) if w.start <= at <= w.end + GRACE), None)
            if hit is None:
                self.false_alerts += 1
                continue
            self.true_alerts += 1
            if hit not in first or at < first[hit]:
                first[hit] = at
        for i, at in first.items():
            w = windows[i]
            self.detected += 1
            self.credit += credit((at - w.start) / max(w.end - w.start, 1.0))
            self.delays.append(at - w.start)

    def window_score(self) -> float:
        raw = self.credit - MISS_COST * (self.windows - self.detected) - FALSE_COST * self.false_alerts
        null = -MISS_COST * self.windows
        perfect = float(self.windows)
        return 100 * (raw - null) / (perfect - null) if self.windows else 0.0

    def figures(self, keys: int, weeks: float) -> dict[str, float | int | None]:
        alerts = self.true_alerts + self.false_alerts
        return {
            "window_score": round(self.window_score(), 1),
            "precision": round(self.true_alerts / alerts, 3) if alerts else None,
            "recall": round(self.detected / self.windows, 3) if self.windows else None,
            "false_alerts_per_key_week": round(self.false_alerts / (keys * weeks), 2),
            "median_delay_s": round(statistics.median(self.delays)) if self.delays else None,
            "alerts": alerts,
            "windows": self.windows,
        }
