"""The alert model: ids, ECS document, ATT&CK tags, severity, original-event cap."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import orjson
import pytest

from detectors.alert import (
    SEVERITY,
    Alert,
    alert_id,
    build_alert,
    cap_original,
    parse_attack_tags,
)
from detectors.model import LogSource, Match, Origin, RuleInfo
from tests.conftest import ROOT

SCHEMAS = ROOT / "service" / "alerting" / "schemas"

RULE = RuleInfo(
    id="5f0a1c2e-0000-4000-8000-000000000001",
    title="Curl piped to shell in CI job",
    level="high",
    author="Jane Doe",
    description="A CI step downloads a script and pipes it to a shell.",
    references=("https://example.org/ref",),
    tags=("attack.execution", "attack.t1059.004", "attack.g0032", "attack.s0002", "cve.2021-44228"),
    modified="2024-05-01",
    license="DRL-1.1",
    ruleset="sigmahq",
)
ORIGIN = Origin(input="kafka", topic="ci-logs", partition=3, offset=1234)


def make(rule: RuleInfo = RULE, origin: Origin = ORIGIN, event: dict[str, object] | None = None,
         details: dict[str, object] | None = None, **kw: object) -> Alert:
    match = Match(rule=rule, fields=(("command", "curl x | sh"), ("exit", 0)), details=details)
    return build_alert(match, event or {"command": "curl x | sh", "job": "build"}, origin,
                       event_time=1_700_000_000.25, now=1_700_000_001.0,
                       logsource=LogSource(product="github", service="actions"), **kw)  # type: ignore[arg-type]


def test_id_is_stable_and_depends_on_rule_and_origin() -> None:
    a, b = make(), make()
    assert a.id == b.id == alert_id(RULE.id, ORIGIN.token())
    assert len(a.id) == 32
    assert make(origin=Origin(input="kafka", topic="ci-logs", partition=3, offset=1235)).id != a.id
    other_rule = RuleInfo(id="other", title="x")
    assert make(rule=other_rule).id != a.id


def test_alert_key_in_details_wins_over_origin() -> None:
    a = make(details={"alert_key": "group=a|window=100"})
    b = make(origin=Origin(input="http", key="zzz"), details={"alert_key": "group=a|window=100"})
    assert a.id == b.id == alert_id(RULE.id, "group=a|window=100")


def test_document_is_ecs_shaped() -> None:
    doc = make().to_document()
    assert doc["@timestamp"] == "2023-11-14T22:13:20.250Z"
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["severity"] == SEVERITY["high"]
    assert doc["event"]["created"] == "2023-11-14T22:13:21.000Z"
    assert doc["pipesentry"]["level"] == "high"
    assert doc["rule"] == {
        "id": RULE.id, "uuid": RULE.id, "name": RULE.title, "description": RULE.description,
        "author": "Jane Doe", "reference": ["https://example.org/ref"], "version": "2024-05-01",
        "ruleset": "sigmahq", "license": "DRL-1.1", "category": "sigma",
    }
    assert "log" not in doc  # log.source.* is not ECS: the origin moved to pipesentry.origin
    assert doc["pipesentry"]["origin"] == {"input": "kafka", "token": "kafka:ci-logs:3:1234", "topic": "ci-logs",
                                           "partition": 3, "offset": 1234}
    assert doc["pipesentry"]["logsource"] == {"product": "github", "service": "actions"}
    assert doc["pipesentry"]["matched"] == [{"field": "command", "value": "curl x | sh"},
                                            {"field": "exit", "value": "0"}]
    assert json.loads(doc["event"]["original"]) == {"command": "curl x | sh", "job": "build"}
    assert doc["pipesentry"]["original_truncated"] is False
    orjson.dumps(doc)  # serialisable as is


def test_author_always_present() -> None:
    doc = make(rule=RuleInfo(id="r", title="t", author="")).to_document()
    assert doc["rule"]["author"] == "unknown"


def test_attack_tags_to_threat() -> None:
    threat = make().to_document()["threat"]
    assert threat["framework"] == "MITRE ATT&CK"
    assert threat["technique"]["id"] == ["T1059"]
    assert threat["technique"]["subtechnique"]["id"] == ["T1059.004"]
    assert threat["technique"]["subtechnique"]["reference"] == ["https://attack.mitre.org/techniques/T1059/004/"]
    assert threat["tactic"] == {"name": ["Execution"], "id": ["TA0002"],
                                "reference": ["https://attack.mitre.org/tactics/TA0002/"]}
    assert threat["group"] == {"id": ["G0032"]}
    assert threat["software"] == {"id": ["S0002"]}


def test_attack_tag_variants() -> None:
    t = parse_attack_tags(["attack.privilege_escalation", "attack.t1548", "attack.t1548", "attack.stealth",
                           "ATTACK.T1003.001", "tlp.amber", "attack."])
    assert t.technique_ids == ("T1548", "T1003")
    assert t.subtechnique_ids == ("T1003.001",)
    assert t.tactic_ids == ("TA0004",)
    assert t.tactic_names == ("Privilege Escalation", "Stealth")
    assert not parse_attack_tags(["cve.2021-44228"])
    assert "threat" not in make(rule=RuleInfo(id="r", title="t")).to_document()


@pytest.mark.parametrize("level,expected", [("informational", 1), ("low", 21), ("medium", 47),
                                            ("high", 73), ("critical", 99), ("bogus", 1)])
def test_severity_from_level(level: str, expected: int) -> None:
    alert = make(rule=RuleInfo(id="r", title="t", level=level))
    assert alert.to_document()["event"]["severity"] == expected


def test_original_is_capped_on_utf8_boundary_with_flag() -> None:
    event = {"msg": "é" * 10_000}
    text, truncated, size = cap_original(event, 101)
    assert truncated and size > 101
    assert len(text.encode()) <= 101
    text.encode("utf-8")  # valid UTF-8
    doc = make(event=event, max_original_bytes=1000).to_document()
    assert doc["pipesentry"]["original_truncated"] is True
    assert doc["pipesentry"]["original_size"] == size
    assert len(doc["event"]["original"].encode()) <= 1000


def test_original_of_an_event_deeper_than_orjson_writes_is_still_json() -> None:
    # decoders accept up to events.max_depth (1,000) levels; orjson writes 255
    deep: dict[str, object] = {"x": "curl | sh", "big": 2**70}
    for _ in range(600):
        deep = {"a": [deep], "n": 1}
    text, truncated, size = cap_original(deep, 1_000_000)
    assert not truncated and size == len(text.encode())
    assert text == '{"a":[' * 600 + '{"x":"curl | sh","big":1180591620717411303424}' + '],"n":1}' * 600
    shallow = {"k": [1, "é", None, True, 1.5, {"m": {}}], "e": []}
    assert cap_original(shallow, 1000)[0] == json.dumps(shallow, separators=(",", ":"), ensure_ascii=False)
    assert orjson.loads(orjson.dumps(make(event=deep).to_document()))["event"]["original"] == text


def test_document_parts_read_from_the_event_are_made_once_on_first_use() -> None:
    from detectors.entities import extract

    event: dict[str, object] = {"user": {"name": "alice"}, "source": {"ip": "10.0.0.1"}, "msg": "x" * 5000}
    alert = make(event=event, max_original_bytes=1000)
    assert alert._derived is None  # raising the alert derived nothing
    text, truncated, size = cap_original(event, 1000)
    assert (alert.original, alert.truncated, alert.original_size) == (text, truncated, size)
    assert alert.entities == extract(event, LogSource(product="github", service="actions"))
    assert ("user.name", "alice") in alert.entities
    assert alert.threat == parse_attack_tags(RULE.tags)
    derived = alert._derived
    assert derived is not None and alert.to_document()["event"]["original"] == text
    assert alert._derived is derived  # kept: the document reads the same values
    assert make(event=event, max_original_bytes=1000) == alert  # equality ignores the cache


def test_alert_about_another_event_shows_no_original() -> None:
    from detectors.model import EventRef

    match = Match(rule=RULE, about=EventRef(5.0, Origin(input="file", key="first")))
    alert = build_alert(match, {"user": {"name": "bob"}}, ORIGIN, event_time=9.0, now=10.0)
    assert (alert.original, alert.entities, alert.timestamp) == ("{}", (), 5.0)
    assert alert.id == alert_id(RULE.id, "file:first")


def test_non_json_values_and_keys_do_not_break_the_document() -> None:
    event = {"when": datetime(2024, 1, 1, tzinfo=UTC), 7: "int key", "nested": {"b": b"x".hex()}}
    alert = make(event=event, details={"value": 3.5, "at": datetime(2024, 1, 1, tzinfo=UTC)})
    doc = alert.to_document()
    assert "2024-01-01" in doc["event"]["original"]
    assert doc["pipesentry"]["details"]["value"] == 3.5


def test_details_past_64_bits_still_make_a_document() -> None:
    # an anomaly check's sum over hostile values can pass 2**64, which orjson refuses to write
    doc = make(details={"alert_key": "k", "sum": 2**70, "nested": {"n": -(2**65)}}).to_document()
    assert doc["pipesentry"]["details"]["sum"] == float(2**70)
    assert doc["pipesentry"]["details"]["nested"]["n"] == float(-(2**65))


def test_datetime_times_accepted() -> None:
    match = Match(rule=RULE)
    a = build_alert(match, {}, ORIGIN, event_time=datetime(2024, 1, 1, tzinfo=UTC),
                    now=datetime(2024, 1, 1, 0, 0, 1))
    assert a.to_document()["@timestamp"] == "2024-01-01T00:00:00.000Z"
    assert a.created == a.timestamp + 1


def test_document_validates_against_published_schema() -> None:
    schema = json.loads((SCHEMAS / "alert.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for alert in (make(), make(details={"alert_key": "k", "count": 5}), make(rule=RuleInfo(id="r", title="t"))):
        jsonschema.validate(alert.to_document(), schema)
    bad = make().to_document()
    del bad["rule"]["author"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _paths(doc: dict[str, object], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path != "pipesentry.details":
            out |= _paths(value, path + ".")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out |= _paths(value[0], path + ".")
        else:
            out.add(path)
    return out


def _mapped(mapping: dict[str, object], path: str) -> dict[str, object] | None:
    node: object = mapping
    for part in path.split("."):
        props = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(props, dict) or part not in props:
            return None
        node = props[part]
    return node if isinstance(node, dict) else None


def test_every_document_field_has_an_explicit_mapping() -> None:
    mappings = json.loads((SCHEMAS / "alert-mappings.json").read_text())
    doc = make(details={"alert_key": "k"}).to_document()
    doc["pipesentry"]["suppressed_last"] = doc["@timestamp"]
    unmapped = sorted(p for p in _paths(doc) if _mapped(mappings, p) is None)
    assert unmapped == []
    assert mappings["dynamic"] is False


def test_published_templates_carry_the_mappings() -> None:
    from service.alerting.sinks.elasticsearch import ElasticsearchSinkSettings, index_template

    mappings = json.loads((SCHEMAS / "alert-mappings.json").read_text())
    es_file = json.loads((SCHEMAS / "elasticsearch-index-template.json").read_text())
    os_file = json.loads((SCHEMAS / "opensearch-index-template.json").read_text())
    assert es_file["template"]["mappings"] == os_file["template"]["mappings"] == mappings
    assert es_file["data_stream"] == {} and "data_stream" not in os_file
    built = index_template(ElasticsearchSinkSettings(mode="datastream"))
    assert built["template"]["mappings"] == mappings and built["data_stream"] == {}
    assert built["index_patterns"] == es_file["index_patterns"]
    assert index_template(ElasticsearchSinkSettings())["index_patterns"] == os_file["index_patterns"]


def test_fast_constructors_make_the_objects_the_dataclass_constructors_make() -> None:
    """build_alert, keyed_origin and new_match set slots directly: same objects, equal and frozen."""
    from dataclasses import FrozenInstanceError, fields

    from detectors.model import keyed_origin, new_match

    origin = keyed_origin("stdin", "abc")
    assert origin == Origin("stdin", key="abc") and hash(origin) == hash(Origin("stdin", key="abc"))
    match = new_match(RULE, (("command", "x"),))
    assert match == Match(rule=RULE, fields=(("command", "x"),))
    alert = make(origin=origin)
    expected = Alert(alert.id, RULE, 1_700_000_000.25, 1_700_000_001.0, origin,
                     LogSource(product="github", service="actions"), (("command", "curl x | sh"), ("exit", 0)), None,
                     {"command": "curl x | sh", "job": "build"})
    assert alert == expected and hash(alert) == hash(expected)
    for made in (origin, match, alert):
        names = [f.name for f in fields(made)]
        for name in names:
            getattr(made, name)  # every slot is set
        with pytest.raises(FrozenInstanceError):
            setattr(made, names[0], None)


def test_iso_time_cache_gives_what_the_formula_gives() -> None:
    """``iso_time`` is cached (a batch's alerts share ``event.created``): the cache returns the formula's text,
    for repeated, integral, fractional and rounding-edge times alike."""
    from detectors.alert import iso_time

    times = [0.0, 1.0, 1, 1.0005, 1.9995, 1_700_000_000.123456, 1_700_000_000.9999, -1.5, 253_402_300_799.0]
    for ts in times + times:
        assert iso_time(ts) == datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def test_alert_id_is_sha256_of_rule_and_key_whatever_the_kept_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    """alert_id copies a kept hash state per rule: the id is still sha256(rule id, separator, key), cut
    to 32 hex chars, the first time, the next times and past the number of rules kept."""
    import hashlib

    from detectors import alert as alert_mod

    monkeypatch.setattr(alert_mod, "_PREFIXES", {})
    monkeypatch.setattr(alert_mod, "MAX_PREFIXES", 2)
    for rule_id in ("r-1", "r-2", "r-3", "ünï", "", "r-1"):
        for key in ("stdin:abc", "", "x" * 200, "k\x1fé"):
            expected = hashlib.sha256(f"{rule_id}\x1f{key}".encode()).hexdigest()[:32]
            assert alert_id(rule_id, key) == alert_id(rule_id, key) == expected
    assert list(alert_mod._PREFIXES) == ["r-1", "r-2"]
