"""The state record format of ``state.scope: keyed``: round trip, version refusal, bounds, hostile input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.model import LogSource
from service.detection import compile_detection
from service.keyed import records
from service.keyed.records import Origin, RecordError, RecordTooLarge, StateRecord, Watermark
from tests.conftest import PROJECT_RULES

SSH = [PROJECT_RULES / "linux" / "linux_auth_ssh_failed_login.yml",
       PROJECT_RULES / "correlations" / "ssh_brute_force.yml"]
GITHUB = [PROJECT_RULES / "github" / "github_audit_branch_protection_removed.yml",
          PROJECT_RULES / "github" / "github_webhook_force_push_protected_branch.yml",
          PROJECT_RULES / "correlations" / "github_protection_removed_then_force_push.yml"]


def specs(paths: list[Any]) -> dict[str, Any]:
    outcome = compile_detection(paths, [], skip_invalid=False)
    assert outcome.detection is not None and outcome.detection.correlation is not None, outcome.errors
    return {spec.info.title: spec for spec in outcome.detection.correlation.specs}


def ssh_spec() -> Any:
    (spec,) = specs(SSH).values()
    return spec


def test_a_record_carries_only_the_fields_the_aggregation_reads_and_round_trips():
    spec = ssh_spec()
    rule = spec.slots[0].rule_id
    event = {"hostname": "Bastion-1", "message": "Failed password for x" * 50, "pid": 7}
    record = records.build(spec, [rule], event, 1_764_113_000.5, Origin("auth", 3, 42))
    assert record is not None
    assert record.fields == {"hostname": "Bastion-1"}
    assert record.key() == spec.info.id.encode() + b'|["bastion-1"]'  # normalised like the engine's key
    data = record.encode()
    assert len(data) < 200
    back = records.decode(data)
    assert back == StateRecord(spec.info.id, (rule,), 1_764_113_000.5, Origin("auth", 3, 42), {"hostname": "Bastion-1"})


def test_a_missing_group_field_gives_no_record():
    spec = ssh_spec()
    assert records.build(spec, [spec.slots[0].rule_id], {"message": "x"}, 1.0, Origin("t", 0, 0)) is None
    assert records.build(spec, ["another-rule"], {"hostname": "h"}, 1.0, Origin("t", 0, 0)) is None


def test_aliased_slots_copy_each_rules_own_fields():
    (spec,) = specs(GITHUB).values()
    by_rule = {slot.rule_id: slot for slot in spec.slots}
    for rule, slot in by_rule.items():
        event: dict[str, Any] = {}
        for name in slot.group_fields:
            head, _, tail = name.partition(".")
            if tail:
                event.setdefault(head, {})[tail] = "ACME/Payments"
            else:
                event[name] = "ACME/Payments"
        record = records.build(spec, [rule], event, 5.0, Origin("t", 0, 1))
        assert record is not None and set(record.fields) == set(slot.group_fields)
    keys = {records.build(spec, [rule], _event(slot.group_fields), 5.0, Origin("t", 0, 1)).key()  # type: ignore[union-attr]
            for rule, slot in by_rule.items()}
    assert len(keys) == 1  # both sides of the sequence land in one partition


def _event(names: tuple[str, ...]) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for name in names:
        head, _, tail = name.partition(".")
        if tail:
            event.setdefault(head, {})[tail] = "mallory"
        else:
            event[name] = "mallory"
    return event


def test_watermark_round_trip():
    mark = Watermark("host:1#a", (("auth", 0, 12.5), ("auth", 3, 14.0)), (("auth", 4),))
    assert records.decode(mark.encode()) == mark
    assert b'"c"' not in mark.encode()  # no level marks: the watermark of a one-level chain, as before


def test_a_stage2_watermark_with_level_marks_round_trips_and_older_readers_see_level_0_alone():
    mark = Watermark("s2#a", (("internal", 0, 12.5),), (("internal", 2),), (), ((0, 1, 11.0), (0, 2, 10.0)))
    data = mark.encode()
    assert records.decode(data) == mark
    assert orjson.loads(data)["c"] == [[0, 1, 11.0], [0, 2, 10.0]]
    # a reader of the version before only reads p, s, n and i: the same record without the level marks
    older = {key: value for key, value in orjson.loads(data).items() if key != "c"}
    assert records.from_mapping(older) == Watermark("s2#a", mark.progress, mark.topics)


def test_level_rows_travel_beside_level_0_and_are_never_an_input_partition():
    assert records.level_row("internal", 3, 0) == ("internal", 3)
    assert records.level_row("internal", 3, 2) == ("internal#2", 3)
    assert records.split_row(("internal#2", 3)) == (("internal", 3), 2)
    assert records.split_row(("auth", 1)) == (("auth", 1), 0)


@pytest.mark.parametrize("change", [
    {"c": None}, {"c": [[0, 1]]}, {"c": [[0, 0, 1.0]]}, {"c": [[0, 65, 1.0]]}, {"c": [[-1, 1, 1.0]]},
    {"c": [[0, 1, "x"]]}, {"c": [[0, True, 1.0]]}, {"c": [[0, 1, float("inf")]]},
])
def test_hostile_level_marks_get_a_record_error(change: dict[str, Any]):
    with pytest.raises(RecordError):
        records.from_mapping({"v": 2, "k": "w", "p": "x", "s": [], "n": [], **change})


@pytest.mark.parametrize("change", [
    {"s": None}, {"s": [["t", 0]]}, {"s": [["t", -1, 1.0]]}, {"s": [["t", 0, "x"]]}, {"s": [[5, 0, 1.0]]},
    {"s": [["t", 0, 1.0]] * 4097}, {"n": [["t", True]]}, {"n": [["t"]]}, {"p": ""},
])
def test_hostile_watermarks_get_a_record_error(change: dict[str, Any]):
    with pytest.raises(RecordError):
        records.from_mapping({"v": 1, "k": "w", "p": "x", "s": [["t", 0, 1.0]], "n": [["t", 1]], **change})


def test_another_version_is_refused_with_a_clear_error():
    data = orjson.dumps({"v": 3, "k": "w", "p": "x", "s": [], "n": []})
    with pytest.raises(RecordError, match=r"version 3 is not supported .*same pipesentry version"):
        records.decode(data)
    with pytest.raises(RecordError, match="version True"):
        records.decode(orjson.dumps({"v": True, "k": "w", "p": "x", "s": [], "n": []}))


def test_a_version_1_record_one_to_a_message_is_still_read():
    spec = ssh_spec()
    record = records.build(spec, [spec.slots[0].rule_id], {"hostname": "h1"}, 1.0, Origin("t", 0, 5))
    assert record is not None
    old = orjson.loads(record.encode())
    assert old["v"] == records.VERSION == 2
    old["v"] = 1
    assert records.decode(orjson.dumps(old)) == records.decode(record.encode())


def test_records_pack_into_messages_of_lines_in_order_within_the_bound():
    lines = [orjson.dumps({"n": i, "pad": "x" * 40}) for i in range(20)]
    messages = records.pack(lines, limit=200)
    assert all(len(m) <= 200 for m in messages) and len(messages) > 1
    assert b"\n".join(messages).split(b"\n") == lines  # every line once, in order
    assert records.pack([]) == [] and records.pack(lines[:1]) == lines[:1]
    assert records.pack([b"x" * 300], limit=200) == [b"x" * 300]  # one record always makes a message
    spec = ssh_spec()
    built = [records.build(spec, [spec.slots[0].rule_id], {"hostname": f"h{i}"}, 1.0, Origin("t", 0, i))
             for i in range(3)]
    assert records.unpack(records.pack([r.encode() for r in built if r is not None])[0]) == [
        records.decode(r.encode()) for r in built if r is not None]


def test_the_partition_of_a_key_is_kafkas_default_partitioners():
    from aiokafka.partitioner import DefaultPartitioner

    keys = [b"", b"a", b"ab", b"abc", b"abcd", b"ssh|[\"bastion-1\"]", bytes(range(256))]
    for key in keys:
        for count in (1, 2, 3, 12):
            assert records.partition_for(key, count) == DefaultPartitioner()(key, list(range(count)), [])


@settings(max_examples=500, deadline=None)
@given(key=st.binary(max_size=300), count=st.integers(1, 64))
def test_murmur2_and_the_partition_are_aiokafkas_for_any_key(key: bytes, count: int) -> None:
    from aiokafka.partitioner import DefaultPartitioner, murmur2

    assert records.murmur2(key) == murmur2(key)
    assert records.partition_for(key, count) == DefaultPartitioner()(key, list(range(count)), [])


def test_a_record_over_the_bound_is_refused_when_built_and_when_read():
    spec = ssh_spec()
    record = records.build(spec, [spec.slots[0].rule_id], {"hostname": "h" * records.MAX_RECORD_BYTES}, 1.0,
                           Origin("t", 0, 0))
    assert record is not None
    with pytest.raises(RecordTooLarge):
        record.encode()
    with pytest.raises(RecordError, match="exceeds"):
        records.decode(b" " * (records.MAX_RECORD_BYTES + 1))


GOOD: dict[str, Any] = {"v": 1, "k": "c", "id": "c1", "r": ["r1"], "t": 1.0, "o": ["t", 0, 5], "f": {"h": "x"}}


@pytest.mark.parametrize("change", [
    {"k": "z"}, {"t": float("nan")}, {"t": True}, {"t": "1"}, {"id": ""}, {"id": 5}, {"id": "x" * 600},
    {"r": []}, {"r": "r1"}, {"r": [1]}, {"r": ["r"] * 65}, {"o": ["t", -1, 5]}, {"o": ["t", 0]},
    {"o": ["t", 0, True]}, {"o": ["t", 0, 2 ** 64]}, {"o": [None, 0, 1]}, {"f": []},
    {"f": {str(i): i for i in range(65)}},
])
def test_hostile_records_get_a_record_error(change: dict[str, Any]):
    with pytest.raises(RecordError):
        records.from_mapping({**GOOD, **change})


@pytest.mark.parametrize("data", [None, b"", b"{", b"[]", b"null", b'"x"', b"\xff\xfe", b'{"v":1}'])
def test_junk_bytes_get_a_record_error(data: bytes | None):
    with pytest.raises(RecordError):
        records.decode(data)


def test_a_good_record_decodes():
    record = records.from_mapping(GOOD)
    assert isinstance(record, StateRecord) and record.origin == Origin("t", 0, 5)
    assert records.from_mapping({**GOOD, "o": ["t", 0, 5, "k"]}).origin.key == "k"  # type: ignore[union-attr]


def chained_specs(tmp_path: Any) -> dict[str, Any]:
    from tests.support.fixtures import rule_text

    (tmp_path / "chained.yml").write_text(rule_text("chained_sources_per_user"))
    return specs([tmp_path / "chained.yml"])


def test_a_child_alert_becomes_a_record_of_its_parent_keyed_by_the_parents_group(tmp_path):
    by_title = chained_specs(tmp_path)
    child, parent = by_title["Failed Logins From One Source"], by_title["One User Attacked From Several Sources"]
    # the child's records carry what the parent reads from the firing event
    assert records.chain_fields(list(by_title.values())) == {child.info.id: ("user",)}
    event = {"src_ip": "198.51.100.7", "user": "Alice", "message": "x" * 100}
    rule = child.slots[0].rule_id
    base = records.build(child, [rule], event, 1.0, Origin("auth", 0, 1), extra=("user",))
    assert base is not None and base.fields == {"src_ip": "198.51.100.7", "user": "Alice"}
    assert base.key() == child.info.id.encode() + b'|["198.51.100.7"]'
    # the child's alert, re-keyed: rule = the child, evidence = its alert key, key = the parent's group
    context = {"src_ip": "198.51.100.7", "event_count": 3, "user": "Alice"}
    chained = records.build(parent, [child.info.id], context, 2.0, Origin("state", 1, 9, "0"), ref="k|1")
    assert chained is not None and chained.fields == {"user": "Alice"} and chained.rules == (child.info.id,)
    assert chained.key() == parent.info.id.encode() + b'|["alice"]'
    back = records.decode(chained.encode())
    assert isinstance(back, StateRecord) and back.ref == "k|1" and back.origin == Origin("state", 1, 9, "0")
    # a base rule never feeds a correlation slot, nor a child alert a base slot
    assert records.build(parent, [rule], event, 1.0, Origin("auth", 0, 1)) is None
    assert records.build(child, [child.info.id], context, 1.0, Origin("auth", 0, 1), ref="k") is None


ANOMALY: dict[str, Any] = {"v": 2, "k": "a", "id": "k1", "t": 2.0, "o": ["t", 1, 7], "f": {"host": "h"},
                           "s": ["linux", None, "auth"], "m": 1}
_ODD = [None, True, False, -1, 0, 1, 2, 2 ** 63 - 1, 2 ** 63, 0.0, 1.0, 2.0, 0.5, float("nan"), float("inf"), "", "1",
        "x" * 249, "x" * 250, "x" * 512, "x" * 513, [], {}]
"""Values around every bound and of every type the inline checks look at."""
_ITEMS = st.sampled_from(["t", "k", "r", *_ODD])
_CHANGES = {
    "v": st.sampled_from([1, 2, 3, 0, True, 1.0, 2.0, "2", None]),
    "k": st.sampled_from(["c", "a", "w", "z", None]),
    "id": st.sampled_from(["c1", *_ODD]),
    "r": st.one_of(st.lists(_ITEMS, max_size=3), st.sampled_from([["r"] * 64, ["r"] * 65, "r1"])),
    "t": st.sampled_from(_ODD),
    "o": st.one_of(st.lists(_ITEMS, min_size=2, max_size=5), st.tuples(st.just("t"), _ITEMS, _ITEMS).map(list),
                   st.tuples(st.just("t"), st.just(0), st.just(1), _ITEMS).map(list), st.sampled_from(_ODD)),
    "f": st.sampled_from([{"a": 1}, {str(i): i for i in range(64)}, {str(i): i for i in range(65)}, *_ODD]),
    "x": st.sampled_from(["p|k", *_ODD]),
    "s": st.one_of(st.lists(_ITEMS, max_size=4), st.sampled_from(_ODD)),
    "m": st.sampled_from(_ODD),
}
"""Per field, values of every type the inline checks look at, around their bounds (valid ones too)."""


def _outcome(doc: Any) -> str:
    """What reading ``doc`` gives: the record's ``repr`` (types included: ``True`` is not ``1``) or the error."""
    try:
        return repr(records.from_mapping(doc))
    except RecordError as exc:
        return f"{type(exc).__name__}: {exc}"


def _checked_outcome(doc: Any) -> str:
    try:
        return repr(records._checked(doc))
    except RecordError as exc:
        return f"{type(exc).__name__}: {exc}"


BASES = [GOOD, {**GOOD, "v": 2, "x": "parent|key", "o": ["t", 0, 5, "3"]}, ANOMALY, {**ANOMALY, "s": None, "m": None}]
_SINGLE = ["t", "k", "r", *_ODD]


@pytest.mark.parametrize("base", BASES)
def test_the_inline_reader_agrees_with_the_checked_one_on_every_single_field_change(base: dict[str, Any]) -> None:
    """Every field of a good record set to every odd value, and in origins, rules and log sources
    every item: the inline reader's outcome is the field-by-field reader's."""
    docs: list[Any] = [base, [base], {**base, "extra": 1}]
    for key in _CHANGES:
        docs.append({k: v for k, v in base.items() if k != key})
        docs += [{**base, key: value} for value in ["c", "a", "w", 1, 2, *_ODD]]
        if isinstance(base.get(key), list):
            for index in range(len(base[key]) + 1):
                docs += [{**base, key: [*base[key][:index], value, *base[key][index + 1:]]} for value in _SINGLE]
    for doc in docs:
        assert _outcome(doc) == _checked_outcome(doc), doc


@settings(max_examples=1000, deadline=None)
@given(base=st.sampled_from(BASES),
       changes=st.lists(st.sampled_from(sorted(_CHANGES)).flatmap(lambda key: st.tuples(st.just(key), _CHANGES[key])),
                        max_size=2),
       drop=st.lists(st.sampled_from(sorted(_CHANGES)), max_size=2))
def test_the_inline_reader_reads_and_refuses_exactly_what_the_checked_one_does(
        base: dict[str, Any], changes: list[tuple[str, Any]], drop: list[str]) -> None:
    """Stage 2's hot path (:func:`records.from_mapping`'s inline checks) against the field-by-field reader."""
    doc = {key: value for key, value in {**base, **dict(changes)}.items() if key not in drop}
    assert _outcome(doc) == _checked_outcome(doc)


# --- stage 1's planned builders against the plain ones they replace ------------------------------

_VALUES = st.one_of(st.sampled_from(["Web-1", "web-1", "", "x", "1", "failure"]), st.integers(-2, 2), st.booleans(), st.none(),
                    st.floats(allow_nan=True, allow_infinity=True), st.just([]), st.lists(st.sampled_from(["a", 1]),
                                                                                          max_size=2))
_NAMES = st.sampled_from(["host", "HOST", "Host", "user.name", "user", "src", "pid", "outcome", "ts"])
_EVENTS = st.recursive(st.dictionaries(_NAMES, _VALUES, max_size=6),
                       lambda inner: st.dictionaries(_NAMES, st.one_of(_VALUES, inner), max_size=6), max_leaves=12)
"""Events whose field names collide in case, in dots against nesting, and hold every kind of value."""


def _build_reference(how: records.Plan, event: dict[str, Any], ts: float, origin: Origin) -> Any:
    """:func:`records.build_planned` as it was: every field read with :func:`get`."""
    from detectors.correlation.fields import key_part
    from detectors.event import MISSING, get

    fields: dict[str, Any] = {}
    for name in how.names:
        value = get(event, name)
        if value is MISSING:
            return None
        fields[name] = value
    group = tuple(key_part(fields[name]) for name in how.first)
    for name in how.extra:
        if name not in fields:
            value = get(event, name)
            if value is not MISSING:
                fields[name] = value
    return StateRecord(how.correlation, how.rules, ts, origin, fields, group)


@settings(max_examples=400, deadline=None)
@given(event=_EVENTS, first=st.sampled_from([("host",), ("host", "user.name"), ()]),
       values=st.sampled_from([(), ("pid",), ("user.name",)]), extra=st.sampled_from([(), ("src", "HOST")]))
def test_a_planned_record_is_the_one_every_field_read_with_get_gives(
        event: dict[str, Any], first: tuple[str, ...], values: tuple[str, ...], extra: tuple[str, ...]) -> None:
    how = records.Plan("c1", tuple(dict.fromkeys((*first, *values))), first, ("r1",), extra)
    origin = Origin("t", 0, 1)
    built, expected = records.build_planned(how, event, 5.0, origin), _build_reference(how, event, 5.0, origin)
    assert repr(built) == repr(expected)


PLANNED_CHECKS = """
checks:
  - {id: burst, type: threshold, by: [host], selection: {outcome: failure}, count: 5, window: 5m}
  - {id: burst-all, type: threshold, by: [host], count: 5, window: 5m}
  - {id: share, type: ratio, by: [host, user.name], selection: {outcome: failure}, max_ratio: 0.5, window: 2m}
  - {id: silent, type: silence, by: [_source, host], timeout: 3m}
  - {id: users, type: cardinality, by: [HOST], field: user.name, max_distinct: 3, window: 10m}
  - {id: new, type: new_value, by: [host], fields: [user, src], learning: 60s}
  - {id: pid, type: metric, by: [host], field: pid, timestamp_field: ts}
  - {id: volume, type: volume, by: [_source], interval: 1m}
"""


def _checks() -> list[Any]:
    from detectors.anomaly import AnomalyEngine
    from detectors.anomaly.spec import parse_checks

    specs, errors = parse_checks(PLANNED_CHECKS)
    assert not errors
    engine = AnomalyEngine(specs)
    assert not engine.errors and len(engine.checks) == 8
    return list(engine.checks.values())


CHECK_OBJECTS = _checks()


def _anomaly_reference(check: Any, event: dict[str, Any], ts: float, origin: Origin, logsource: Any) -> Any:
    """:func:`records.build_anomaly` as it was, before its plans."""
    from detectors.anomaly.keys import SOURCE_FIELD, key_text, source_text
    from detectors.anomaly.threshold import RatioCheck, ThresholdCheck
    from detectors.event import MISSING, get

    selected = None
    if isinstance(check, ThresholdCheck):
        if check.matcher is not None and not check.matcher(event):
            return None
    elif isinstance(check, RatioCheck):
        selected = check.matcher(event)
    group: list[str] = []
    fields: dict[str, Any] = {}
    keyed_by_source = False
    for name in check.by:
        if name == SOURCE_FIELD:
            keyed_by_source = True
            group.append(source_text(logsource))
            continue
        value = get(event, name)
        if value is MISSING:
            return None
        fields[name] = value
        group.append(key_text(value)[0])
    for name in records.read_fields(check.spec):
        if name not in fields:
            value = get(event, name)
            if value is not MISSING:
                fields[name] = value
    source = None
    if keyed_by_source:
        source = (None, None, None) if logsource is None else (logsource.product, logsource.category,
                                                                  logsource.service)
    return records.AnomalyRecord(check.spec.id, ts, origin, fields, source, selected, tuple(group))


@settings(max_examples=300, deadline=None)
@given(event=_EVENTS, logsource=st.sampled_from([None, LogSource(product="linux", service="auth")]))
def test_a_planned_anomaly_record_is_the_one_the_check_itself_would_give(event: dict[str, Any], logsource: Any) -> None:
    origin = Origin("t", 0, 1)
    for check in CHECK_OBJECTS:
        built = records.build_anomaly(check, event, 5.0, origin, logsource)
        assert repr(built) == repr(_anomaly_reference(check, event, 5.0, origin, logsource)), check.spec.id
