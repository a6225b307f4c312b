"""Deterministic disk-fault injection for the spool and store tests.

:class:`DiskFaults` patches the spool's write points (and ``os.replace`` for the
cursor) so a test turns ENOSPC/EIO on and off at one named point; nothing
else on the machine sees a fault.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from typing import Any

import pytest

from service import metrics


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Wait until ``cond()`` holds (polling the event loop), or fail with ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class DiskFaults:
    """Fail chosen write points with ``OSError(err)`` while ``active`` names them.

    Points: ``write`` (segment data), ``fsync``, ``cursor`` (the cursor's
    ``os.replace``), ``open`` (a new segment or cursor file), ``dead_letter``.
    """

    POINTS = ("write", "fsync", "cursor", "open", "dead_letter")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, err: int = errno.ENOSPC) -> None:
        from service.alerting import spool as spool_mod
        from service.alerting import worker as worker_mod

        self.active: set[str] = set()
        self.err = err
        self.hits: dict[str, int] = {}
        real_replace = os.replace

        def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
            if str(dst).endswith("cursor"):
                self._check("cursor")
            real_replace(src, dst, *a, **kw)

        monkeypatch.setattr(os, "replace", replace)
        for point, attr, mod in (("write", "_write", spool_mod), ("fsync", "_fsync", spool_mod),
                                 ("open", "_open", spool_mod), ("dead_letter", "_append_lines", worker_mod)):
            if hasattr(mod, attr):
                real = getattr(mod, attr)
                monkeypatch.setattr(mod, attr, self._wrap(point, real))

    def _wrap(self, point: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **kw: Any) -> Any:
            self._check(point)
            return real(*a, **kw)

        return wrapped

    def _check(self, point: str) -> None:
        if point in self.active:
            self.hits[point] = self.hits.get(point, 0) + 1
            raise OSError(self.err, os.strerror(self.err))


# --- spool corruption fuzzing --------------------------------------------------------------
def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end, payload) of every frame of an intact segment written by the current format."""
    from service.alerting.spool import HEADER

    out, i = [], 0
    while i < len(data):
        _, length, _, _ = HEADER.unpack_from(data, i)
        end = i + HEADER.size + length
        out.append((i, end, data[i + HEADER.size:end]))
        i = end
    return out


def corrupt_segments(directory: Any, rng: Any, mutations: int) -> list[bytes]:
    """Damage the segments under ``directory`` in place (byte flips, random overwrites, bogus
    lengths, zeroed pages, truncations, garbage tails) and return, in order, the payloads of
    the frames left byte-for-byte intact: exactly what a reader must deliver."""
    from service.alerting.spool import HEADER

    paths = sorted(directory.glob("*.seg"))
    original = {p: p.read_bytes() for p in paths}
    data = {p: bytearray(b) for p, b in original.items()}
    for _ in range(mutations):
        p = rng.choice(paths)
        buf = data[p]
        if not buf:
            continue
        kind = rng.randrange(6)
        at = rng.randrange(len(buf))
        if kind == 0:
            buf[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            n = rng.randrange(1, 64)
            buf[at:at + n] = bytes(rng.randrange(256) for _ in range(len(buf[at:at + n])))
        elif kind == 2:
            starts = [s for s, _, _ in _frames(original[p])]
            s = rng.choice(starts)
            if s + 6 <= len(buf):
                buf[s + 2:s + 6] = rng.choice([10**6, 2**32 - 1, rng.randrange(1 << 16), 0]).to_bytes(4, "little")
        elif kind == 3:
            n = rng.randrange(1, 512)
            buf[at:at + n] = bytes(len(buf[at:at + n]))
        elif kind == 4:
            del buf[at:]
        else:
            buf += bytes(rng.randrange(256) for _ in range(rng.randrange(1, HEADER.size * 3)))
    intact: list[bytes] = []
    for p in paths:
        buf = bytes(data[p])
        p.write_bytes(buf)
        intact += [payload for s, e, payload in _frames(original[p]) if buf[s:e] == original[p][s:e]]
    return intact


def spool_bytes(directory: Any) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))
