"""The rules API with a local alert store: alert counts, the false-positive ratio and the rule's YAML."""

from __future__ import annotations

from pathlib import Path

import httpx

from detectors.model import RuleInfo
from service.api import create_app
from tests.support.alerts import alert
from tests.support.api import ANALYST, READER, auth, build_ctx


async def test_false_positive_ratio_follows_resolutions(tmp_path: Path) -> None:
    ctx, alerts = build_ctx(tmp_path)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://t") as client:
            listed = (await client.get("/api/v1/rules", headers=auth(READER))).json()["items"]
            rule = listed[0]
            assert rule["alerts"] == {"alerts": 0, "resolved": 0, "false_positives": 0, "false_positive_ratio": None}
            info = RuleInfo(id=rule["id"], title=rule["title"], level="high", author=rule["author"])
            docs = [alert(i, r=info).to_document() for i in range(4)]
            alerts.store.upsert(docs)
            for doc, disposition in zip(docs[:3], ["false_positive", "true_positive", "false_positive"], strict=True):
                changed = await client.patch(f"/api/v1/alerts/{doc['event']['id']}", headers=auth(ANALYST),
                                             json={"status": "resolved", "disposition": disposition})
                assert changed.status_code == 200
            one = (await client.get(f"/api/v1/rules/{rule['id']}", headers=auth(READER))).json()
            assert one["alerts"] == {"alerts": 4, "resolved": 3, "false_positives": 2, "false_positive_ratio": 0.6667}
            assert one["author"] and "detection:" in one["yaml"] and "condition:" in one["yaml"]
            assert {"description", "references", "falsepositives"} <= set(one)
            listed = (await client.get("/api/v1/rules", headers=auth(READER))).json()["items"]
            assert listed[0]["alerts"]["false_positive_ratio"] == 0.6667
            metrics_text = (await client.get("/metrics", headers=auth(READER))).text
            assert f'pipesentry_alert_dispositions_total{{disposition="false_positive",rule_id="{rule["id"]}"}}' \
                in metrics_text
    finally:
        alerts.store.close()
