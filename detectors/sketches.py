"""Probabilistic sketches with fixed memory: HyperLogLog and a Bloom filter.

Why: distinct counts and first-seen sets grow with the data; these bound the
memory per key (HyperLogLog) and per check (Bloom filter) at a known, documented
error. Hashes are keyed BLAKE2b, stable across processes (Python's ``hash`` is
salted per process and would corrupt restored snapshots).
"""

from __future__ import annotations

import base64
import math
from hashlib import blake2b
from typing import Any

_MASK64 = (1 << 64) - 1


def _encode(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value


def hash64(value: str | bytes) -> int:
    """A stable 64-bit hash of ``value``."""
    return int.from_bytes(blake2b(_encode(value), digest_size=8).digest(), "little")


def hash128(value: str | bytes) -> tuple[int, int]:
    """Two independent stable 64-bit hashes of ``value`` (for double hashing)."""
    digest = blake2b(_encode(value), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


class HyperLogLog:
    """Distinct counter: exact up to ``exact_limit`` values, then HyperLogLog.

    With precision ``p`` it holds ``2**p`` one-byte registers (p=12: 4 KiB,
    standard error 1.04/sqrt(4096) = 1.6 %). Small sets stay an exact set of
    hashes, so most keys never pay for the registers. The estimate is kept
    incrementally, so :meth:`count` is O(1).
    """

    __slots__ = ("_exact", "_regs", "_sum", "_zeros", "exact_limit", "p")

    def __init__(self, p: int = 12, exact_limit: int = 64) -> None:
        if not 4 <= p <= 16:
            raise ValueError("HyperLogLog precision must be between 4 and 16")
        self.p = p
        self.exact_limit = exact_limit
        self._exact: set[int] | None = set()
        self._regs: bytearray | None = None
        self._sum = 0.0
        self._zeros = 0

    def add(self, value: str | bytes) -> None:
        self.add_hash(hash64(value))

    def add_hash(self, h: int) -> None:
        exact = self._exact
        if exact is not None:
            exact.add(h)
            if len(exact) > self.exact_limit:
                self._to_registers()
            return
        self._set_register(h)

    def _to_registers(self) -> None:
        m = 1 << self.p
        self._regs = bytearray(m)
        self._sum = float(m)
        self._zeros = m
        exact, self._exact = self._exact or set(), None
        for h in exact:
            self._set_register(h)

    def _set_register(self, h: int) -> None:
        regs = self._regs
        assert regs is not None
        p = self.p
        idx = h >> (64 - p)
        rest = h & ((1 << (64 - p)) - 1)
        rho = (64 - p) - rest.bit_length() + 1
        old = regs[idx]
        if rho > old:
            regs[idx] = rho
            self._sum += 2.0 ** -rho - 2.0 ** -old
            if old == 0:
                self._zeros -= 1

    def count(self) -> float:
        """Estimated number of distinct values added."""
        if self._exact is not None:
            return float(len(self._exact))
        m = 1 << self.p
        alpha = 0.7213 / (1 + 1.079 / m)
        estimate = alpha * m * m / self._sum
        if estimate <= 2.5 * m and self._zeros:
            return m * math.log(m / self._zeros)  # linear counting for small cardinalities
        return estimate

    def nbytes(self) -> int:
        """Payload bytes (registers, or 8 per exact hash)."""
        return len(self._regs) if self._regs is not None else 8 * len(self._exact or ())

    def to_state(self) -> dict[str, Any]:
        if self._exact is not None:
            return {"p": self.p, "limit": self.exact_limit, "exact": sorted(self._exact)}
        assert self._regs is not None
        return {"p": self.p, "limit": self.exact_limit, "regs": base64.b64encode(bytes(self._regs)).decode()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> HyperLogLog:
        hll = cls(int(state["p"]), int(state["limit"]))
        if "regs" in state:
            regs = bytearray(base64.b64decode(state["regs"]))
            if len(regs) != 1 << hll.p:
                raise ValueError("HyperLogLog registers do not match the precision")
            hll._exact = None
            hll._regs = regs
            hll._sum = sum(2.0 ** -r for r in regs)
            hll._zeros = regs.count(0)
        else:
            hll._exact = {int(h) & _MASK64 for h in state["exact"]}
        return hll


class BloomFilter:
    """Set membership with no false negatives and a bounded false-positive rate.

    Sized for ``capacity`` items at ``fp_rate``: bits = -n ln p / ln(2)^2,
    hashes k = bits/n ln 2 (1M items at 1e-4: 2.4 MB, k = 13). Indices come from
    one 128-bit hash by double hashing (Kirsch-Mitzenmacher). ``count`` is the
    number of distinct inserts; past ``capacity`` the rate degrades, so owners
    rotate filters (see ``detectors.anomaly.new_value``).
    """

    __slots__ = ("_bits", "capacity", "count", "fp_rate", "k", "m")

    def __init__(self, capacity: int, fp_rate: float = 1e-4) -> None:
        if capacity < 1 or not 0 < fp_rate < 1:
            raise ValueError("Bloom filter needs capacity >= 1 and 0 < fp_rate < 1")
        self.capacity = capacity
        self.fp_rate = fp_rate
        self.m = max(64, math.ceil(-capacity * math.log(fp_rate) / (math.log(2) ** 2)))
        self.k = max(1, round(self.m / capacity * math.log(2)))
        self._bits = bytearray((self.m + 7) // 8)
        self.count = 0

    def _indices(self, h1: int, h2: int) -> list[int]:
        m = self.m
        h2 |= 1
        return [(h1 + i * h2) % m for i in range(self.k)]

    def add(self, value: str | bytes) -> bool:
        """Insert; True when the value was (probably) present already."""
        return self.add_hashes(*hash128(value))

    def add_hashes(self, h1: int, h2: int) -> bool:
        bits = self._bits
        present = True
        for i in self._indices(h1, h2):
            byte, mask = i >> 3, 1 << (i & 7)
            if not bits[byte] & mask:
                present = False
                bits[byte] |= mask
        if not present:
            self.count += 1
        return present

    def __contains__(self, value: str | bytes) -> bool:
        return self.contains_hashes(*hash128(value))

    def contains_hashes(self, h1: int, h2: int) -> bool:
        bits = self._bits
        return all(bits[i >> 3] & (1 << (i & 7)) for i in self._indices(h1, h2))

    @property
    def full(self) -> bool:
        return self.count >= self.capacity

    def nbytes(self) -> int:
        return len(self._bits)

    def to_state(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "fp_rate": self.fp_rate, "count": self.count,
                "bits": base64.b64encode(bytes(self._bits)).decode()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BloomFilter:
        bloom = cls(int(state["capacity"]), float(state["fp_rate"]))
        bits = bytearray(base64.b64decode(state["bits"]))
        if len(bits) != len(bloom._bits):
            raise ValueError("Bloom filter bits do not match its capacity and rate")
        bloom._bits = bits
        bloom.count = int(state["count"])
        return bloom
