"""``pipesentry anomaly replay --explain`` and ``--plot``: what a ``metric`` check saw, per alert and as a band.

Why: an alert that says "score 5.2" is hard to trust; one that says "expected 412
(centre 380 + 32 for 15:00-16:00 UTC), band 371-453 wide because of this hour's
spread, probability 3e-6" can be checked by eye, and a plot of the series with its
band shows at once whether the band follows the data. Both read the values the
check scores through :attr:`detectors.anomaly.metric.MetricCheck.observer`
(nothing is recomputed here, so what is shown is what decided).

``--explain`` adds an ``explain`` object to each ``metric`` alert's JSON line:
the expectation and its parts, the band, what set the band's width, the score,
the probability and the season phase. ``--plot FILE.png`` draws one key's series
(``--plot-key field=value,...``; default: the key of the first ``metric`` alert,
else the first key scored) of one check (``--plot-check``; default: the first
``metric`` check) with the expected value, the band and the alerts. Points are
kept in bounded memory: past ``MAX_POINTS`` (all held keys together, before the
first alert) every second one is dropped, so the series stays whole but thinner
(alerts always stay). matplotlib is an optional extra (``pip install 'pipesentry[plot]'``);
without it ``--plot`` fails before reading any event, with that hint.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from detectors.anomaly import AnomalyEngine
from detectors.anomaly.keys import Key
from detectors.anomaly.metric import Explained, MetricCheck
from service.errors import ServiceError

MAX_POINTS = 200_000
"""Points kept for the plot; past it every second point is dropped (the series stays evenly thinned)."""
MAX_PENDING_KEYS = 1_000
"""Without ``--plot-key``: keys whose values are held until one of them alerts (later keys are not plotted)."""
PLOT_HINT = "--plot needs matplotlib: pip install 'pipesentry[plot]'"
PHASE_TEXT = {
    "hourly": lambda n: f":{5 * n:02d}-:{5 * n + 5:02d} past the hour",
    "daily": lambda n: f"{n:02d}:00-{n + 1:02d}:00 UTC",
    "weekly": lambda n: ("Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday")[n] + " UTC",
}
"""Profile slot -> readable phase (the weekly profile's slot 0 is a Thursday: the epoch's weekday)."""


Point = tuple[float, float, float, float, float]
"""Event time, observed, expected, low, high (the last three NaN while the key learns: no band yet)."""
NAN = float("nan")


def _point(ex: Explained) -> Point:
    if not ex.ready:
        return (ex.time, ex.observed, NAN, NAN, NAN)
    return (ex.time, ex.observed, ex.expected, ex.low, ex.high)


class PlotUnavailable(ServiceError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Fail early (before reading events) when ``--plot`` cannot draw."""
    try:
        importlib.import_module("matplotlib")
    except ImportError as exc:
        raise PlotUnavailable(PLOT_HINT) from exc


def parse_key(text: str) -> dict[str, str]:
    """``host=a,region=eu`` -> ``{"host": "a", "region": "eu"}`` (``ValueError`` when malformed)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        field, sep, value = part.partition("=")
        if not sep or not field.strip():
            raise ValueError(f"not FIELD=VALUE: {part!r}")
        out[field.strip()] = value
    return out


def explain_record(ex: Explained) -> dict[str, Any]:
    """The ``explain`` object of one alert."""
    parts = {"scale": ex.scale, "spread": ex.spread, "floor": ex.floor}
    return {
        "expected": _num(ex.expected),
        "centre": _num(ex.centre),
        "season": _num(ex.season),
        "band": {"low": _num(ex.low), "high": _num(ex.high)},
        "unit": _num(ex.unit),
        "unit_from": max(parts, key=lambda name: parts[name]),
        "scale": _num(ex.scale),
        "spread": _num(ex.spread),
        "floor": _num(ex.floor),
        "score": round(ex.score, 3),
        "probability": None if ex.probability is None else float(f"{ex.probability:.3g}"),
        "phase": {name: PHASE_TEXT[name](slot) for name, slot in ex.phase.items()},
    }


def _num(x: float) -> float:
    return round(x, 6)


class Recorder:
    """Observes every ``metric`` check of an engine for ``--explain`` and ``--plot``."""

    def __init__(self, engine: AnomalyEngine, *, explain: bool, plot_check: str | None = None,
                 plot_key: dict[str, str] | None = None, plot: bool = False) -> None:
        self.explain = explain
        self.explained: dict[str, Explained] = {}
        metrics = {cid: check for cid, check in engine.checks.items() if isinstance(check, MetricCheck)}
        if plot and plot_check is not None and plot_check not in metrics:
            raise ValueError(f"--plot-check {plot_check!r} is not a metric check of the files")
        if plot and not metrics:
            raise ValueError("--plot draws a metric check, and the files have none")
        self.plot_check = (plot_check or next(iter(metrics), None)) if plot else None
        self.plot_key: Key | None = None
        self.by: tuple[str, ...] = ()
        if self.plot_check is not None:
            self.by = tuple(metrics[self.plot_check].by)
            if plot_key is not None:
                if set(plot_key) != set(self.by):
                    raise ValueError(f"--plot-key names {sorted(plot_key)}, check {self.plot_check} is keyed "
                                     f"by {list(self.by)}")
                self.plot_key = tuple(plot_key[f] for f in self.by)
        self.points: list[Point] = []
        self.alerts: list[tuple[float, float, str]] = []
        self.thinned = 0
        self._pending: dict[Key, list[Point]] = {}
        self._held = 0
        for check in metrics.values():
            check.observer = self._observe

    def _observe(self, ex: Explained) -> None:
        if ex.alert_key is not None and self.explain:
            self.explained[ex.alert_key] = ex
        if ex.check != self.plot_check:
            return
        if self.plot_key is None:
            self._hold(ex)
            return
        if ex.key == self.plot_key:
            self._keep(ex)

    def _hold(self, ex: Explained) -> None:
        """No key chosen yet: hold each key's latest values until one alerts, then plot that one."""
        if ex.alert_key is not None:
            self._choose(ex.key)
            self._keep(ex)
            return
        held = self._pending.get(ex.key)
        if held is None:
            if len(self._pending) >= MAX_PENDING_KEYS:
                return
            held = self._pending[ex.key] = []
        held.append(_point(ex))
        self._held += 1
        if self._held > MAX_POINTS:
            for key, points in self._pending.items():
                self._pending[key] = points[::2]
            self._held = sum(len(points) for points in self._pending.values())
            self.thinned += 1

    def _choose(self, key: Key) -> None:
        self.plot_key = key
        self.points = self._pending.pop(key, [])
        self._pending.clear()
        self._held = 0

    def _keep(self, ex: Explained) -> None:
        self.points.append(_point(ex))
        if ex.alert_key is not None:
            self.alerts.append((ex.time, ex.observed, "high" if ex.score > 0 else "low"))
        if len(self.points) > MAX_POINTS:
            self.points = self.points[::2]
            self.thinned += 1

    def annotate(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` (one alert's JSON object) with its ``explain`` object when it is a metric alert."""
        ex = self.explained.get(str(record.get("alert_key")))
        if ex is not None:
            record["explain"] = explain_record(ex)
        return record

    def finish(self) -> None:
        """End of input: with no alert and no ``--plot-key``, plot the first key scored."""
        if self.plot_key is None and self._pending:
            self._choose(next(iter(self._pending)))

    def title(self) -> str:
        if self.plot_key is None:
            return f"{self.plot_check}: no value scored"
        key = ",".join(f"{f}={v}" for f, v in zip(self.by, self.plot_key, strict=True)) or "*"
        return f"{self.plot_check} {key}"


def draw(recorder: Recorder, path: Path) -> int:
    """Write the plot to ``path`` (PNG); the number of points drawn."""
    recorder.finish()
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise PlotUnavailable(PLOT_HINT) from exc
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    dates = importlib.import_module("matplotlib.dates")
    from datetime import UTC, datetime

    def when(t: float) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    fig, ax = pyplot.subplots(figsize=(12, 4.5), dpi=100)
    try:
        points = recorder.points
        if points:
            times = [when(p[0]) for p in points]
            ax.fill_between(times, [p[3] for p in points], [p[4] for p in points], color="tab:blue", alpha=0.18,
                            linewidth=0, label="band", step="mid")
            ax.plot(times, [p[2] for p in points], color="tab:blue", linewidth=0.8, label="expected")
            ax.plot(times, [p[1] for p in points], color="black", linewidth=0.6, marker=".", markersize=1.5,
                    label="observed")
        for direction, colour in (("high", "tab:red"), ("low", "tab:orange")):
            marks = [(when(t), x) for t, x, d in recorder.alerts if d == direction]
            if marks:
                ax.scatter([m[0] for m in marks], [m[1] for m in marks], color=colour, s=28, zorder=3,
                           label=f"alert ({direction})")
        ax.set_title(recorder.title() + (f" (thinned {2 ** recorder.thinned}x)" if recorder.thinned else ""))
        ax.set_xlabel("event time (UTC)")
        ax.xaxis.set_major_formatter(dates.DateFormatter("%Y-%m-%d %H:%M"))
        fig.autofmt_xdate()
        ax.legend(loc="upper left", fontsize="small")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        pyplot.close(fig)
    return len(recorder.points)


__all__ = ["MAX_POINTS", "PlotUnavailable", "Recorder", "draw", "explain_record", "parse_key",
           "require_matplotlib"]
