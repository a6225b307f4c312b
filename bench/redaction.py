"""Cost of redaction: microseconds per alert document and per event, with and without secrets.

Four workloads, each run ``--repeats`` times (median, min and max are reported, in CPU time of
this process and in wall-clock time):

- ``alert_clean`` / ``alert_secrets``: ``Redactor.document`` of an alert document
  (``Alert.to_document()`` of a CI log event, two matched fields, ``event.original`` of about
  600 bytes); the secret variant's event carries an AWS key pair, a ``db_password=``, a GitHub
  token and a JWT. ``to_document`` alone is measured beside it (``alert_render``) so the
  redaction's share of rendering an alert is visible.
- ``alert_anchored`` / ``event_anchored``: no secret, but words that some format's prefilter looks for
  (``/etc/passwd``, ``aws``, ``key``, a URL), so every string is scanned.
- ``alert_stream``: ``alert_anchored`` with the alert's number in its message, so every document's
  message and ``event.original`` are new texts (as in a stream: the other workloads repeat one
  message, which the redactor's cache of short clean texts remembers after the first document).
- ``event_clean`` / ``event_secrets``: ``Redactor.text`` of the same events as compact JSON
  (what a dead letter or a log line costs).

    python bench/redaction.py --json [--alerts 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from detectors.alert import build_alert
from detectors.model import LogSource, Match, Origin, RuleInfo
from detectors.redaction import Redactor

RULE = RuleInfo(id="bench-rule", title="Secret printed in CI job log", level="high", author="bench",
                tags=("attack.credential-access", "attack.t1552.001"), description="bench rule")
CLEAN = ("+ docker build -t registry.acme.internal/payments:1.42.0 --build-arg VERSION=1.42.0 . "
         "Step 7/12 : RUN pip install --no-cache-dir -r requirements.txt && pytest -q tests/unit")
SECRETS = ("+ export AWS_ACCESS_KEY_ID=AKIAQX3T7FJ2LMNOPQRS AWS_SECRET_ACCESS_KEY="
           "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 db_password=Tr0ub4dor-and-3 "
           "git clone https://x:ghp_R8x2Lk9Qm4Np7Tv1Wy3Zb6Cd0Ef5Gh8Jk2Mn@github.com/acme/payments "
           "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lnbmF0dXJlLTEyMzQ1Njc4OTA")


ANCHORED = ("+ grep -c root /etc/passwd && aws s3 sync dist/ s3://acme-artifacts/payments/ --delete "
            "&& echo key rotation check done for https://status.acme.internal/deploys")
"""No secret, but words the formats' prefilter looks for (``pass``, ``aws``, ``key``, ``://``): every string
of the document is scanned, as for most alerts of a match-heavy stream."""


def event(message: str, n: int) -> dict[str, Any]:
    return {"@timestamp": "2026-12-03T21:00:00.000Z", "repository": "acme/payments", "workflow": "release",
            "job": "build", "run_id": 9_120_044 + n, "ref": "refs/heads/main", "runner": "github-hosted",
            "step": "deploy", "message": message, "n": n}


def alerts_for(message: str, count: int, *, numbered: bool = False) -> list[Any]:
    """``numbered``: the alert's number ends each event's message (every text new)."""
    out = []
    for n in range(count):
        text = f"{message} #{n}" if numbered else message
        ev = event(text, n)
        match = Match(rule=RULE, fields=(("message", text), ("step", "deploy")))
        out.append(build_alert(match, ev, Origin(input="bench", offset=n), event_time=1.0e9, now=1.0e9,
                               logsource=LogSource(category="ci_job_log")))
    return out


def stream(docs: list[dict[str, Any]]) -> None:
    """Redact ``docs`` with a new redactor: its cache of clean texts starts empty, as each repeat must."""
    fresh = Redactor(os.urandom(32))
    for doc in docs:
        fresh.document(doc)


def timed(fn: Callable[[], None], items: int, repeats: int) -> dict[str, float]:
    cpu, wall = [], []
    fn()  # warm caches (regex, hmac)
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c0) / items * 1e6)
        wall.append((time.perf_counter() - w0) / items * 1e6)
    return {"us_cpu_median": round(statistics.median(cpu), 2), "us_cpu_min": round(min(cpu), 2),
            "us_cpu_max": round(max(cpu), 2), "us_wall_median": round(statistics.median(wall), 2),
            "us_wall_min": round(min(wall), 2), "us_wall_max": round(max(wall), 2)}


def run(count: int, repeats: int) -> dict[str, Any]:
    redactor = Redactor(os.urandom(32))
    results: dict[str, Any] = {}
    for label, message in (("clean", CLEAN), ("anchored", ANCHORED), ("secrets", SECRETS)):
        alerts = alerts_for(message, count)
        docs = [a.to_document() for a in alerts]
        texts = [orjson.dumps(event(message, n)).decode() for n in range(count)]
        counts: dict[str, int] = {}
        redactor.document(docs[0], counts)
        results[f"alert_{label}"] = {**timed(lambda d=docs: [redactor.document(x) for x in d] and None,
                                             count, repeats), "redactions_per_alert": sum(counts.values())}
        results[f"event_{label}"] = timed(lambda t=texts: [redactor.text(x) for x in t] and None, count, repeats)
        results[f"event_{label}"]["bytes"] = len(texts[0])
        if label == "clean":
            results["alert_render"] = timed(lambda a=alerts: [x.to_document() for x in a] and None, count, repeats)
    streamed = [a.to_document() for a in alerts_for(ANCHORED, count, numbered=True)]
    results["alert_stream"] = timed(lambda: stream(streamed), count, repeats)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts (and events) per workload")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.alerts, args.repeats)
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_avg_1m": round(os.getloadavg()[0], 2)}
    results["params"] = {"alerts": args.alerts, "repeats": args.repeats}
    if args.json:
        print(json.dumps(results))
        return
    for name, figures in results.items():
        print(f"{name:>14}: {figures}")


if __name__ == "__main__":
    main()
