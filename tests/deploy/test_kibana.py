"""deploy/kibana/*.ndjson: Kibana saved objects in export format, every reference resolvable, and
every field they name mapped by the alert index template with a type the use needs.

Kibana cannot run here: this checks field names and types, not rendering.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest

from service.alerting.sinks.elasticsearch import ElasticsearchSinkSettings, index_template
from tests.deploy.tools import DEPLOY, ROOT
from tests.unit.service.alerting.test_alert_schema_doc import mapped_fields

KIBANA = DEPLOY / "kibana"
FILES = sorted(KIBANA.glob("*.ndjson"))
FIELDS = mapped_fields(json.loads((ROOT / "service" / "alerting" / "schemas" / "alert-mappings.json").read_text()))
AGGREGATABLE = {"keyword", "ip", "long", "integer", "date", "boolean", "wildcard"}
"""Types Kibana can aggregate and sort on (doc values); not ``text``, ``nested`` or unindexed objects."""
_KQL_FIELD = re.compile(r"(?<![\w.@])([@\w][\w.@]*)\s*:")


def load(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    *objects, summary = lines
    return objects, summary


def kql_fields(query: str) -> list[str]:
    """The field names of a KQL query (``field:value``, ``nested:{ inner: ... }`` as ``nested.inner``)."""
    out: list[str] = []
    for m in re.finditer(r"([@\w][\w.@]*)\s*:\s*\{([^}]*)\}", query):
        out.extend(f"{m.group(1)}.{inner}" for inner in _KQL_FIELD.findall(m.group(2)))
    out.extend(_KQL_FIELD.findall(re.sub(r"\{[^}]*\}", "", query)))
    return out


def search_source(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["attributes"].get("kibanaSavedObjectMeta", {})
    source: dict[str, Any] = json.loads(meta.get("searchSourceJSON", "{}"))
    return source


def field_uses(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, use) pairs; use is ``time``, ``column``, ``sort``, ``aggregation`` or ``query``."""
    attrs, uses = obj["attributes"], []
    if obj["type"] == "index-pattern":
        uses.append((attrs["timeFieldName"], "time"))
    uses += [(c, "column") for c in attrs.get("columns", [])]
    uses += [(s[0], "sort") for s in attrs.get("sort", [])]
    query = search_source(obj).get("query", {}).get("query", "")
    uses += [(f, "query") for f in kql_fields(query if isinstance(query, str) else "")]
    if "visState" in attrs:
        for agg in json.loads(attrs["visState"]).get("aggs", []):
            if "field" in agg.get("params", {}):
                uses.append((agg["params"]["field"], "aggregation"))
    return uses


def test_there_is_something_to_check() -> None:
    assert FILES, "no saved objects under deploy/kibana/"
    kinds = {o["type"] for path in FILES for o in load(path)[0]}
    assert {"index-pattern", "search", "visualization", "dashboard"} <= kinds


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_export_format_and_references(path: Path) -> None:
    objects, summary = load(path)
    assert summary["exportedCount"] == len(objects) and summary["missingRefCount"] == 0
    ids = {(o["type"], o["id"]) for o in objects}
    assert len(ids) == len(objects), "duplicate (type, id)"
    for obj in objects:
        assert {"attributes", "id", "type", "references", "coreMigrationVersion"} <= obj.keys()
        names = {r["name"] for r in obj["references"]}
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{obj['id']}: unresolved reference {ref}"
        if "indexRefName" in search_source(obj):
            assert search_source(obj)["indexRefName"] in names
        if obj["type"] == "dashboard":
            panels = json.loads(obj["attributes"]["panelsJSON"])
            assert panels and all(f"{p['panelIndex']}:{p['panelRefName']}" in names for p in panels)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_field_is_mapped_with_a_fitting_type(path: Path) -> None:
    problems = []
    for obj in load(path)[0]:
        for field, use in field_uses(obj):
            kind = FIELDS.get(field)
            if kind is None:
                problems.append(f"{obj['id']}: {field} ({use}) is not in the index template")
            elif use == "time" and kind != "date":
                problems.append(f"{obj['id']}: time field {field} is {kind}")
            elif use in ("sort", "aggregation") and kind not in AGGREGATABLE:
                problems.append(f"{obj['id']}: {use} on {field}, a {kind} field")
    assert problems == []


def test_the_data_view_covers_every_index_the_sink_writes() -> None:
    patterns = [o["attributes"]["title"].split(",") for path in FILES for o in load(path)[0]
                if o["type"] == "index-pattern"]
    assert patterns
    samples = [index_template(ElasticsearchSinkSettings())["index_patterns"][0].replace("*", "2025.06.15"),
               index_template(ElasticsearchSinkSettings(mode="datastream", namespace="prod"))["index_patterns"][0]
               .rstrip("*")]
    for title in patterns:
        for index in samples:
            assert any(fnmatch.fnmatch(index, p) for p in title), (index, title)


def test_field_check_catches_a_wrong_field() -> None:
    bad = {"type": "visualization", "id": "x", "references": [], "attributes": {"visState": json.dumps(
        {"aggs": [{"params": {"field": "rule.description"}}, {"params": {"field": "no.such.field"}}]})}}
    uses = field_uses(bad)
    assert ("rule.description", "aggregation") in uses and FIELDS["rule.description"] not in AGGREGATABLE
    assert "no.such.field" not in FIELDS
    assert kql_fields('pipesentry.level:("high" or "critical") and pipesentry.matched:{ field: "User" }') == [
        "pipesentry.matched.field", "pipesentry.level", "pipesentry.matched"]
