"""The one reader of ``tests/fixtures/``: data files that more than one test module (or bench) uses.

- ``rules/<name>.yml``: Sigma and correlation rule texts;
- ``checks/<name>.yml``: anomaly check texts;
- ``pipelines/<name>.yml``: pySigma processing pipelines;
- ``findings/<name>.json``: scanner reports (SARIF, ZAP, Checkov, Trivy).

Texts are returned as written, so a test may still ``.replace`` one value to make a variant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _text(folder: str, name: str) -> str:
    return (FIXTURES / folder / f"{name}.yml").read_text(encoding="utf-8")


def rule_text(name: str) -> str:
    """The rule file ``fixtures/rules/<name>.yml`` (one or more YAML documents)."""
    return _text("rules", name)


def check_text(name: str) -> str:
    """The anomaly check file ``fixtures/checks/<name>.yml``."""
    return _text("checks", name)


def pipeline_text(name: str) -> str:
    """The processing pipeline ``fixtures/pipelines/<name>.yml``."""
    return _text("pipelines", name)


def finding_report(name: str) -> Any:
    """The parsed scanner report ``fixtures/findings/<name>.json``."""
    return json.loads((FIXTURES / "findings" / f"{name}.json").read_text(encoding="utf-8"))
