"""Check file parsing: accepted layouts, defaults, and errors that name the bad key."""

from __future__ import annotations

import pytest

from detectors.anomaly import AnomalyEngine, parse_checks
from detectors.anomaly.spec import DAY, WEEK, CardinalitySpec, VolumeSpec
from detectors.anomaly.timeutil import iso, parse_duration
from detectors.event import BadTimestamp, parse_timestamp


def test_list_mapping_and_multi_document_layouts() -> None:
    one = "id: a\ntype: silence\ntimeout: 5m\n"
    as_list = "- id: a\n  type: silence\n  timeout: 5m\n- id: b\n  type: threshold\n  count: 3\n  window: 1m\n"
    as_mapping = "checks:\n" + "".join("  " + line + "\n" for line in as_list.splitlines())
    multi = one + "---\nid: b\ntype: threshold\ncount: 3\nwindow: 60\n"
    assert [s.id for s in parse_checks(one)[0]] == ["a"]
    for text in (as_list, as_mapping, multi):
        specs, errors = parse_checks(text)
        assert errors == []
        assert [s.id for s in specs] == ["a", "b"]
    assert parse_checks(one)[0][0].timeout == 300.0  # type: ignore[attr-defined]


def test_defaults_per_type() -> None:
    specs, errors = parse_checks("""
- {id: v, type: volume}
- {id: v2, type: volume, seasonality: [daily]}
- {id: c, type: cardinality, field: repo, baseline: true}
""")
    assert errors == []
    volume, daily_only, card = specs
    assert isinstance(volume, VolumeSpec) and isinstance(card, CardinalitySpec)
    assert volume.interval == 600 and volume.threshold == 4.0 and volume.min_count == 10
    assert volume.learning_s == 2 * WEEK
    assert daily_only.learning_s == DAY
    assert card.learning_s == DAY and card.precision == 12


def test_unknown_field_is_named_and_other_checks_still_load() -> None:
    specs, errors = parse_checks("""
- {id: good, type: silence, timeout: 1m}
- {id: typo, type: volume, thresold: 3}
- {id: nested, type: volume, logsource: {produkt: x}}
""", source="team.yml")
    assert [s.id for s in specs] == ["good"]
    assert [(e.source, e.check_id, e.reason) for e in errors] == [
        ("team.yml", "typo", "thresold: unknown field"),
        ("team.yml", "nested", "logsource.produkt: unknown field"),
    ]


@pytest.mark.parametrize(("text", "reason"), [
    ("{id: x, type: spike}", "type: 'spike' is not one of volume, silence, metric, new_value, cardinality, "
                             "threshold, ratio"),
    ("{id: x, type: silence}", "timeout: Field required"),
    ("{id: x, type: silence, timeout: soon}", "timeout: Value error, not a duration: 'soon' (use e.g. 30s, 5m, "
                                              "1h30m, 7d)"),
    ("{id: x, type: volume, interval: 7m}", "check: Value error, interval must be >= 1s and divide an hour (or be "
                                            "whole hours) with seasonality"),
    ("{id: x, type: cardinality, field: f}", "check: Value error, set max_distinct, baseline: true, or both"),
    ("{id: 'bad id!', type: silence, timeout: 1m}", "id: String should match pattern '^[A-Za-z0-9_.:/-]+$'"),
    ("{id: x, type: ratio, selection: {a: 1}, max_ratio: 2}", "max_ratio: Input should be less than or equal to 1"),
])
def test_invalid_checks_name_the_key(text: str, reason: str) -> None:
    specs, errors = parse_checks(text)
    assert specs == []
    assert [e.reason for e in errors] == [reason]


def test_duplicate_ids_and_non_mapping_items() -> None:
    specs, errors = parse_checks("- {id: a, type: silence, timeout: 1m}\n- {id: a, type: silence, timeout: 2m}\n- 7\n")
    assert [s.id for s in specs] == ["a"]
    assert [e.reason for e in errors] == ["id: duplicate check id", "check #3 is a int, not a mapping"]


def test_yaml_syntax_error_is_one_error() -> None:
    specs, errors = parse_checks("- {id: a, type: [", source="x.yml")
    assert specs == [] and len(errors) == 1
    assert errors[0].source == "x.yml" and errors[0].reason.startswith("not a check file:")


def test_bad_selection_is_an_engine_error_and_other_checks_run() -> None:
    specs, errors = parse_checks("""
- {id: broken, type: threshold, count: 2, window: 1m, selection: {field|nosuchmodifier: x}}
- {id: fine, type: threshold, count: 2, window: 1m, selection: {field: x}}
""")
    assert errors == []
    engine = AnomalyEngine(specs)
    assert list(engine.checks) == ["fine"]
    assert [e.check_id for e in engine.errors] == ["broken"]
    assert engine.errors[0].reason.startswith("selection:")


def test_fingerprint_changes_with_configuration() -> None:
    (a,), _ = parse_checks("{id: a, type: silence, timeout: 1m}")
    (b,), _ = parse_checks("{id: a, type: silence, timeout: 2m}")
    (c,), _ = parse_checks("{id: a, type: silence, timeout: 60s}")
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == c.fingerprint()


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1h30m", 5400), ("7d", 604800),
                                                ("2w", 1209600), (45, 45), ("250ms", 0.25)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 parsecs", "m5", "-3s", True, None, [1]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_timestamps() -> None:
    assert parse_timestamp(1767571200) == 1767571200.0
    assert parse_timestamp(1767571200123) == 1767571200.123
    assert parse_timestamp("1767571200.5") == 1767571200.5
    assert parse_timestamp("2026-01-05T00:00:00Z") == 1767571200.0
    assert parse_timestamp("2026-01-05T01:00:00+01:00") == 1767571200.0
    assert parse_timestamp("2026-01-05 00:00:00") == 1767571200.0
    assert iso(1767571200.25) == "2026-01-05T00:00:00.250Z"
    for bad in ("yesterday", "", True, {"a": 1}, -5, float("nan"), float("inf")):
        with pytest.raises(BadTimestamp):
            parse_timestamp(bad)
