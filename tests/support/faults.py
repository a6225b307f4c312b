"""Fault injection for the spool, store and router tests (and ``bench/fault_spool.py``).

:class:`DiskFaults` patches the spool's write points (and ``os.replace`` for the
cursor) so a test turns ENOSPC/EIO on and off at one named point; nothing
else on the machine sees a fault. :func:`fuzz_once` damages written segments and
:func:`kill_writers` SIGKILLs writer processes; both check that every intact or
acknowledged record is delivered (the unit suite runs a few seeds, the bench many).
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service import metrics
from service.alerting import spool as spool_mod
from service.alerting.spool import Spool

FAST_RETRY = {"initial_backoff_s": 0.01, "max_backoff_s": 0.05, "breaker_failures": 100, "breaker_reset_s": 0.05}
"""A sink's retry settings that retry at once and never open the breaker: a fault test waits milliseconds."""


def sample(name: str, **labels: str) -> float:
    """The current value of a metric sample in the service's registry (0 when it was never set)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def sink_up(name: str) -> float:
    return sample("pipesentry_sink_up", sink=name)


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


def drain(s: Spool, batch: int = 7) -> list[bytes]:
    """Read and acknowledge everything the spool holds, ``batch`` records at a time."""
    out: list[bytes] = []
    while True:
        recs = s.read(batch)
        if not recs:
            s.settle()
            return out
        out += [r.payload for r in recs]
        s.ack(recs[-1].end, len(recs), sum(r.size for r in recs))


def fuzz_once(root: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    directory = root / f"s{seed}"
    name = f"fuzz{seed % 7}"
    s = Spool(directory, name, segment_bytes=rng.choice([600, 2048, 1 << 20]))
    s.open()
    written = [f'{{"seed": {seed}, "n": {i}, "pad": "{"x" * rng.randrange(0, 200)}"}}'.encode()
               for i in range(rng.randrange(1, 80))]
    i = 0
    while i < len(written):
        k = rng.randrange(1, 12)
        s.append(written[i:i + k])
        i += k
    s.close()
    intact = corrupt_segments(directory, rng, rng.randrange(0, 8))
    total = spool_bytes(directory)
    monkeypatch.setattr(spool_mod, "READ_CHUNK", rng.choice([64, 301, 4096, 4 << 20]))
    ranges, skipped = sample("pipesentry_spool_corrupt_records_total", sink=name), \
        sample("pipesentry_spool_corrupt_bytes_total", sink=name)
    again = Spool(directory, name, segment_bytes=1 << 20)
    again.open()
    got = drain(again, rng.randrange(1, 20))
    assert got == intact, f"seed {seed}"
    skipped = sample("pipesentry_spool_corrupt_bytes_total", sink=name) - skipped
    delivered = sum(len(p) + spool_mod.HEADER.size for p in got)
    assert delivered + skipped == total, f"seed {seed}: every byte is delivered or counted as skipped"
    if skipped:
        assert sample("pipesentry_spool_corrupt_records_total", sink=name) > ranges, f"seed {seed}"
    assert again.pending == 0
    again.close()


CHILD = r"""
import json, random, sys
from pathlib import Path
from service.alerting.spool import Spool, fsync_fd

directory, seed, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
s = Spool(directory, "kill", segment_bytes=rng.choice([1024, 4096]), fsync=rng.choice(["batch", "always", "never"]))
s.open()
while True:
    k = rng.randrange(1, 10)
    fd = s.append([json.dumps({"n": n + j, "pad": "y" * rng.randrange(300)}).encode() for j in range(k)])
    if fd is not None:
        fsync_fd(fd)
    n += k
    print("A", n - 1, flush=True)
    if rng.random() < 0.5:
        recs = s.read(rng.randrange(1, 8))
        if recs:
            print("D", *[json.loads(r.payload)["n"] for r in recs], flush=True)
            s.ack(recs[-1].end, len(recs), sum(r.size for r in recs))
"""


def kill_writers(directory: Path, seed: int, rounds: int) -> None:
    """Run writer processes on one spool, SIGKILL each at a random point, then drain:
    every record whose append returned is delivered (by a writer or by the final drain)."""
    import orjson

    rng = random.Random(seed)
    appended = -1
    delivered: set[int] = set()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for r in range(rounds):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory), str(seed * 1000 + r),
                                  str(appended + 1)], stdout=subprocess.PIPE, env=env)
        assert child.stdout is not None
        wanted = rng.randrange(1, 120)
        lines: list[bytes] = []
        for line in child.stdout:
            lines.append(line)
            if len(lines) >= wanted:
                break
        os.kill(child.pid, signal.SIGKILL)  # the writer is still running: it dies at some point of its loop
        lines += child.stdout.read().splitlines()
        child.wait()
        for line in lines:
            parts = line.split()
            if parts and parts[0] == b"A":
                appended = max(appended, int(parts[1]))
            elif parts and parts[0] == b"D":
                delivered.update(int(x) for x in parts[1:])
    s = Spool(directory, "kill")
    s.open()
    remaining = {orjson.loads(p)["n"] for p in drain(s, 50)}
    missing = set(range(appended + 1)) - delivered - remaining
    assert not missing, f"seed {seed}: appended records lost: {sorted(missing)[:20]}"
