"""Residual scores to tail probabilities, per key: a peaks-over-threshold tail learnt in event time.

Why: ``|z| >= 4`` means one thing on Gaussian noise (6e-5 per value) and
another on heavy-tailed or lumpy series (often 1e-2), so a fixed z threshold
floods on the series that need it least. Each key instead learns how often its
``|z|`` exceeds ``U = 2`` and the first two moments of the excess beyond it,
all forgotten with a half-life in event time. Above ``U`` the tail is a
generalised Pareto distribution (the peaks-over-threshold model) whose shape
``xi`` and scale ``s`` come from those moments (``xi = (1 - m^2/v) / 2``, kept in
``[0, MAX_SHAPE]``: never lighter than exponential, whose moments hold):

    P(|Z| > U + y) = f * (1 + xi * y / s) ** (-1 / xi)      (xi = 0: f * exp(-y / s))

A Gaussian prior worth ``PRIOR_WEIGHT`` scores keeps a young key sane; since
the tail is never lighter than exponential, on Gaussian noise it errs towards
fewer alerts (1e-4 is reached at |z| = 4.3). The prior is worth 100 scores, not
more: it is never forgotten, so it must be small against what a key has seen
by the time it may alert (``learn_for``, one day: 288 five-minute scores) and
against its steady state (about 2,900 decayed scores with the 7-day
``tail_half_life``). At 400 it still outweighed a 5-minute key's own tail on
its first alerting day and kept 12 % Gaussian weight for good, which pulled the
fitted shape of a heavy-tailed key towards exponential: Student-t noise (3
degrees of freedom) then crossed 1e-4 several times as often as it should. A score beyond the key's alert
point enters as if at that point (see ``observe``), so one huge outlier
cannot hide the next for weeks; ``metric`` shows it only the first score of an
alert episode, since each later one, entered at the alert point it has just
raised, would ratchet the limit (one 50-minute shift of 40 sd took a key's limit
from 6 to 55 and hid its next anomalies for weeks). The alert
rule and the CUSUM then run on the normal-equivalent score
``z' = Phi^-1(1 - p / 2)`` (signed), so both mean the same on every series.

The ``SLOTS`` slots live in the caller's per-key ``array('d')`` from ``at``:
decayed count of scores, of scores over ``U``, sum of excesses, sum of squares.
"""

from __future__ import annotations

import math
from array import array
from statistics import NormalDist

U = 2.0
PRIOR_WEIGHT = 100.0
GAUSS_OVER = 0.0455  # P(|Z| > 2) for a standard normal
GAUSS_EXCESS = 0.373  # E[|Z| - 2 | |Z| > 2]
GAUSS_EXCESS2 = 0.254  # E[(|Z| - 2)^2 | |Z| > 2]
MAX_EXCESS = 1000.0
MAX_SHAPE = 0.45
MIN_P = 1e-300
SLOTS = 4
ALL, OVER, EXCESS, EXCESS2 = range(SLOTS)
_NORMAL = NormalDist()


def decay(state: array[float], at: int, factor: float) -> None:
    """Forget: multiply the key's tail counts by ``factor`` (``0.5 ** (elapsed / half_life)``)."""
    state[at + ALL] *= factor
    state[at + OVER] *= factor
    state[at + EXCESS] *= factor
    state[at + EXCESS2] *= factor


def observe(state: array[float], at: int, z: float, p: float) -> None:
    """Learn from score ``z``; beyond the alert point (``p``) it counts as if at that point.

    Why: what alerts is not what the key normally does; left in, a few spikes
    would fatten the tail until like spikes no longer alert. Clipped at the
    alert point, true heavy tails still widen the band, one step at a time.
    """
    state[at + ALL] += 1.0
    over = abs(z) - U
    if over > 0:
        state[at + OVER] += 1.0
        over = min(over, limit(state, at, p) - U, MAX_EXCESS)
        state[at + EXCESS] += over
        state[at + EXCESS2] += over * over


def tail(state: array[float], at: int) -> tuple[float, float, float]:
    """(share of scores over ``U``, GPD shape, GPD scale) of the excesses, the prior blended in."""
    prior_over = PRIOR_WEIGHT * GAUSS_OVER
    over = state[at + OVER] + prior_over
    share = over / (state[at + ALL] + PRIOR_WEIGHT)
    mean = (state[at + EXCESS] + prior_over * GAUSS_EXCESS) / over
    second = (state[at + EXCESS2] + prior_over * GAUSS_EXCESS2) / over
    ratio = mean * mean / max(second - mean * mean, 1e-12)
    shape = min(MAX_SHAPE, max(0.0, 0.5 * (1 - ratio)))
    scale = 0.5 * mean * (1 + ratio) if shape > 0 else mean
    return share, shape, scale


def probability(state: array[float], at: int, z: float) -> float:
    """Two-sided tail probability of a score ``z`` for this key."""
    size = abs(z)
    if size <= U:
        return math.erfc(size / math.sqrt(2))
    share, shape, scale = tail(state, at)
    y = size - U
    survival = math.exp(-y / scale) if shape == 0 else math.pow(1 + shape * y / scale, -1 / shape)
    return max(MIN_P, min(1.0, share * survival))


def normal_score(z: float, p: float) -> float:
    """The signed standard-normal score with the same two-sided tail probability ``p``."""
    if abs(z) <= U:
        return z
    calibrated = -_NORMAL.inv_cdf(max(p, MIN_P) / 2)
    return math.copysign(max(calibrated, U), z)


def limit(state: array[float], at: int, p: float) -> float:
    """The ``|z|`` at which this key's tail probability falls to ``p`` (the band's half-width)."""
    share, shape, scale = tail(state, at)
    if share <= p:
        return U
    if shape == 0:
        return U + scale * math.log(share / p)
    return U + scale / shape * (math.pow(share / p, shape) - 1)


def threshold(p: float) -> float:
    """The normal-equivalent score of a two-sided probability ``p``."""
    return -_NORMAL.inv_cdf(p / 2)
