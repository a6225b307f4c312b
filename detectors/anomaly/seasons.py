"""Additive seasonal profiles for ``metric``: what each phase of the hour, day or week adds.

Why: a series with a job at the top of every hour or a daytime peak is normal
when it repeats; without a profile the band either pages on every repeat or
widens until real anomalies fit in it. The expected value becomes
``centre + sum of the profiles' current slots`` and the centre learns the
de-seasonalised value.

Profiles (per key, fixed size): ``hourly`` 12 slots of five minutes, ``daily``
24 slots of an hour, ``weekly`` 7 slots of a day (UTC). Each slot holds its
value, its weight and the event time it was last updated; before a value
joins, the slot's weight decays by ``0.5 ** (elapsed / half_life)`` and the
slot moves by ``1 / weight`` towards the residual the other parts leave, so a
young slot is a running mean (shrunk towards 0 by ``PRIOR_WEIGHT``) and an old
one forgets in event time, whatever the sampling rate. Each profile also keeps the sum of its slot values and
contributes ``slot - mean of its slots``: profiles describe the shape, the
centre keeps the level (otherwise the two trade the level back and forth).

Each slot also learns its phase's spread: the decayed mean absolute error of
the full expectation at that phase (same weights and forgetting as the slot's
value, but without the prior, so a young slot's spread is a plain mean of
what it has seen). Why: noise is seasonal too. A gauge that is exactly flat
at night and noisy under daytime load shrinks a global scale to nothing by
morning, and the first noisy value of the day pages; a series whose model
still lags its rhythm errs most at the rhythm's steepest phases. ``spread``
gives the largest spread of the current slots, and the check's band is never
narrower than it (the band only widens where the model has erred at this
phase before, never narrows where it has not). The check does not teach the
spread the errors of an alert episode (``update(..., spread=False)``).
4 doubles per slot and one per profile: hourly + daily = 146 doubles (1,168
bytes) per key.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

PROFILES: dict[str, tuple[float, int]] = {
    "hourly": (3600.0, 12),
    "daily": (86400.0, 24),
    "weekly": (604800.0, 7),
}
"""Name -> (period in seconds, slots)."""
VALUE, WEIGHT, LAST, SPREAD = range(4)
PRIOR_WEIGHT = 4.0
"""A slot starts as if it had seen this many values of 0: one noisy value cannot set it."""
SLOT = 4


class Profiles:
    """The configured profiles, stored from index ``at`` of a key's ``array('d')``."""

    def __init__(self, names: Sequence[str], half_life: float, at: int) -> None:
        self.half_life = half_life
        self.decay = -math.log(2) / half_life
        # (period, slot length, index of the profile's sum, index of its first slot, slots)
        self.parts: list[tuple[float, float, int, int, int]] = []
        self.names = tuple(names)
        index = at
        for name in names:
            period, slots = PROFILES[name]
            self.parts.append((period, period / slots, index, index + 1, slots))
            index += 1 + slots * SLOT
        self.size = index - at
        # every slot length is a multiple of the shortest (five minutes, an hour or a day), so all
        # times in one stretch of it, [lo, hi), share their slots: the latest stretch is kept
        self._step = min((length for _, length, *_ in self.parts), default=1.0)
        self._lo = self._hi = math.nan
        self._held: list[tuple[int, int, int]] = []

    def slots(self, t: float) -> list[tuple[int, int, int]]:
        """(slot index, sum index, slot count) of each profile's slot holding event time ``t``."""
        if self._lo <= t < self._hi:
            return self._held
        held = self._held = [(first + int((t % period) // length) * SLOT, total, n)
                             for period, length, total, first, n in self.parts]
        self._lo = t - t % self._step
        self._hi = self._lo + self._step
        return held

    def phases(self, t: float) -> dict[str, int]:
        """Profile name -> number of the slot holding event time ``t`` (daily 15: 15:00-16:00 UTC)."""
        return {name: int((t % period) // length) for name, (period, length, *_) in zip(self.names, self.parts,
                                                                                          strict=True)}

    @staticmethod
    def expected(state: array[float], slots: list[tuple[int, int, int]]) -> float:
        out = 0.0
        for i, total, n in slots:
            out += state[i + VALUE] - state[total] / n
        return out

    @staticmethod
    def spread(state: array[float], slots: list[tuple[int, int, int]]) -> float:
        """The largest mean absolute error of the expectation learnt at the current phases (0: none yet)."""
        largest = 0.0
        for i, _, _ in slots:
            if state[i + SPREAD] > largest:
                largest = state[i + SPREAD]
        return largest

    def update(self, state: array[float], slots: list[tuple[int, int, int]], residual: float, explained: float,
               t: float, spread: bool = True) -> None:
        """Move each slot towards ``residual`` (value minus centre) less what the profiles explain now,
        and (``spread``) its spread towards the size of that error."""
        error = residual - explained
        size = abs(error)
        for i, total, _ in slots:
            elapsed = t - state[i + LAST]
            weight = state[i + WEIGHT]
            if weight and elapsed > 0:
                weight *= math.exp(elapsed * self.decay)
            weight = (weight if weight > PRIOR_WEIGHT else PRIOR_WEIGHT) + 1.0
            step = error / weight
            if spread:
                state[i + SPREAD] += (size - state[i + SPREAD]) / (weight - PRIOR_WEIGHT)
            state[i + VALUE] += step
            state[total] += step
            state[i + WEIGHT] = weight
            if t > state[i + LAST]:
                state[i + LAST] = t
