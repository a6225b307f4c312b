"""``volume``: events per key per interval against a seasonal baseline; spikes and drops.

Model (per key): expected count ``e = level * daily[hour] * weekly[weekday]``,
a multiplicative decomposition learned by exponentially weighted updates
(level half-life ``adapt``, daily factors ``3 x adapt``, weekly factors three
weeks; plain running means while a slot has few samples). The noise is
over-dispersed Poisson: ``sigma = sqrt(phi * max(e, 1))`` with the dispersion
``phi`` an EWMA (half-life one day) of ``residual^2 / e``. Each closed interval
scores ``z = (count - e) / sigma``; a two-sided CUSUM on ``z`` (slack
``cusum_slack``) catches sustained shifts that no single interval shows.
Alert when ``|z| >= threshold`` or a CUSUM reaches ``cusum``, on spikes only
when ``count >= min_count`` and on drops only when ``e >= min_count``. One
alert per episode: a key re-arms after three normal intervals. After learning,
residuals are winsorised at 2.5 sigma before updating, so anomalies barely move
the baseline while lasting level shifts are still absorbed over time.

State per key: one ``array('d')`` of 8 + 24 + 7 doubles (312 bytes) plus the
key tuple and its map entry (see docs/anomaly.md for measured figures).
"""

from __future__ import annotations

import math
from array import array
from typing import Any

from detectors.anomaly.base import Check, key_list, key_tuple
from detectors.anomaly.keys import Key
from detectors.anomaly.spec import DAY, WEEK, VolumeSpec
from detectors.model import Event, Match
from detectors.state import LruMap

# layout of a key's state array
LEVEL, PHI, N, FIRST, CUP, CDN, ALERT, CALM = range(8)
DAILY = 8
WEEKLY = DAILY + 24
SIZE = WEEKLY + 7
PHI_FLOOR = 0.25
WINSOR = 2.5
CALM_TO_REARM = 3
MAX_CATCHUP = 20_000
"""Empty intervals closed in one watermark jump at most (longer gaps are skipped and counted)."""


class VolumeCheck(Check):
    kind = "volume"

    def __init__(self, spec: VolumeSpec, max_keys: int) -> None:
        super().__init__(spec, max_keys)
        self.s = spec
        self.interval = spec.interval
        self.daily = "daily" in spec.seasonality
        self.weekly = "weekly" in spec.seasonality
        self.offset = spec.utc_offset_hours * 3600.0
        per_hour = 3600.0 / spec.interval
        self.a_level = 1 - 0.5 ** (spec.interval / spec.adapt)
        self.a_daily = 1 - 0.5 ** (1 / max(1.0, 3 * spec.adapt / DAY * per_hour))
        self.a_weekly = 1 - 0.5 ** (1 / max(1.0, 3 * WEEK / WEEK * 24 * per_hour))
        self.a_phi = 1 - 0.5 ** (spec.interval / DAY)
        self._keys: LruMap[Key, array[float]] = LruMap(self.max_keys)
        self.open: dict[float, dict[Key, int]] = {}
        self.closed_upto: float | None = None

    @property
    def keys(self) -> LruMap[Key, Any]:
        return self._keys

    def is_late(self, t: float) -> bool:
        return self.closed_upto is not None and t < self.closed_upto

    def _on_event(self, event: Event, key: Key, t: float) -> list[Match]:
        start = t - t % self.interval
        if self.closed_upto is None:
            self.closed_upto = start
        counts = self.open.get(start)
        if counts is None:
            counts = self.open[start] = {}
        if key in counts:
            counts[key] += 1
        elif len(counts) >= self.max_keys:
            self.counters["key_overflow"] += 1
            return []
        else:
            counts[key] = 1
        keys = self._keys
        if keys.touch(key) is None:
            state = array("d", bytes(8 * SIZE))
            state[FIRST] = start
            for i in range(DAILY, SIZE):
                state[i] = 1.0
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

    def _slots(self, start: float) -> tuple[int, int, bool, bool]:
        local = start + self.offset
        hour = int(local // 3600) % 24
        day = int(local // DAY)
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        day_start = local % DAY == 0
        return hour, weekday, day_start, day_start and weekday == 0

    def _close(self, start: float, counts: dict[Key, int], out: list[Match]) -> None:
        spec = self.s
        hour, weekday, day_start, week_start = self._slots(start)
        check_ready = self.ready_at(start)
        end = start + self.interval
        for key, state in self._keys.items():
            if state[FIRST] > start:
                continue
            if day_start:
                self._normalise(state, week_start)
            count = counts.get(key, 0)
            ready = check_ready and start - state[FIRST] >= self.learning_s
            alert = self._step(state, count, hour, weekday, ready)
            if alert is not None:
                e, sigma, z = alert
                t = spec.threshold
                out.append(self.match(
                    key, event_time=end, observed=count,
                    expected={"mean": round(e, 3), "low": round(max(0.0, e - t * sigma), 3),
                              "high": round(e + t * sigma, 3), "sigma": round(sigma, 3)},
                    score=z, window_start=start, window_end=end,
                    direction="spike" if z > 0 else "drop",
                ))

    def _normalise(self, state: array[float], week: bool) -> None:
        if self.daily:
            mean = sum(state[DAILY:WEEKLY]) / 24
            if mean > 0:
                for i in range(DAILY, WEEKLY):
                    state[i] /= mean
                state[LEVEL] *= mean
        if week and self.weekly:
            mean = sum(state[WEEKLY:SIZE]) / 7
            if mean > 0:
                for i in range(WEEKLY, SIZE):
                    state[i] /= mean
                state[LEVEL] *= mean

    def _step(self, s: array[float], count: int, hour: int, weekday: int,
              ready: bool) -> tuple[float, float, float] | None:
        """Score ``count`` against the key's baseline, update it; ``(e, sigma, z)`` when it alerts."""
        spec = self.s
        di, wi = DAILY + hour, WEEKLY + weekday
        d = s[di] if self.daily else 1.0
        w = s[wi] if self.weekly else 1.0
        n = s[N]
        if n == 0:
            s[LEVEL] = count / (d * w)
            s[PHI] = 1.0
            s[N] = 1
            return None
        level = s[LEVEL]
        e = level * d * w
        sigma = math.sqrt(max(s[PHI], PHI_FLOOR) * max(e, 1.0))
        z = (count - e) / sigma
        alert: tuple[float, float, float] | None = None
        if ready:
            k = spec.cusum_slack
            s[CUP] = max(0.0, s[CUP] + z - k)
            s[CDN] = max(0.0, s[CDN] - z - k)
            h = spec.cusum if spec.cusum is not None else math.inf
            up = (z >= spec.threshold or s[CUP] >= h) and spec.direction != "down" and count >= spec.min_count
            down = (-z >= spec.threshold or s[CDN] >= h) and spec.direction != "up" and e >= spec.min_count
            if s[ALERT] != 0:
                s[CALM] = s[CALM] + 1 if abs(z) < 2.0 else 0
                if s[CALM] >= CALM_TO_REARM:
                    s[ALERT] = 0
                    s[CUP] = s[CDN] = 0.0
            elif up or down:
                alert = (e, sigma, z if up else min(z, -1e-9))
                s[ALERT] = 1.0 if up else -1.0
                s[CALM] = 0
                s[CUP] = s[CDN] = 0.0
            resid = max(-WINSOR * sigma, min(WINSOR * sigma, count - e))
        else:
            resid = count - e
        used = e + resid
        m_level = max(self.a_level, 1 / (n + 1))
        s[LEVEL] = level = max(0.0, level + m_level * (used / (d * w) - level))
        if level > 0:
            if self.daily:
                s[di] = max(0.0, d + max(self.a_daily, 24 / (n + 24)) * (used / (level * w) - d))
            if self.weekly:
                s[wi] = max(0.0, w + max(self.a_weekly, 7 / (n + 7)) * (used / (level * d) - w))
        s[PHI] += max(self.a_phi, 1 / (n + 1)) * (resid * resid / max(e, 1.0) - s[PHI])
        s[N] = n + 1
        return alert

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "closed_upto": self.closed_upto,
            "keys": [[key_list(k), list(v)] for k, v in self._keys.items()],
            "open": [[b, [[key_list(k), c] for k, c in counts.items()]] for b, counts in self.open.items()],
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
        self.open = {float(b): {key_tuple(k): int(c) for k, c in counts} for b, counts in state["open"]}
