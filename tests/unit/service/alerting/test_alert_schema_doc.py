"""docs/alert-schema.md documents every field of the alert mapping, with its type, and nothing else."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.conftest import ROOT

MAPPINGS = ROOT / "service" / "alerting" / "schemas" / "alert-mappings.json"
DOC = ROOT / "docs" / "alert-schema.md"
_ROW = re.compile(r"^\| `(?P<field>[^`]+)` \| (?P<type>[^|]+?) \| (?P<content>.+) \|$")


def mapped_fields(node: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Every field of a mapping with its documented type (multi-fields included)."""
    out: dict[str, str] = {}
    for name, spec in node.get("properties", {}).items():
        path = prefix + name
        kind = spec.get("type", "object")
        if kind == "object" and spec.get("enabled") is False:
            out[path] = "object (not indexed)"
        elif "properties" in spec:
            if kind == "nested":
                out[path] = "nested"
            out |= mapped_fields(spec, path + ".")
        else:
            out[path] = kind
        for sub, sub_spec in spec.get("fields", {}).items():
            out[f"{path}.{sub}"] = sub_spec["type"]
    return out


def documented_fields() -> dict[str, str]:
    text = DOC.read_text()
    table = text.split("<!-- alert-fields:start -->", 1)[1].split("<!-- alert-fields:end -->", 1)[0]
    rows: dict[str, str] = {}
    for line in table.strip().splitlines()[2:]:
        m = _ROW.match(line)
        assert m, f"not a table row: {line!r}"
        assert m["field"] not in rows, f"documented twice: {m['field']}"
        assert m["content"].strip(), f"no description: {m['field']}"
        rows[m["field"]] = m["type"].strip()
    return rows


def test_every_mapped_field_is_documented_with_its_type() -> None:
    mapped = mapped_fields(json.loads(MAPPINGS.read_text()))
    documented = documented_fields()
    assert sorted(mapped.keys() - documented.keys()) == [], "mapped but not in docs/alert-schema.md"
    assert sorted(documented.keys() - mapped.keys()) == [], "in docs/alert-schema.md but not mapped"
    assert {f: t for f, t in documented.items() if mapped[f] != t} == {}, "documented type differs"
