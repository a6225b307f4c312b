"""Stage 2's saved per-partition state (``service/keyed/saved.py``): round trip, first-slice
documents, and damaged documents refused with a reason (the partition's keyed state starts empty)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.keyed import saved
from service.keyed.records import AnomalyRecord, Origin, RecordError, StateRecord

T0 = 1_764_113_000.0


def state() -> saved.SavedState:
    return saved.SavedState(
        marks={("auth", 0): T0, ("auth", 1): T0 + 5}, counts={"auth": 2}, idle={("auth", 3)},
        chain={0: T0 - 1, 1: T0 - 2}, chain_count=2, applied={("c1", "auth", 0): (7, -1), ("anomaly|x", "auth", 1): (3, 2)},
        pending=[StateRecord("c1", ("r",), T0 + 9, Origin("auth", 0, 8), {"host": "h"}),
                 AnomalyRecord("x", T0 + 10, Origin("auth", 1, 4, "0"), {"user": "u"}, None, True)],
        released=(T0 - 1, None, T0 - 3), parents={"kind": "correlation"}, arrived=[12, None],
        levels={(1, 0): T0 - 2, (1, 1): T0 - 3}, lanes={2: {"kind": "correlation"}})


def test_a_saved_state_round_trips_through_json():
    document = orjson.loads(orjson.dumps(saved.dump(state(), "internal")))
    back = saved.load(document)
    assert back == state()
    assert document["chain"] == [["internal", 0, T0 - 1], ["internal", 1, T0 - 2]]


def test_a_first_slice_document_loads_with_empty_newer_fields():
    first = {"marks": [["auth", 0, T0]], "counts": [["auth", 1]], "idle": [], "applied": [["c1", "auth", 0, 7]]}
    back = saved.load(first)
    assert back.applied == {("c1", "auth", 0): (7, -1)}  # no event index: the whole message counts as seen
    assert back.pending == [] and back.released == (None, None) and back.chain == {} and back.parents is None
    assert back.levels == {} and back.lanes == {}


def test_a_document_from_before_the_lanes_per_level_loads_with_two_lanes():
    document = orjson.loads(orjson.dumps(saved.dump(state(), "internal")))
    del document["levels"], document["lanes"]
    document["released"] = document["released"][:2]
    back = saved.load(document)
    assert back.released == (T0 - 1, None) and back.levels == {} and back.lanes == {}
    assert back.parents == {"kind": "correlation"}  # the one chained engine: the first chained lane's


def test_waiting_records_saved_without_their_arrival_offsets_hold_no_commit_back():
    document = orjson.loads(orjson.dumps(saved.dump(state(), "internal")))
    del document["arrived"]  # saved by a version that did not keep them
    assert saved.load(document).arrived == [None, None]


@pytest.mark.parametrize("change, reason", [
    ({"chain_count": 0}, "chain partition count"),
    ({"chain_count": True}, "chain partition count"),
    ({"released": [T0]}, "released watermarks"),
    ({"released": ["soon", None]}, "released watermark"),
    ({"applied": [["c1", "auth", 0, 7, 1, 9]]}, "applied entry"),
    ({"applied": [["c1", "auth", -1, 7]]}, "applied entry"),
    ({"applied": "x"}, "applied is not a list"),
    ({"pending": [{"v": 1, "k": "w", "p": "x", "s": [], "n": []}]}, "watermark among"),
    ({"pending": [{"v": 1, "k": "c"}]}, "event time"),
    ({"chain": [["internal", -1, T0]]}, "non-negative"),
    ({"arrived": [12]}, "arrival offsets"),
    ({"arrived": [12, -1]}, "arrival offsets"),
    ({"arrived": "12"}, "arrival offsets"),
    ({"released": [None] * 66}, "released watermarks"),
    ({"levels": [[1, 0]]}, "chain level marks"),
    ({"levels": [[0, 0, T0]]}, "chain level"),
    ({"levels": "x"}, "chain level marks"),
    ({"lanes": [[1, {}]]}, "chained lane"),
    ({"lanes": [["2", {}]]}, "chained lane"),
    ({"lanes": {}}, "lanes is not a list"),
])
def test_a_damaged_document_is_refused_with_its_reason(change: dict[str, Any], reason: str):
    document = {**saved.dump(state(), "internal"), **change}
    with pytest.raises((ValueError, TypeError, RecordError), match=reason):
        saved.load(orjson.loads(orjson.dumps(document)))
