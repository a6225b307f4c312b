"""HyperLogLog, Bloom filter and the shared state helpers (detectors.state)."""

from __future__ import annotations

import json

import pytest

from detectors.sketches import BloomFilter, HyperLogLog, hash64, hash128
from detectors.state import LruMap, StateError, unwrap, wrap


def test_hashes_are_stable_across_processes() -> None:
    # fixed values: a snapshot written by one process must be read by another
    assert hash64("pipesentry") == hash64(b"pipesentry")
    assert hash64("a") != hash64("b")
    h1, h2 = hash128("x")
    assert h1 != h2 and 0 <= h1 < 2**64 and 0 <= h2 < 2**64


def test_hash64_known_value() -> None:
    from hashlib import blake2b
    expected = int.from_bytes(blake2b(b"pipesentry", digest_size=8).digest(), "little")
    assert hash64("pipesentry") == expected


def test_hll_is_exact_while_small() -> None:
    hll = HyperLogLog(p=10, exact_limit=64)
    for i in range(50):
        hll.add(f"v{i % 40}")
    assert hll.count() == 40.0
    assert hll.nbytes() == 8 * 40


@pytest.mark.parametrize("n", [100, 1000, 20_000])
def test_hll_error_within_bounds(n: int) -> None:
    hll = HyperLogLog(p=12, exact_limit=16)
    for i in range(n):
        hll.add(f"repo-{i}")
        hll.add(f"repo-{i}")  # duplicates do not count
    assert abs(hll.count() - n) / n < 0.05  # 1.6 % standard error, 3 sigma
    assert hll.nbytes() == 4096


def test_hll_state_round_trip() -> None:
    for n in (10, 5000):
        hll = HyperLogLog(p=11, exact_limit=32)
        for i in range(n):
            hll.add(str(i))
        again = HyperLogLog.from_state(json.loads(json.dumps(hll.to_state())))
        assert again.count() == pytest.approx(hll.count())
        again.add("new-one")
        assert again.count() >= hll.count()


def test_hll_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        HyperLogLog(p=3)
    hll = HyperLogLog(p=10, exact_limit=0)
    hll.add("x")
    state = hll.to_state()
    state["p"] = 11
    with pytest.raises(ValueError):
        HyperLogLog.from_state(state)


def test_bloom_has_no_false_negatives_and_bounded_false_positives() -> None:
    bloom = BloomFilter(capacity=5000, fp_rate=0.01)
    assert bloom.k == 7 and bloom.m == 47926
    clashes = sum(bloom.add(f"in-{i}") for i in range(5000))  # a rare false positive on insert
    assert clashes < 25
    assert bloom.count == 5000 - clashes
    assert all(f"in-{i}" in bloom for i in range(5000))
    false_hits = sum(f"out-{i}" in bloom for i in range(20_000))
    assert false_hits / 20_000 < 0.02
    assert bloom.add("in-7") is True and bloom.count == 5000 - clashes
    small = BloomFilter(capacity=100, fp_rate=1e-6)
    for i in range(99):
        small.add(str(i))
    assert not small.full
    small.add("last")
    assert small.full


def test_bloom_state_round_trip() -> None:
    bloom = BloomFilter(capacity=100, fp_rate=0.001)
    for i in range(50):
        bloom.add(str(i))
    again = BloomFilter.from_state(json.loads(json.dumps(bloom.to_state())))
    assert all(str(i) in again for i in range(50)) and again.count == 50
    state = bloom.to_state()
    state["capacity"] = 1000
    with pytest.raises(ValueError):
        BloomFilter.from_state(state)
    with pytest.raises(ValueError):
        BloomFilter(0)


def test_lru_map_evicts_least_recent_and_counts() -> None:
    evicted: list[tuple[str, int]] = []
    lru: LruMap[str, int] = LruMap(2, on_evict=lambda k, v: evicted.append((k, v)))
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.touch("a") == 1  # a is now most recent
    lru.put("c", 3)
    assert evicted == [("b", 2)] and lru.evictions == 1
    assert list(lru.keys()) == ["a", "c"] and lru.oldest() == ("a", 1)
    assert lru.get("a") == 1 and list(lru.keys()) == ["a", "c"]  # get does not reorder
    assert lru.pop("a") == 1 and len(lru) == 1 and "c" in lru
    with pytest.raises(ValueError):
        LruMap(0)


def test_state_envelope() -> None:
    snap = wrap("anomaly", 1, {"x": 1})
    assert snap == {"format": "pipesentry-state", "kind": "anomaly", "version": 1, "body": {"x": 1}}
    assert unwrap(snap, "anomaly", (1,)) == {"x": 1}
    for bad, kind, versions in [(snap, "correlation", (1,)), (snap, "anomaly", (2,)), ([], "anomaly", (1,)),
                                ({**snap, "format": "other"}, "anomaly", (1,)),
                                ({**snap, "body": 3}, "anomaly", (1,))]:
        with pytest.raises(StateError):
            unwrap(bad, kind, versions)
