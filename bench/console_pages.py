"""Console page benchmark: the server time of the browser console's pages over a large local store.

    python bench/console_pages.py --json [--alerts 100000] [--runs 7] [--seed 1]

Fills a store as ``bench/console_queries.py`` does (same generator: 200 rules, 500 hosts, 2,000
users, detection times over 30 days, a tenth triaged), builds the whole app (``create_app``:
authentication, audit, security headers, the console) around the project's rule pack, signs in
with an analyst token (a session cookie, as a browser holds) and requests each page ``--runs``
times after one warm-up, in process (``httpx.ASGITransport``: no network). Figures: server time
per page in milliseconds (median, min, max), template rendering included; the queue's counts by
level and rule, which the page's script fetches after it is shown, are timed as ``queue_counts_*``. Goals (issue 15): the
queue's first page < 300 ms, filtered < 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from console_queries import NOW, fill, spread_ms, triage_some  # noqa: E402

from service.alerting.config import AlertingSettings  # noqa: E402
from service.alerting.router import AlertRouter  # noqa: E402
from service.api import ApiContext, create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.detection import Detector, compile_detection  # noqa: E402
from service.reload import Reloader  # noqa: E402
from service.rules import default_rules_dir  # noqa: E402

TOKEN = "bench-analyst-token-0123456789"
PAGES = [
    ("queue_first_page", "/?range=30d"),
    ("queue_default_24h", "/"),
    ("queue_high_critical_24h", "/?level=high&level=critical&range=24h"),
    ("queue_min_high_new_7d", "/?min_level=high&status=new&range=7d"),
    ("queue_host", "/?host=web-17&range=30d"),
    ("queue_text", "/?q=cancelled&min_level=high&range=7d"),
    ("queue_rule", "/?rule=rule-042&range=30d"),
    ("queue_counts_30d", "/api/v1/alerts/summary?since=now-30d"),
    ("queue_counts_high_critical_24h", "/api/v1/alerts/summary?level=high&level=critical&since=24h"),
    ("rules", "/rules"),
    ("coverage", "/coverage"),
]


async def measure(router: AlertRouter, data: Path, runs: int) -> dict[str, dict[str, float]]:
    rules = default_rules_dir()
    settings = Settings(rules={"paths": [str(rules)], "skip_invalid": True}, data_dir=data,  # type: ignore[arg-type]
                        api={"tokens": [{"name": "bench", "role": "analyst", "token": TOKEN}]})  # type: ignore[arg-type]
    outcome = compile_detection([rules], [], skip_invalid=True, generation=1)
    assert outcome.detection is not None
    detector = Detector(outcome.detection)
    ctx = ApiContext(settings=settings, detector=detector,
                     reloader=Reloader(detector, settings.rules, settings.correlation, settings.anomaly),
                     pipeline=None, readiness=lambda: {"rules_loaded": True}, extra={"alerts": router})
    from service.alerting.api import api_router

    ctx.routers.append(api_router(router))
    app = create_app(ctx)
    out: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        signed = await client.post("/sign-in", data={"token": TOKEN, "next": "/"})
        assert signed.status_code == 303, signed.text
        first = await client.get("/?range=30d&limit=1")
        alert_id = first.text.split('href="/alerts/', 1)[1].split('"', 1)[0]
        for name, path in [*PAGES, ("alert_page", f"/alerts/{alert_id}")]:
            times: list[float] = []
            for i in range(runs + 1):
                started = time.perf_counter()
                response = await client.get(path)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
                if i:
                    times.append((time.perf_counter() - started) * 1000)
            out[name] = {**spread_ms(times), "bytes": float(len(response.content))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipesentry-console-pages-") as tmp:
        router = AlertRouter(AlertingSettings.model_validate({"sinks": [{"type": "store"}]}), Path(tmp),
                             clock=lambda: NOW)
        router.store.open()
        router.silences.load()
        try:
            fill_s = fill(router, args.alerts, args.seed)
            triage_some(router, args.alerts, args.seed)
            figures = asyncio.run(measure(router, Path(tmp) / "data", args.runs))
        finally:
            router.store.close()
    result = {"alerts": args.alerts, "runs": args.runs, "fill_s": round(fill_s, 1), "pages": figures}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.alerts} alerts stored in {fill_s:.1f} s; {args.runs} runs per page")
    print(f"{'page':28} {'median ms':>10} {'min':>8} {'max':>8} {'bytes':>9}")
    for name, f in figures.items():
        print(f"{name:28} {f['median_ms']:>10} {f['min_ms']:>8} {f['max_ms']:>8} {int(f['bytes']):>9}")


if __name__ == "__main__":
    main()
