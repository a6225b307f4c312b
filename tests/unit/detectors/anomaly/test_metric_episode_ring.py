"""``metric``: the return after an episode is its end, and the ``median_mad`` ring in float32 offsets."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from detectors.anomaly import AnomalyEngine, parse_checks
from detectors.anomaly.metric import MetricCheck

T0 = 1767571200.0  # a Monday, 00:00 UTC
DAY = 86400.0

MAD = """
id: lat
type: metric
by: [host]
field: ms
model: median_mad
learning: 0s
learn_for: 1h
seasonality: []
"""


def engine(text: str) -> AnomalyEngine:
    specs, errors = parse_checks(text)
    assert errors == []
    return AnomalyEngine(specs)


def alerts(found: list[Any]) -> list[dict[str, Any]]:
    return [m.details for m in found if m.details and m.details.get("state") != "resolved"]


def run(eng: AnomalyEngine, values: list[float], start: float = T0, step: float = 60.0) -> list[Any]:
    found: list[Any] = []
    for i, v in enumerate(values):
        found += eng.process({"host": "a", "ms": v}, start + i * step, None)
    return found


def shifted(rng: random.Random, minutes: int, offset: float) -> list[float]:
    return [100 + offset + rng.gauss(0, 5) for _ in range(minutes)]


def test_the_return_from_a_temporary_shift_is_its_end_not_a_second_alert() -> None:
    """A 90-minute shift of 6 sd: the 64-value median follows it, the episode resolves while it
    lasts, and the drop back to the old level looked like a shift of its own (a second page)."""
    rng = random.Random(5)
    eng = engine(MAD)
    run(eng, shifted(rng, 2 * 1440, 0.0))
    found = run(eng, shifted(rng, 90, 30.0) + shifted(rng, 240, 0.0), start=T0 + 2 * DAY)
    (alert,) = alerts(found)
    assert alert["direction"] == "high"
    resolved = [m.details for m in found if m.details and m.details.get("state") == "resolved"]
    assert len(resolved) == 1  # the episode resolves once, and its quiet return resolves nothing


def test_a_real_shift_against_the_episode_still_alerts() -> None:
    """Not a return: the value goes past the old level, and the model had not moved with the episode."""
    rng = random.Random(6)
    eng = engine(MAD)
    run(eng, shifted(rng, 2 * 1440, 0.0))
    found = run(eng, shifted(rng, 90, 30.0) + shifted(rng, 30, -30.0), start=T0 + 2 * DAY)
    assert [a["direction"] for a in alerts(found)] == ["high", "low"]


def test_ring_in_float32_offsets_keeps_a_huge_level_precise() -> None:
    """A level of 1e9 moving by a few units: float32 of the raw values would round to 64."""
    rng = random.Random(7)
    eng = engine(MAD)
    values = [1e9 + rng.gauss(0, 2) for _ in range(600)]
    assert alerts(run(eng, values)) == []
    (alert,) = alerts(eng.process({"host": "a", "ms": 1e9 + 30}, T0 + 600 * 60, None))
    assert 10 < alert["score"] < 20  # 30 over the median, sd 2
    assert abs(alert["expected"]["center"] - 1e9) < 1


def test_ring_snapshot_round_trips_as_plain_numbers() -> None:
    rng = random.Random(8)
    eng = engine(MAD + "window_values: 63\n")  # an odd ring: the last slot holds one value
    run(eng, [rng.gauss(100, 5) for _ in range(500)])
    snap = json.loads(json.dumps(eng.snapshot(), allow_nan=False))
    ((_, values),) = snap["body"]["checks"]["lat"]["state"]["keys"]
    assert all(math.isfinite(v) for v in values)
    fresh = engine(MAD + "window_values: 63\n")
    assert fresh.restore(snap) == []
    later = [rng.gauss(100, 5) for _ in range(50)] + [160.0]
    a = alerts(run(eng, later, start=T0 + 500 * 60))
    b = alerts(run(fresh, later, start=T0 + 500 * 60))
    assert a == b and len(a) == 1


@pytest.mark.parametrize("seasonality", ["[]", "[hourly, daily]"])
def test_median_mad_key_state_is_under_2_kb(seasonality: str) -> None:
    eng = engine(MAD + f"seasonality: {seasonality}\n")
    run(eng, [100.0 + i % 7 for i in range(200)])
    check = eng.checks["lat"]
    assert isinstance(check, MetricCheck)
    (state,) = [v for _, v in check.keys.items()]
    assert state.itemsize * len(state) < 2048 - 400  # its items; the array object and the key map measure ~330 more
