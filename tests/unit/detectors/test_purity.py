"""``detectors/`` is the pure core: it must not import I/O, async or service modules."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

FORBIDDEN = {"asyncio", "aiokafka", "fastapi", "httpx", "elasticsearch", "opensearchpy",
             "prometheus_client", "service"}
DETECTORS = ROOT / "detectors"


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_detectors_import_no_forbidden_module() -> None:
    files = sorted(DETECTORS.rglob("*.py"))
    assert any(f.parent.name == "sigma" for f in files)
    offenders = {str(f.relative_to(DETECTORS)): sorted(imported_roots(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_scanner_sees_imports() -> None:
    probe = DETECTORS / "sigma" / "engine.py"
    assert "sigma" in imported_roots(probe) and "detectors" in imported_roots(probe)
