"""``volume``: events per key per interval against a seasonal baseline; spikes and drops.

Model (per key): expected count ``e = level / M * daily(hour) * weekly[weekday]``
with ``M`` intervals per day. With weekly seasonality ``level`` is the mean
of the key's last seven complete daily totals (a moving week, blind to the
weekly shape by construction); ``weekly[d]`` is the EWMA over weeks (half-life
three weeks) of that weekday's total divided by the level before it. Without
weekly seasonality ``level`` is an EWMA (half-life ``adapt``) of the
de-seasonalised interval counts. ``daily`` holds 24 hourly factors,
interpolated linearly between hour centres, updated every interval (half-life
``adapt``; the first day's hourly counts give the first shape, then a running
mean over days until the half-life takes over); renormalised to mean 1 daily.

Noise: counts are scored after Anscombe's square-root transform, where Poisson
noise has unit variance: ``z = 2 (sqrt(count + 3/8) - sqrt(e + 3/8)) / sqrt(phi)``
with ``phi`` (over-dispersion) an EWMA (half-life one day) of squared residuals.
A two-sided CUSUM on ``z`` (slack ``cusum_slack``) catches sustained shifts
that no single interval shows. Alert when ``|z| >= threshold`` or a CUSUM
reaches ``cusum``, on spikes only when ``count >= min_count`` and on drops only
when ``e >= min_count``. One alert per episode: a key re-arms after three calm
intervals. After learning, residuals are winsorised at 2.5 before updating,
so anomalies barely move the baseline while lasting shifts are absorbed.

State per key: one ``array('d')`` of 48 doubles (384 bytes of payload) plus
the key tuple and its map entry (see docs/anomaly.md for measured figures).
"""

from __future__ import annotations

import math
from array import array
from typing import Any

from detectors.anomaly import episodes
from detectors.anomaly.base import (
    WindowedCheck,
    first_event,
    key_list,
    key_tuple,
    origin_from_state,
    origin_state,
)
from detectors.anomaly.keys import Key
from detectors.anomaly.spec import DAY, WEEK, VolumeSpec
from detectors.model import Event, Match, OriginRef
from detectors.state import LruMap

# layout of a key's state array
PHI, N, FIRST = 0, 1, 2  # over-dispersion, intervals seen, first interval start
EPISODE = 3  # episodes.SLOTS slots of alert-episode state
DAY_COUNT = EPISODE + episodes.SLOTS  # today's (winsorised) total so far
LEVEL = DAY_COUNT + 1  # expected daily total
RUN = LEVEL + 1  # de-seasonalised running count per interval
RING = RUN + 1  # last daily total per weekday (-1: none yet)
DAILY = RING + 7
WEEKLY = DAILY + 24
SIZE = WEEKLY + 7
PHI_FLOOR = 0.25
WINSOR = 2.5
MAX_CATCHUP = 20_000
"""Empty intervals closed in one watermark jump at most (longer gaps are skipped and counted)."""


class VolumeCheck(WindowedCheck):
    kind = "volume"

    def __init__(self, spec: VolumeSpec, max_keys: int) -> None:
        super().__init__(spec, max_keys)
        self.s = spec
        self.interval = spec.interval
        self.daily = "daily" in spec.seasonality
        self.weekly = "weekly" in spec.seasonality
        self.offset = spec.utc_offset_hours * 3600.0
        per_hour = 3600.0 / spec.interval
        self.per_day = DAY / spec.interval
        self.a_level = 1 - 0.5 ** (spec.interval / spec.adapt)
        self.per_hour = per_hour
        self.a_daily = 1 - 0.5 ** (1 / max(1.0, spec.adapt / DAY * per_hour))
        self.a_weekly = 1 - 0.5 ** (1 / 3)  # one sample per weekday and week: half-life three weeks
        self.a_phi = 1 - 0.5 ** (spec.interval / DAY)
        self._keys: LruMap[Key, array[float]] = LruMap(self.max_keys)

    @property
    def keys(self) -> LruMap[Key, Any]:
        return self._keys

    def _on_event(self, event: Event, key: Key, t: float, origin: OriginRef | None) -> list[Match]:
        start, counts = self.window_at(t, self.interval)
        acc = counts.get(key)
        if acc is not None:
            acc[0] += 1
            if t < acc[1]:
                acc[1], acc[2] = t, origin
        elif len(counts) >= self.max_keys:
            self.counters["key_overflow"] += 1
            return []
        else:
            counts[key] = [1, t, origin]
        keys = self._keys
        if keys.touch(key) is None:
            state = array("d", bytes(8 * SIZE))
            state[FIRST] = start
            for i in range(RING, DAILY):
                state[i] = -1.0
            for i in range(DAILY if not self.daily else WEEKLY, SIZE):
                state[i] = 1.0  # daily slots start at 0: they collect the first day's counts
            keys.put(key, state)
        return []

    def _on_watermark(self, watermark: float) -> list[Match]:
        if self.closed_upto is None or watermark < self.closed_upto + self.interval:
            return []
        out: list[Match] = []
        interval = self.interval
        due = int((watermark - self.closed_upto) // interval)
        if due > MAX_CATCHUP:
            skip = due - MAX_CATCHUP
            self.counters["gap_intervals_skipped"] += skip
            for start in [b for b in self.open if b < self.closed_upto + skip * interval]:
                del self.open[start]
            self.closed_upto += skip * interval
        while self.closed_upto + interval <= watermark:
            start = self.closed_upto
            self._close(start, self.open.pop(start, {}), out)
            self.closed_upto = start + interval
        return out

    def _slots(self, start: float) -> tuple[int, float, int, bool, bool]:
        """Daily slot and interpolation weight (slot centres at half past each hour), weekday, boundaries."""
        local = start + self.offset
        hours = ((local + self.interval / 2) % DAY) / 3600 - 0.5
        base = math.floor(hours)
        day = int(local // DAY)
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        day_start = local % DAY == 0
        return base % 24, hours - base, weekday, day_start, day_start and weekday == 0

    def _close(self, start: float, counts: dict[Key, list[Any]], out: list[Match]) -> None:
        """Score every key's count of the interval at ``start`` (its accumulator: count, first event
        time and origin; a spike's alert is about that first event)."""
        spec = self.s
        hour, frac, weekday, day_start, week_start = self._slots(start)
        check_ready = self.ready_at(start + self.interval)
        end = start + self.interval
        for key, state in self._keys.items():
            if state[FIRST] > start:
                continue
            if day_start:
                self._roll_day(state, (weekday - 1) % 7, start)
                if state[N] >= self.per_day:
                    self._normalise(state, week_start)
            acc = counts.get(key)
            count = acc[0] if acc is not None else 0
            ready = check_ready and start - state[FIRST] >= self.learning_s
            alert = self._step(state, count, hour, frac, weekday, ready)
            if alert is not None:
                e, sigma, z = alert
                root, half = math.sqrt(e + 0.375), spec.threshold * sigma / 2
                low = max(0.0, root - half) ** 2 - 0.375
                first = acc if z > 0 and acc is not None else None  # a spike is about its first event
                out.append(self.match(
                    key, event_time=end if first is None else first[1], observed=count,
                    expected={"mean": round(e, 3), "low": round(max(0.0, low), 3),
                              "high": round((root + half) ** 2 - 0.375, 3),
                              "sigma": round(sigma * math.sqrt(max(e, 1.0)), 3)},
                    score=z, window_start=start, window_end=end,
                    about=None if first is None else first_event(first[1], first[2]),
                    direction="spike" if z > 0 else "drop",
                ))

    def _roll_day(self, s: array[float], weekday: int, start: float) -> None:
        """Close the key's day: weekly factor and moving-week level from the day's total."""
        total = s[DAY_COUNT]
        s[DAY_COUNT] = 0.0
        if not self.weekly or s[N] == 0 or s[FIRST] > start - DAY:
            return  # a partial first day tells nothing about its weekday
        level = s[LEVEL]
        if level > 0:
            seen = (start - DAY - s[FIRST]) // WEEK
            i = WEEKLY + weekday
            s[i] += max(self.a_weekly, 1 / (seen + 1)) * (total / level - s[i])
        s[RING + weekday] = total
        days = [v for v in s[RING:DAILY] if v >= 0]
        s[LEVEL] = sum(days) / len(days)

    def _normalise(self, state: array[float], week: bool) -> None:
        for lo, hi, on in ((DAILY, WEEKLY, self.daily), (WEEKLY, SIZE, self.weekly and week)):
            if not on:
                continue
            mean = sum(state[lo:hi]) / (hi - lo)
            if mean > 0:
                for i in range(lo, hi):
                    state[i] /= mean

    def _step(self, s: array[float], count: int, hour: int, frac: float, weekday: int,
              ready: bool) -> tuple[float, float, float] | None:
        """Score ``count`` against the key's baseline, update it; ``(e, sigma, z)`` when it alerts.

        During the key's first day the daily slots only collect counts (the
        level is still unknown); at its end they become the first shape estimate.
        """
        n = s[N]
        young = self.daily and n < self.per_day
        di, dj = DAILY + hour, DAILY + (hour + 1) % 24
        d = 1.0 if young or not self.daily else s[di] * (1 - frac) + s[dj] * frac
        w = s[WEEKLY + weekday] if self.weekly else 1.0
        if n == 0:
            s[RUN] = count / w
            s[LEVEL] = s[RUN] * self.per_day
            s[PHI] = 1.0
        level = s[LEVEL]
        e = level / self.per_day * d * w
        root_e = math.sqrt(e + 0.375)
        sigma = math.sqrt(max(s[PHI], PHI_FLOOR))  # in Anscombe units: 1 for Poisson noise
        z = 2 * (math.sqrt(count + 0.375) - root_e) / sigma
        alert: tuple[float, float, float] | None = None
        if ready and not young:
            alert = self._decide(s, z, e, sigma, count)
            resid = max(-WINSOR, min(WINSOR, z)) * sigma
        else:
            resid = z * sigma
        used = max(0.0, (root_e + resid / 2) ** 2 - 0.375)
        s[DAY_COUNT] += used
        # de-seasonalised running level: the level itself until a full week of days exists
        s[RUN] += max(self.a_level, 1 / (n + 1)) * (used / (d * w) - s[RUN])
        if not self.weekly or all(v < 0 for v in s[RING:DAILY]):
            s[LEVEL] = level = s[RUN] * self.per_day
        if self.daily:
            if young:
                s[di] += used * (1 - frac)
                s[dj] += used * frac
                if n + 1 >= self.per_day:
                    self._first_shape(s)
            elif level > 0:
                days = n // self.per_day
                step = max(self.a_daily, 1 / (days * self.per_hour + 1)) * (used * self.per_day / (level * w) - d)
                s[di] = max(0.0, s[di] + step * (1 - frac))
                s[dj] = max(0.0, s[dj] + step * frac)
        since = n - self.per_day if self.daily and not young else n  # noise estimate restarts after day one
        s[PHI] += max(self.a_phi, 1 / (since + 1)) * (resid * resid - s[PHI])
        s[N] = n + 1
        return alert

    @staticmethod
    def _first_shape(s: array[float]) -> None:
        mean = sum(s[DAILY:WEEKLY]) / 24
        for i in range(DAILY, WEEKLY):
            s[i] = s[i] / mean if mean > 0 else 1.0

    def _decide(self, s: array[float], z: float, e: float, sigma: float,
                count: int) -> tuple[float, float, float] | None:
        spec = self.s
        sign = episodes.decide(s, EPISODE, z, spec.threshold, spec.cusum, spec.cusum_slack,
                               spec.direction != "down" and count >= spec.min_count,
                               spec.direction != "up" and e >= spec.min_count)
        if sign == 0:
            return None
        return e, sigma, z if sign > 0 else min(z, -1e-9)

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "closed_upto": self.closed_upto,
            "keys": [[key_list(k), list(v)] for k, v in self._keys.items()],
            "open": [[b, [[key_list(k), [c, first, origin_state(origin)]] for k, (c, first, origin) in counts.items()]]
                     for b, counts in self.open.items()],
            "evictions": self._keys.evictions,
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        self.closed_upto = None if state["closed_upto"] is None else float(state["closed_upto"])
        self._keys.clear()
        for raw_key, values in state["keys"]:
            if len(values) != SIZE:
                raise ValueError("volume key state has the wrong size")
            self._keys.put(key_tuple(raw_key), array("d", (float(v) for v in values)))
        self._keys.evictions = int(state.get("evictions", 0))
        self.open = {float(b): {key_tuple(k): _accumulator(c, float(b)) for k, c in counts} for b, counts in state["open"]}


def _accumulator(raw: Any, start: float) -> list[Any]:
    """An open interval's accumulator for a key: count, first event time and origin (snapshots of
    version 2 and older hold the count alone: the first event is then the interval's start, origin unknown)."""
    if isinstance(raw, list):
        if len(raw) != 3:
            raise ValueError("volume interval accumulator has the wrong size")
        return [int(raw[0]), float(raw[1]), origin_from_state(raw[2])]
    return [int(raw), start, None]
