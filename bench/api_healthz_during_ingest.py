"""How long ``/healthz`` waits while one large body is ingested (issue 14: 10 MB held it 1.8 s).

Starts ``pipesentry run`` (embedded default, no tokens) in a temporary directory, posts one
NDJSON body of 99,000 events (about 8 MB of valid events, or 5 MB that all fail to decode with
``--invalid``) and polls ``/healthz`` from another connection until the ingest answers; prints the
worst ``/healthz`` round trip of each run. Run it from the checkout to measure:

    PYTHONPATH=. python bench/api_healthz_during_ingest.py [--invalid] [--port 18080] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

VALID = b'{"message": "step %06d of the build finished fine", "job": "build-42", "n": %d}\n'
INVALID = b'{"message": "step %06d of the build", "n": 0%d}\n'  # a leading zero: not JSON


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the service did not become ready")


def one_run(url: str, body: bytes) -> tuple[int, float, int, float]:
    """(ingest status, ingest seconds, healthz calls, worst healthz seconds)."""
    done = threading.Event()
    answer: dict[str, float] = {}

    def post() -> None:
        started = time.perf_counter()
        response = httpx.post(url + "/api/v1/events?category=ci_job_log", content=body, timeout=300,
                              headers={"content-type": "application/x-ndjson"})
        answer["status"], answer["s"] = response.status_code, time.perf_counter() - started
        done.set()

    worst, calls = 0.0, 0
    poster = threading.Thread(target=post)
    poster.start()
    with httpx.Client(timeout=60) as client:
        while not done.is_set():
            started = time.perf_counter()
            client.get(url + "/healthz")
            worst, calls = max(worst, time.perf_counter() - started), calls + 1
    poster.join()
    return int(answer["status"]), answer["s"], calls, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invalid", action="store_true", help="events that all fail to decode")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPESENTRY_")}
    # the runs post faster than the default per-token rate allows: measure the loop, not the limit
    env.update(PIPESENTRY_API__INGEST_RATE__EVENTS_PER_S="1e12", PIPESENTRY_API__INGEST_RATE__BYTES_PER_S="1e15",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))  # the child runs elsewhere
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "run", "--port", str(args.port)], cwd=tmp,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env)
        url = f"http://127.0.0.1:{args.port}"
        try:
            wait_ready(url, proc)
            line = INVALID if args.invalid else VALID
            body = b"".join(line % (i, i) for i in range(99_000))
            print(f"body: {len(body):,} bytes, 99,000 {'invalid' if args.invalid else 'valid'} events")
            for run in range(args.runs):
                status, seconds, calls, worst = one_run(url, body)
                print(f"run {run}: ingest {status} in {seconds:.2f} s; /healthz x{calls}, worst {worst * 1000:.0f} ms")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
