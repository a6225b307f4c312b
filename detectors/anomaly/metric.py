"""``metric``: a numeric field per key against a robust baseline that forgets by event time.

Models (per key, on the value or, with ``aggregate``, on the per-window
aggregate; optionally on ``log1p(value)``):

- ``ewma`` (default): exponential forgetting in event time. Before each value
  the key's accumulated weight ``W`` is multiplied by ``0.5 ** (dt / half_life)``
  (``dt`` = event time since the key's latest value), then the value joins
  with weight 1: centre and mean absolute deviation move by ``1 / W``. So a
  burst of values a second apart and one value an hour count the same per
  value, old values fade with time, not with the number of values, and a young
  key has a plain running mean. Scale = 1.2533 x mean absolute deviation (sigma
  for normal data). Once the key is ready, residuals are winsorised at 2.5
  scale before updating so outliers do not drag the band.
- ``median_mad``: median and 1.4826 x MAD of the last ``window_values`` values
  (a ring buffer of float32 offsets from a reference level that follows the
  median), recomputed every ``window_values / 8`` values.

Gaps: a key whose latest value is older than ``max_gap`` (default four
half-lives, when less than 1/16 of the old weight would remain) restarts
learning, as if new (counted ``gap_restarts``); out-of-order values (within
the lateness) update without decay.

Expected value = centre + the seasonal profiles' slots for the phase (see
``seasons``; the centre and deviation learn the de-seasonalised value).
``z = (x - expected) / max(scale, spread, min_scale, resolution)``, where
spread is what the profiles learnt the expectation errs by at this phase
(noise that is seasonal: a gauge flat at night and noisy by day) and
resolution is the finest decimal step of the key's raw values (a band never
narrower than the data's steps). By default ``z`` becomes the key's tail probability (see
``calibration``) and the key alerts when it is <= ``probability`` or a CUSUM
of the normal-equivalent scores reaches ``cusum``; ``threshold`` set: the
fixed ``|z|`` rule. Only once the key has learnt for ``learn_for`` of event
time and ``min_samples`` values and the check's learning period is over; one
alert per episode (see ``episodes``), and an informational ``resolved`` match
with the episode's start, peak and end when it calms down. Non-numeric values
are counted as ``bad_value``.

An alert against the latest episode's direction, within ``half_life`` of its
end and calm against the level the key had before it (nearer it than the model now is), is that
episode ending, not a new one (see ``MetricCheck._returns``).

State per key: one ``array('d')``: ``HEADER`` slots (model, tail, open
episode), the episode-decision slots, (median_mad) the ring's reference level
and its values packed two float32 a slot, then the profiles. Its layout is
``STATE_LAYOUT`` in snapshots (the ring unpacked, one value a number).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from array import array
from collections.abc import Callable
from statistics import median
from typing import Any

from detectors.anomaly import calibration, episodes
from detectors.anomaly.base import (
    Check,
    WindowedCheck,
    closed_until,
    first_event,
    key_list,
    key_tuple,
    origin_from_state,
    origin_state,
)
from detectors.anomaly.keys import Key, key_repr
from detectors.anomaly.seasons import Profiles
from detectors.anomaly.spec import MetricSpec
from detectors.anomaly.timeutil import iso
from detectors.event import MISSING, get
from detectors.model import Event, EventRef, Match, OriginRef
from detectors.state import LruMap

WINSOR = 2.5
ABS_DEV_TO_SIGMA = 1.2533
MAD_TO_SIGMA = 1.4826
TINY = 1e-12
STATE_LAYOUT = 4
"""Version of the per-key array layout (1: centre, deviation, count by samples; 2: event time, profile
slots of 3 doubles; 3: below, profile slots with their spread; 4: the episode's base level and return
flag, the median_mad ring as a reference level and float32 offsets). Another layout is dropped on
restore: the check's keys learn again."""
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32 = struct.Struct("f")
REBASE = 256.0
"""The median_mad ring's reference moves to the median once they are this many scales apart."""
# per-key state: values since (re)start, decayed weight, centre, deviation (median_mad: scale),
# event time of the latest value, event time learning (re)started, resolution of the raw values
# (0: none seen yet; kept across restarts); then episode slots, then the ring
N, WEIGHT, CENTRE, DEV, LAST_T, SINCE, RES = range(7)
TAIL = 7  # calibration.SLOTS slots: the key's score tail (kept across restarts, like RES)
# the open (or latest) episode: start (0: none yet), signed score and event time and value of its peak,
# last time |z| >= 2, the de-seasonalised centre the key had before it (the level it returns to), and
# 1 while the key is quietly returning to that level after it (see MetricCheck._returns)
EP_START, EP_PEAK_Z, EP_PEAK_T, EP_PEAK_X, EP_END, EP_BASE, EP_RETURN = range(TAIL + calibration.SLOTS,
                                                                              TAIL + calibration.SLOTS + 7)
HEADER = EP_RETURN + 1
KEPT_ON_RESTART = frozenset({RES, *range(TAIL, TAIL + calibration.SLOTS)})
MAX_DECIMALS = 6
FINEST = 10.0 ** -MAX_DECIMALS
"""The finest resolution a key can have (values with more decimals are on no coarser grid)."""
CUSUM_CLIP = 3.0
"""At most this much of one (calibrated) score enters the CUSUM: it is for runs of moderate scores."""
EPISODE = HEADER
RING = HEADER + episodes.SLOTS


@dataclasses.dataclass(frozen=True, slots=True)
class Explained:
    """One scored value (or window aggregate) as the model saw it, before learning from it.

    For ``pipesentry anomaly replay --explain``/``--plot`` (see ``MetricCheck.observer``).
    ``expected``, ``low`` and ``high`` are in the value's units (the band where the key's
    tail probability reaches ``probability``); ``centre``, ``season``, ``scale``, ``spread``,
    ``floor`` and ``unit`` in model space (``log1p`` with ``transform: log``): the band's unit
    is the largest of the model's scale, the phase's spread and the floor (``min_scale`` or the
    resolution). ``phase``: profile name -> slot number. ``alert_key``: set when it alerted.
    """

    check: str
    key: Key
    time: float
    observed: float
    expected: float
    low: float
    high: float
    centre: float
    season: float
    scale: float
    spread: float
    floor: float
    unit: float
    score: float
    probability: float | None
    ready: bool
    phase: dict[str, int]
    alert_key: str | None


def to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def resolution(x: float) -> float:
    """The value's last decimal place (1 for whole numbers, 0.1 for 12.5; at least 1e-6).

    Why: a band can never be narrower than the steps the data moves in. A count of
    1 against a run of zeros is one step, not 10^12 standard deviations.
    """
    if x.is_integer():
        return 1.0
    mantissa, _, exponent = repr(x).partition("e")
    decimals = len(mantissa.partition(".")[2]) - (int(exponent) if exponent else 0)
    return 10.0 ** -min(max(decimals, 0), MAX_DECIMALS)


def _finer(current: float, step: float) -> float:
    return step if current == 0.0 or step < current else current


def finest(current: float, x: float) -> float:
    """``current`` resolution refined by value ``x`` (cheap when ``x`` is on the current grid)."""
    if current:
        if current <= FINEST:  # nothing is finer: spare the text conversion of every value
            return current
        steps = x / current
        if abs(steps - round(steps)) < 1e-6:
            return current
    return _finer(current, resolution(x))


class MetricCheck(WindowedCheck):
    kind = "metric"

    def __init__(self, spec: MetricSpec, max_keys: int) -> None:
        super().__init__(spec, max_keys)
        self.s = spec
        self.log = spec.transform == "log"
        self.half_life = spec.half_life
        self.tail_half_life = spec.tail_half_life
        self.limit = spec.threshold if spec.threshold is not None else calibration.threshold(spec.probability)
        self.max_gap = spec.max_gap_s
        self.ring = spec.window_values if spec.model == "median_mad" else 0
        self.refresh = max(1, self.ring // 8)
        # the ring: its reference level (a double), then its values as float32 offsets from it, two a slot
        self.ring_slots = 1 + (self.ring + 1) // 2 if self.ring else 0
        self.packed = 2 * (RING + 1)
        """Index of the ring's first value in the key array seen as float32."""
        self.resolved_info = dataclasses.replace(self.info, level="informational")
        self.seasons = Profiles(spec.seasonality, spec.season_half_life, RING + self.ring_slots)
        self.size = RING + self.ring_slots + self.seasons.size
        self.logical_size = RING + (1 + self.ring if self.ring else 0) + self.seasons.size
        """Length of a key's state in snapshots (the ring's values one a number)."""
        self._keys: LruMap[Key, array[float]] = LruMap(self.max_keys)
        self.observer: Callable[[Explained], None] | None = None
        """Called with every scored value when set (replay's ``--explain``/``--plot``; costs nothing unset)."""

    @property
    def keys(self) -> LruMap[Key, Any]:
        return self._keys

    def is_late(self, t: float) -> bool:
        if self.s.aggregate is not None:
            return super().is_late(t)
        return Check.is_late(self, t)

    def _value(self, event: Event) -> float | None:
        raw = get(event, self.s.field)
        if raw is MISSING or raw is None:
            self.counters["missing_value"] += 1
            return None
        x = to_number(raw)
        if x is None or (self.log and x < 0):
            self.counters["bad_value"] += 1
            return None
        return x

    def _state(self, key: Key) -> array[float]:
        state = self._keys.touch(key)
        if state is None:
            state = array("d", bytes(8 * self.size))
            self._keys.put(key, state)
        return state

    def _on_event(self, event: Event, key: Key, t: float, origin: OriginRef | None) -> list[Match]:
        x = self._value(event)
        if x is None:
            return []
        if self.s.aggregate is None:
            state = self._state(key)
            state[RES] = finest(state[RES], x)
            found = self._score(key, state, x, t, t, t, state[RES], t, None)
            return [found] if found is not None else []
        window = self.s.window
        _, per_key = self.window_at(t, window)
        acc = per_key.get(key)
        if acc is None:
            if len(per_key) >= self.max_keys:
                self.counters["key_overflow"] += 1
                return []
            self._state(key)
            per_key[key] = [x, 1.0, x, x, resolution(x), t, origin]
        else:
            acc[0] += x
            acc[1] += 1
            if x > acc[2]:
                acc[2] = x
            if x < acc[3]:
                acc[3] = x
            acc[4] = finest(acc[4], x)
            if t < acc[5]:
                acc[5], acc[6] = t, origin
        return []

    def _on_watermark(self, watermark: float) -> list[Match]:
        if self.s.aggregate is None or self.closed_upto is None:
            return []
        out: list[Match] = []
        window = self.s.window
        for start in sorted(b for b in self.open if b + window <= watermark):
            for key, (total, count, high, low, step, first, origin) in self.open.pop(start).items():
                aggregate = self.s.aggregate
                value = {"mean": total / count, "sum": total, "max": high, "min": low,
                         "count": count}[aggregate]
                state = self._state(key)
                state[RES] = _finer(state[RES], step)
                res = 1.0 if aggregate == "count" else state[RES] / count if aggregate == "mean" else state[RES]
                found = self._score(key, state, value, start + window, start, start + window, res, first,
                                    first_event(first, origin))
                if found is not None:
                    out.append(found)
        self.closed_upto = closed_until(self.closed_upto, window, watermark)
        return out

    def _restart_after_gap(self, state: array[float]) -> None:
        """A key silent for longer than ``max_gap`` learns again (its old band is stale)."""
        self.counters["gap_restarts"] += 1
        for slot in range(RING):
            if slot not in KEPT_ON_RESTART:
                state[slot] = 0.0

    def _floor(self, centre: float, res: float) -> float:
        """The data's resolution ``res`` (raw units) as a band unit in model space."""
        if not self.log:
            return res
        at = max(math.expm1(centre), 0.0)
        return math.log1p(at + res) - math.log1p(at)

    def _score(self, key: Key, state: array[float], x: float, t: float, start: float,
               end: float, res: float, first: float, about: EventRef | None) -> Match | None:
        """Score one value (or window aggregate) at event time ``t``; ``first``: its first event's time,
        ``about``: that event, when it is not the one being processed (a window's first event)."""
        spec = self.s
        y = math.log1p(x) if self.log else x
        last = state[LAST_T]
        if last and t > last:
            calibration.decay(state, TAIL, 0.5 ** ((t - last) / self.tail_half_life))
        if state[N] and t - last > self.max_gap:
            self._restart_after_gap(state)
        if not state[N]:
            state[SINCE] = state[LAST_T] = t
        centre = state[CENTRE]
        scale = state[DEV] if self.ring else state[DEV] * ABS_DEV_TO_SIGMA
        slots = self.seasons.slots((start + end) / 2) if self.seasons.parts else None
        season = self.seasons.expected(state, slots) if slots else 0.0
        spread = ABS_DEV_TO_SIGMA * self.seasons.spread(state, slots) if slots else 0.0
        expected = centre + season
        floor = self._floor(expected, res) if self.log else res
        if spec.min_scale > floor:
            floor = spec.min_scale
        unit = max(scale, spread, floor, TINY)
        z = (y - expected) / unit
        p: float | None = None
        score = z
        calibrated = spec.threshold is None
        if calibrated and not -calibration.U <= z <= calibration.U:  # within U the score is its own
            p = calibration.probability(state, TAIL, z)
            score = calibration.normal_score(z, p)
        first_ts = self.first_ts
        ready = (state[N] >= spec.min_samples and t - state[SINCE] >= spec.learn_for
                 and first_ts is not None and t >= first_ts + self.learning_s)
        found: Match | None = None
        sign = 0
        was_open = state[EPISODE + episodes.ACTIVE] != 0.0
        if ready:
            sign = episodes.decide(state, EPISODE, score, self.limit, spec.cusum, spec.cusum_slack,
                                   spec.direction != "down", spec.direction != "up", CUSUM_CLIP)
            if sign and self._returns(state, sign, y, centre, season, unit, t):
                # the end of the latest episode, not a new one: the key stays quiet until it calms
                # (the episode is open again, silently), and that episode has resolved already
                sign = 0
                state[EP_RETURN] = 1.0
        if sign or self.observer is not None:
            if calibrated and p is None:
                p = calibration.probability(state, TAIL, z)  # within U it depends on z alone
            width = (spec.threshold if spec.threshold is not None
                     else calibration.limit(state, TAIL, spec.probability)) * unit
            shown, low, high = expected, expected - width, expected + width
            if self.log:
                shown, low, high = math.expm1(shown), math.expm1(low), math.expm1(high)
            if self.observer is not None:
                self.observer(Explained(
                    spec.id, key, t, x, shown, low, high, centre, season, scale, spread, floor, unit, z, p, ready,
                    self.seasons.phases((start + end) / 2) if slots else {},
                    f"{spec.id}|{key_repr(self.by, key)}|{int(start)}" if sign else None))
        if sign:
            found = self.match(
                key, event_time=first, observed=x,
                expected={"center": round(shown, 6), "low": round(low, 6), "high": round(high, 6),
                          "model": spec.model, "aggregate": spec.aggregate, "season": round(season, 6)},
                score=z, window_start=start, window_end=end, about=about,
                direction="high" if sign > 0 else "low",
                probability=None if p is None else float(f"{p:.3g}"),
                **({"first_event_time": iso(first)} if spec.aggregate is not None else {}),
            )
            state[EP_START], state[EP_END], state[EP_BASE], state[EP_RETURN] = first, t, centre, 0.0
            state[EP_PEAK_Z], state[EP_PEAK_T], state[EP_PEAK_X] = z, t, x
        elif was_open:
            if state[EP_RETURN]:  # a quiet return (see _returns) resolves nothing and keeps the episode's slots
                if state[EPISODE + episodes.ACTIVE] == 0.0:
                    state[EP_RETURN] = 0.0
            elif state[EPISODE + episodes.ACTIVE] == 0.0:
                found = self._resolved(key, state)
            else:
                if abs(z) >= episodes.CALM_BELOW:
                    state[EP_END] = t
                if abs(z) > abs(state[EP_PEAK_Z]):
                    state[EP_PEAK_Z], state[EP_PEAK_T], state[EP_PEAK_X] = z, t, x
        if state[N] >= spec.min_samples and not was_open:  # an episode's later scores are not the key's tail
            calibration.observe(state, TAIL, z, spec.probability)
        if ready:  # what alerts barely moves the model; a lasting change still gets in
            bound = WINSOR * unit
            off = y - expected
            y = expected + (bound if off > bound else -bound if off < -bound else off)
        if self.ring:
            self._update_ring(state, y - season)
        else:
            self._update_ewma(state, y - season, t)
        if slots and state[N] >= spec.min_samples:  # a young centre's errors are not a season
            # nor are an alert episode's errors the phase's spread (they would blind it for a week)
            self.seasons.update(state, slots, y - centre, season, t, state[EPISODE + episodes.ACTIVE] == 0.0)
        state[N] += 1
        if t > state[LAST_T]:
            state[LAST_T] = t
        return found

    def _returns(self, state: array[float], sign: int, y: float, centre: float, season: float, unit: float,
                 t: float) -> bool:
        """Whether an alert of direction ``sign`` on ``y`` is the key returning to where it was before
        its latest episode: within ``half_life`` of that episode's end, against its direction, calm
        against the level the key had before it (``|z| < 2`` there), and nearer that level than the model's
        centre now is (the model moved with the episode, not the value away from the old level: a
        real shift against the episode's direction still alerts).

        Why: a model that has partly followed a temporary shift (``median_mad``'s ring half full of
        it, so its median and MAD sit between the two levels) sees the return to the old level as a
        shift of its own, a second page for one incident, typically minutes after the first episode
        resolved. A move back to the pre-episode level is the episode ending, not an anomaly.
        """
        if not state[EP_START] or t - state[EP_END] > self.half_life or sign * state[EP_PEAK_Z] >= 0:
            return False
        off = abs(y - state[EP_BASE] - season)
        return off < episodes.CALM_BELOW * unit and off < abs(centre - state[EP_BASE])

    def _resolved(self, key: Key, state: array[float]) -> Match:
        """The episode that just calmed down: start, peak and end (level informational)."""
        start, end = state[EP_START], state[EP_END]
        match = self.match(
            key, event_time=end, observed=state[EP_PEAK_X], expected=None, score=state[EP_PEAK_Z],
            window_start=start, window_end=end, state="resolved",
            episode={"start": iso(start), "end": iso(end),
                     "peak": {"time": iso(state[EP_PEAK_T]), "value": state[EP_PEAK_X],
                              "score": round(state[EP_PEAK_Z], 3)}},
            alert_key=f"{self.spec.id}|{key_repr(self.by, key)}|{int(start)}|resolved",
        )
        return dataclasses.replace(match, rule=self.resolved_info)

    def _update_ewma(self, state: array[float], y: float, t: float) -> None:
        elapsed = t - state[LAST_T]
        weight = state[WEIGHT] * (0.5 ** (elapsed / self.half_life) if elapsed > 0 else 1.0) + 1.0
        a = 1.0 / weight
        centre = state[CENTRE]
        if state[N]:
            state[DEV] += a * (abs(y - centre) - state[DEV])
        state[CENTRE] = centre + a * (y - centre)
        state[WEIGHT] = weight

    def _update_ring(self, state: array[float], y: float) -> None:
        """Add ``y`` to the key's ring (float32 offsets from its reference level) and, every
        ``refresh`` values, recompute median and MAD (and move the reference to the median when
        it is ``REBASE`` scales away).

        Why float32 offsets: half the bytes of the ring (the bulk of a ``median_mad`` key); the
        offsets are of the size of the key's spread around its median, so float32's 7 digits
        are 7 digits of the spread, not of the level (a level of 1e9 moving by 1 keeps its 1).
        """
        ring = self.ring
        n = int(state[N])
        if n == 0:
            state[RING] = y
        ref = state[RING]
        first = 4 * self.packed
        FLOAT32.pack_into(state, first + 4 * (n % ring), max(-FLOAT32_MAX, min(FLOAT32_MAX, y - ref)))
        n += 1
        if n <= 2 * self.refresh or n % self.refresh == 0:
            held = f"{min(n, ring)}f"
            offsets = struct.unpack_from(held, state, first)
            centre = median(offsets)
            state[CENTRE] = ref + centre
            state[DEV] = scale = MAD_TO_SIGMA * median([abs(v - centre) for v in offsets])
            if abs(centre) > REBASE * scale:  # offsets stay within REBASE scales: float32 keeps 1e-5 of one
                state[RING] = ref + centre
                struct.pack_into(held, state, first, *(v - centre for v in offsets))

    def _export(self, state: array[float]) -> list[float]:
        """The key's state for a snapshot: the ring's float32 values one a number (never raw packed bits)."""
        if not self.ring:
            return list(state)
        values = memoryview(state).cast("B").cast("f")
        ring = values[self.packed: self.packed + self.ring].tolist()
        values.release()
        return [*state[: RING + 1], *ring, *state[RING + self.ring_slots:]]

    def _import(self, logical: list[float]) -> array[float]:
        """A key's array from its snapshot form (see ``_export``)."""
        if not self.ring:
            return array("d", logical)
        state = array("d", bytes(8 * self.size))
        state[: RING + 1] = array("d", logical[: RING + 1])
        state[RING + self.ring_slots:] = array("d", logical[RING + 1 + self.ring:])
        values = memoryview(state).cast("B").cast("f")
        for i, v in enumerate(logical[RING + 1: RING + 1 + self.ring]):
            values[self.packed + i] = max(-FLOAT32_MAX, min(FLOAT32_MAX, v))
        values.release()
        return state

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "layout": STATE_LAYOUT,
            "closed_upto": self.closed_upto,
            "keys": [[key_list(k), self._export(v)] for k, v in self._keys.items()],
            "open": [[b, [[key_list(k), [*acc[:6], origin_state(acc[6])]] for k, acc in per_key.items()]]
                     for b, per_key in self.open.items()],
            "evictions": self._keys.evictions,
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        if state.get("layout", 1) != STATE_LAYOUT:
            raise ValueError(f"metric key state has layout {state.get('layout', 1)}, this version reads "
                             f"{STATE_LAYOUT} (baselines restart learning)")
        self.closed_upto = None if state["closed_upto"] is None else float(state["closed_upto"])
        self._keys.clear()
        for raw_key, values in state["keys"]:
            if len(values) != self.logical_size:
                raise ValueError("metric key state has the wrong size")
            self._keys.put(key_tuple(raw_key), self._import([float(v) for v in values]))
        self._keys.evictions = int(state.get("evictions", 0))
        self.open = {float(b): {key_tuple(k): _accumulator(acc) for k, acc in per_key}
                     for b, per_key in state["open"]}


def _accumulator(raw: Any) -> list[Any]:
    """An open window's accumulator: total, count, max, min, resolution, first event time and that
    event's origin (absent in snapshots of version 2 and older: the alert is then about no event)."""
    if not isinstance(raw, list) or len(raw) not in (6, 7):
        raise ValueError("metric window accumulator has the wrong size")
    acc: list[Any] = [float(x) for x in raw[:6]]
    acc.append(origin_from_state(raw[6]) if len(raw) == 7 else None)
    return acc
