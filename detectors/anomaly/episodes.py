"""Alert decisions on a stream of scores: threshold, two-sided CUSUM, one alert per episode.

Why shared: ``volume`` and ``metric`` score one number per interval (or value)
and must decide the same way. A single large ``|z|`` alerts at once; a
sustained moderate shift is caught by the CUSUM ``S+ = max(0, S+ + z - k)``
(and its mirror) reaching ``h``. After an alert the key stays quiet until
``CALM_TO_REARM`` consecutive scores with ``|z| < 2``, so one anomaly gives one
alert instead of one per interval.

The five state slots live in the caller's per-key ``array('d')`` starting at
``at``: S+, S-, active direction (+1, -1, 0), calm count.
"""

from __future__ import annotations

import math
from array import array

CALM_TO_REARM = 3
CALM_BELOW = 2.0
"""A score with ``|z|`` under this is calm."""
SLOTS = 4
CUP, CDN, ACTIVE, CALM = range(SLOTS)


def decide(state: array[float], at: int, z: float, threshold: float, cusum: float | None, slack: float,
           up_allowed: bool, down_allowed: bool, cusum_clip: float = math.inf) -> int:
    """+1 (alert high), -1 (alert low) or 0, updating the episode state.

    ``cusum_clip`` bounds one score's step into the CUSUM, so a lone large value
    (the threshold's business) cannot fill it alone with the next few ordinary ones.
    """
    step = max(-cusum_clip, min(cusum_clip, z))
    cup = max(0.0, state[at + CUP] + step - slack)
    cdn = max(0.0, state[at + CDN] - step - slack)
    h = cusum if cusum is not None else float("inf")
    if state[at + ACTIVE] != 0:
        calm = state[at + CALM] + 1 if abs(z) < CALM_BELOW else 0.0
        if calm >= CALM_TO_REARM:
            state[at + ACTIVE] = 0.0
            cup = cdn = calm = 0.0
        state[at + CALM] = calm
        state[at + CUP], state[at + CDN] = cup, cdn
        return 0
    up = up_allowed and (z >= threshold or cup >= h)
    down = down_allowed and (-z >= threshold or cdn >= h)
    if not (up or down):
        state[at + CUP], state[at + CDN] = cup, cdn
        return 0
    state[at + ACTIVE] = 1.0 if up else -1.0
    state[at + CALM] = 0.0
    state[at + CUP] = state[at + CDN] = 0.0
    return 1 if up else -1
