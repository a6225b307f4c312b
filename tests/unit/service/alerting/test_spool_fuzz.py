"""Seeded fuzzing of the spool: damaged segments, SIGKILLed writers. Every intact or acknowledged
record is delivered, every skipped byte is counted. Bounded: a fixed number of seeded examples."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from service.alerting import spool as spool_mod
from service.alerting.spool import Spool
from tests.unit.fault_helpers import corrupt_segments, sample, spool_bytes

EXAMPLES = int(os.environ.get("PIPESENTRY_FUZZ_EXAMPLES", "80"))
KILLS = int(os.environ.get("PIPESENTRY_KILL_EXAMPLES", "3"))


def drain(s: Spool, batch: int) -> list[bytes]:
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


def test_damaged_segments_deliver_every_intact_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for seed in range(EXAMPLES):
        fuzz_once(tmp_path, seed, monkeypatch)


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


@pytest.mark.parametrize("seed", range(KILLS))
def test_sigkilled_writers_lose_no_appended_record(tmp_path: Path, seed: int) -> None:
    kill_writers(tmp_path / "spool", seed, rounds=3)
