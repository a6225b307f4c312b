"""The one reader of ``tests/fixtures/``: data files that more than one test module uses.

``fixtures/findings/<name>.json``: scanner reports (SARIF, ZAP, Checkov, Trivy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def finding_report(name: str) -> Any:
    """The parsed scanner report ``fixtures/findings/<name>.json``."""
    return json.loads((FIXTURES / "findings" / f"{name}.json").read_text(encoding="utf-8"))
