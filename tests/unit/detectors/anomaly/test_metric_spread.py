"""``metric`` profiles learn each phase's spread: seasonal noise and a lagging model do not page."""

from __future__ import annotations

import json
import math
import random
from array import array
from typing import Any

import pytest

from detectors.anomaly import AnomalyEngine, parse_checks
from detectors.anomaly.seasons import PRIOR_WEIGHT, SLOT, SPREAD, Profiles

T0 = 1767571200.0  # a Monday, 00:00 UTC
HOUR = 3600.0
DAY = 86400.0
STEP = 300.0

CHECK = """
id: gauge
type: metric
field: v
learning: 0s
"""


def engine(text: str) -> AnomalyEngine:
    specs, errors = parse_checks(text)
    assert errors == []
    return AnomalyEngine(specs)


def alerts(found: list[Any]) -> list[dict[str, Any]]:
    return [m.details for m in found if m.details and m.details.get("state") != "resolved"]


def flat_by_night(t: float, rng: random.Random) -> float:
    """Exactly 200.0 except 14:00-16:00 UTC, when load makes it noisy (sd 10)."""
    noisy = 14 * HOUR <= t % DAY < 16 * HOUR
    return round(200 + (rng.gauss(0, 10) if noisy else 0.0), 1)


@pytest.mark.parametrize("model", ["ewma", "median_mad"])
def test_noise_that_comes_back_every_afternoon_is_expected(model: str) -> None:
    rng = random.Random(3)
    eng = engine(CHECK + f"model: {model}\n")
    found: list[Any] = []
    days = 6
    for i in range(int(days * DAY / STEP)):
        t = T0 + i * STEP
        found += eng.process({"v": flat_by_night(t, rng)}, t, None)
    # the first learnt day may still alert; from the third afternoon on the noise is expected
    late = [a for a in alerts(found) if a["event_time"] >= "2026-01-07"]
    assert late == []
    # a shift of 6 sd in the flat part of the day still alerts at once
    t = T0 + days * DAY + 3 * HOUR
    (alert,) = alerts(eng.process({"v": 260.0}, t, None))
    assert alert["direction"] == "high"
    assert alert["expected"]["high"] < 210  # the flat hours keep a narrow band


def test_spread_widens_only_the_phases_that_erred() -> None:
    profiles = Profiles(["daily"], 7 * DAY, 0)
    state = array("d", bytes(8 * profiles.size))
    afternoon = T0 + 15 * HOUR
    night = T0 + 3 * HOUR
    profiles.update(state, profiles.slots(afternoon), 8.0, 0.0, afternoon)
    # a young slot's spread is the plain mean of its errors (no prior towards 0)
    assert profiles.spread(state, profiles.slots(afternoon)) == pytest.approx(8.0)
    profiles.update(state, profiles.slots(afternoon + DAY), -4.0, 0.0, afternoon + DAY)
    assert 4.0 < profiles.spread(state, profiles.slots(afternoon)) < 8.0  # a mean of the two sizes
    assert profiles.spread(state, profiles.slots(night)) == 0.0
    # the value itself is still shrunk towards 0 by the prior, the spread is not
    first = profiles.slots(afternoon)[0][0]
    assert abs(state[first]) < 2.0
    assert SPREAD < SLOT and PRIOR_WEIGHT > 0


@pytest.mark.parametrize(("model", "shift"), [("ewma", 8), ("median_mad", 15)])
def test_a_daily_rhythm_being_learnt_does_not_flood(model: str, shift: int) -> None:
    """While the profile learns the rhythm the expectation lags it (``median_mad``'s five-hour
    median most): the phases where it lags learn that spread instead of paging on every rise and
    fall. The band is as wide as the model's error, so a lagging model sees only larger shifts."""
    rng = random.Random(11)
    eng = engine(CHECK + f"model: {model}\n")
    found: list[Any] = []
    days = 7
    for i in range(int(days * DAY / STEP)):
        t = T0 + i * STEP
        value = 300 + 90 * math.sin(2 * math.pi * (t % DAY) / DAY) + rng.gauss(0, 15)
        found += eng.process({"v": value}, t, None)
    assert len(alerts(found)) <= 2  # a week of rhythm, not one alert per rise and fall
    t = T0 + days * DAY + 6 * HOUR  # the rhythm's peak: 390 expected
    (alert,) = alerts(eng.process({"v": 390 + shift * 15}, t, None))
    assert alert["direction"] == "high"


def test_a_snapshot_with_the_previous_key_layout_relearns() -> None:
    text = "- {id: met, type: metric, by: [host], field: ms, learning: 0s, learn_for: 0s, min_samples: 2}\n"
    eng = engine(text)
    for i in range(40):
        eng.process({"host": "a", "ms": 100 + i % 5}, T0 + i * 10, None)
    snap = json.loads(json.dumps(eng.snapshot()))
    assert snap["body"]["checks"]["met"]["state"]["layout"] == 4
    snap["body"]["checks"]["met"]["state"]["layout"] = 3  # no episode base, the ring in doubles
    fresh = engine(text)
    assert fresh.restore(snap) == ["met"]
    assert fresh.key_counts()["met"] == 0


@pytest.mark.parametrize("names", [["hourly"], ["daily"], ["hourly", "daily"], ["daily", "weekly"],
                                   ["hourly", "daily", "weekly"]])
def test_slots_reused_within_a_stretch_are_the_slots_of_each_time(names: list[str]) -> None:
    """``Profiles.slots`` keeps the latest stretch's slots: whatever the order of times (back and
    forth, on and next to slot boundaries), they are those computed afresh for each time."""
    profiles = Profiles(names, 7 * 86400.0, 10)
    fresh = Profiles(names, 7 * 86400.0, 10)
    rng = random.Random(17)
    t0 = 1_767_571_200.0
    times = [t0 + rng.uniform(-1e6, 1e6) for _ in range(2000)]
    times += [t0 + k * 300.0 + d for k in range(-300, 300) for d in (-1e-6, 0.0, 1e-6)]
    rng.shuffle(times)
    times += sorted(times[:500])
    for t in times:
        fresh._lo = fresh._hi = math.nan  # no reuse: the slots of ``t`` itself
        assert profiles.slots(t) == fresh.slots(t), t
