"""The native screen: what it clears, what it must hand to Python, and the event time it reads.

Every engine test's matching events are also checked against the screen (see
``tests.support.sigma.agree``); these tests pin the cases where it must
defer to Python, and that it does clear ordinary non-matching events.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from detectors.model import LogSource
from detectors.sigma.screen import AVAILABLE, export_plan
from detectors.sigma.screen_abi import CheckKind
from service.decoders import DecodeError
from service.decoders.json import parse_object
from service.sources.base import Item
from tests.support.kafka import Record
from tests.support.sigma import build, rule_yaml

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the native screen is not built (no Rust toolchain)")

LS = LogSource(product="test")


def scan(detection: dict[str, Any], *events: Any, time_fields: list[str] | None = None,
         fallbacks: list[int] | None = None, max_bytes: int = 1 << 20, max_depth: int = 64,
         ) -> tuple[list[int], list[float]]:
    screen = build(rule_yaml(detection)).screen(LS)
    assert screen is not None
    raws = [e if isinstance(e, bytes) or e is None else orjson.dumps(e) for e in events]
    return screen.scan(raws, fallbacks or [0] * len(raws), time_fields, max_bytes, max_depth)


CASES = [
    ({"sel": {"Image": "C:\\Tools\\PsExec.exe"}, "condition": "sel"},
     {"Image": "c:\\tools\\psexec.EXE"}, {"Image": "c:\\tools\\psexec.exe.bak"}),
    ({"sel": {"CommandLine|contains": "-enc "}, "condition": "sel"},
     {"CommandLine": "powershell -ENC abc"}, {"CommandLine": "powershell -encoded"}),
    ({"sel": {"url|startswith": "/admin"}, "condition": "sel"}, {"url": "/ADMIN/x"}, {"url": "/x/admin"}),
    ({"sel": {"url|endswith": ".php"}, "condition": "sel"}, {"url": "/a.PHP"}, {"url": "/a.php?x"}),
    ({"sel": {"path": "/etc/*/sh?dow"}, "condition": "sel"}, {"path": "/etc/x/y/shadow"}, {"path": "/etc/shadow"}),
    ({"sel": {"user|cased": "Admin"}, "condition": "sel"}, {"user": "Admin"}, {"user": "admin"}),
    ({"sel": {"agent|re": "^curl/[0-9]+"}, "condition": "sel"}, {"agent": "curl/8.1"}, {"agent": "xcurl/8"}),
    ({"sel": {"n": 4}, "condition": "sel"}, {"n": 4.0}, {"n": 40}),
    ({"sel": {"ok": True}, "condition": "sel"}, {"ok": "TRUE"}, {"ok": False}),
    ({"kw": ["mimikatz"], "condition": "kw"}, {"a": {"b": ["x", "run MIMIKATZ now"]}}, {"a": "mimi katz"}),
    ({"sel": {"a.b": "x"}, "condition": "sel"}, {"A": {"B": "X"}}, {"a": {"c": "x"}}),
    ({"sel": {"a": "x"}, "flt": {"b": "y"}, "condition": "sel and not flt"}, {"a": "x", "b": "z"}, {"a": "z"}),
]


@pytest.mark.parametrize(("detection", "hit", "miss"), CASES)
def test_matching_events_go_to_python_and_others_are_cleared(detection, hit, miss):
    ruleset = build(rule_yaml(detection))
    assert ruleset.evaluate(hit, LS) and not ruleset.evaluate(miss, LS)
    assert scan(detection, hit, miss)[0] == [0]


def test_candidates_are_dropped_when_their_whole_condition_is_false():
    """Rules whose every atom the screen can evaluate run as programs; others stay candidates."""
    negated = {"sel": {"a": "x"}, "flt": {"b": "y"}, "condition": "sel and not flt"}
    assert scan(negated, {"a": "x", "b": "y"}, {"a": "x", "b": "z"})[0] == [1]
    numeric = {"sel": {"a": "x"}, "flt": {"n|gt": 5}, "condition": "sel and not flt"}
    assert scan(numeric, {"a": "x", "n": 9})[0] == [0]  # |gt is Python's: a candidate goes to Python


@pytest.mark.parametrize(("detection", "events", "picked"), [
    # negation-only rules (no trigger) run on every event
    ({"flt": {"Image|contains": "\\"}, "condition": "not flt"},
     [{"Image": "C:\\x.exe"}, {"Image": "x.exe"}, {}], [1, 2]),
    ({"n": {"Image": None}, "condition": "not n"}, [{"Image": None}, {"Image": []}, {"Image": {}}, {"Image": "a"}],
     [2, 3]),
    ({"e": {"Image|exists": True}, "condition": "not e"}, [{"Image": None}, {"x": 1}], [1]),
    ({"r": {"Image|fieldref": "ParentImage"}, "condition": "r"},
     [{"Image": "A", "ParentImage": "a"}, {"Image": "a", "ParentImage": "b"}, {"Image": ["b", "a"], "ParentImage": "A"}],
     [0, 2]),
])
def test_null_exists_fieldref_and_negations_are_exact(detection, events, picked):
    ruleset = build(rule_yaml(detection))
    assert [i for i, e in enumerate(events) if ruleset.evaluate(e, LS)] == picked
    assert scan(detection, *events)[0] == picked


def test_exact_evaluation_defers_duplicated_keys_and_deep_nesting():
    """Python keeps the last of duplicated keys and stops flattening deep objects."""
    negation = {"flt": {"Image|contains": "\\"}, "condition": "not flt"}
    assert scan(negation, b'{"Image": "a", "Image": "C:\\\\x"}')[0] == [0]
    deep: Any = {"Image": "C:\\x"}
    for _ in range(40):
        deep = {"d": deep, "Image": "C:\\y"}
    assert scan(negation, deep)[0] == [0]


SEL = {"sel": {"CommandLine|contains": "whoami"}, "condition": "sel"}


@pytest.mark.parametrize("raw", [
    '{"CommandLine": "\ua7cbwhoami"}'.encode(),  # uncased for Python 3.11, lower-cased by Rust
    b'{"CommandLine": 1e400}',  # orjson rejects a number past the largest double
    b'{"CommandLine": "x"',  # invalid JSON: Python dead-letters it
    b'[{"CommandLine": "x"}]',  # not an object
    b'{"CommandLine": "\xff"}',  # invalid UTF-8
    b'{"a": NaN}',
    None,  # tombstone
], ids=["unicode15", "overflow", "truncated", "array", "utf8", "nan", "tombstone"])
def test_what_the_screen_cannot_decide_goes_to_python(raw):
    assert scan(SEL, raw)[0] == [0]


def test_latin_greek_cyrillic_values_are_folded_as_python_does():
    assert scan(SEL, {"CommandLine": "CAFÉ WHOAMI"}, {"CommandLine": "café ΣΟΦΊΑ"})[0] == [0]
    greek = {"sel": {"v|contains": "σοφία"}, "condition": "sel"}
    assert scan(greek, {"v": "ΣΟΦΊΑ"}, {"v": "ΣΟΦΟΣ"})[0] == [0]


def test_non_ascii_values_leave_globs_and_regexes_to_python():
    glob = {"sel": {"path": "/etc/sh?dow"}, "condition": "sel"}  # "?": one character, not one byte
    assert build(rule_yaml(glob)).evaluate({"path": "/etc/shädow"}, LS)
    assert scan(glob, {"path": "/etc/shädow"}, {"path": "/etc/shadow-"})[0] == [0]
    word = {"sel": {"v|re": "^\\w+$"}, "condition": "sel"}  # RE2's \w is ASCII, Rust's Unicode
    assert scan(word, {"v": "ä"}, {"v": "a b"})[0] == [0]


def test_cached_verdicts_belong_to_their_field():
    detection = {"a": {"a": "x"}, "b": {"b|contains": "y"}, "condition": "a or b"}
    assert scan(detection, {"a": "x"}, {"b": "x"}, {"a": "x"}, {"b": "xyz"})[0] == [0, 2, 3]


def test_verdicts_hold_while_the_value_cache_rests_from_values_that_never_repeat():
    """Unique values turn a field's cache lookups off for a while (and repeated ones back on):
    whichever way a value is scanned, the events picked are those that match, and events decided
    alike get equal decisions (one Python object may serve them)."""
    detection = {"sel": {"CommandLine|contains": "whoami"}, "condition": "sel"}
    events = [{"CommandLine": f"{n:020x}" + (" whoami" if n % 7 == 0 else "")} for n in range(5000)]
    events += [{"CommandLine": "cmd /c whoami"}, {"CommandLine": "ls"}] * 1500
    want = [n for n, event in enumerate(events) if "whoami" in event["CommandLine"]]
    screen = build(rule_yaml(detection)).screen(LS)
    assert screen is not None
    for start in range(0, len(events), 1000):  # batches, as inputs hand them over (one cache)
        raws = [orjson.dumps(event) for event in events[start:start + 1000]]
        picked = screen.scan(raws, [0] * len(raws), None, 1 << 20, 64)[0]
        assert picked == [n - start for n in want if start <= n < start + 1000]
    alike = [orjson.dumps({"CommandLine": "cmd /c whoami", "n": n}) for n in range(3)]
    picked, _, decisions = screen.decide(alike, [0, 0, 0], None, 1 << 20, 64)
    assert picked == [0, 1, 2] and decisions[0] == decisions[1] == decisions[2]


def test_unscanned_fields_are_not_read_closely():
    assert scan(SEL, {"Other": "café", "n": 1.5, "CommandLine": "ls"})[0] == []


def test_limits_match_the_json_decoder():
    deep: Any = "x"
    for _ in range(10):
        deep = {"d": deep}
    for max_depth in (9, 10):
        try:
            parse_object(orjson.dumps(deep), max_depth, 1 << 20)
            rejected = False
        except DecodeError:
            rejected = True
        assert scan(SEL, deep, max_depth=max_depth)[0] == ([0] if rejected else [])
    assert scan(SEL, deep, max_depth=9)[0] == [0]
    assert scan(SEL, {"CommandLine": "ls"}, max_bytes=10)[0] == [0]


def test_rust_regex_defers_where_re2_reads_otherwise():
    vertical_tab = {"sel": {"v|re": "a\\Sb"}, "condition": "sel"}
    assert scan(vertical_tab, {"v": "a\x0bb"}, {"v": "acb"}, {"v": "a b"})[0] == [0, 1]
    literal_braces = {"sel": {"v|re": "x{,3}y"}, "condition": "sel"}  # RE2: the text "x{,3}y"
    assert scan(literal_braces, {"v": "zz"})[0] == [0]


TIME_FIELDS = ["@timestamp", "event.created", "time"]


@pytest.mark.parametrize("event", [
    {"@timestamp": "2026-11-25T10:00:00Z"},
    {"@timestamp": "2026-11-25T10:00:00.123Z"},
    {"@timestamp": "2026-11-25 10:00:00.123456+02:00"},
    {"@timestamp": "2026-11-25T10:00:00-05:30"},
    {"@timestamp": "2024-02-29T23:59:59"},
    {"@timestamp": 1764064800},
    {"@timestamp": 1764064800123},
    {"@timestamp": 1764064800.25},
    {"@timestamp": 964507291.3629067},  # serde_json's fast float parser was one ulp off
    {"time": 1033240923521.2123},
    {"@timestamp": None, "event": {"created": "2026-01-01T00:00:00Z"}},
    {"event.created": 5, "event": {"created": 7}},
    {"@timestamp": True, "time": 1000},
    {"@timestamp": {"nested": 1}, "time": -5},
    {"@timestamp": -1},
    {"other": 1},
])
def test_cleared_event_time_is_the_python_paths(event):
    picked, latest = scan(SEL, event, time_fields=TIME_FIELDS, fallbacks=[1_700_000_000_999])
    assert picked == []
    want = Item(event, ("t", 0, 0), LS, tuple(TIME_FIELDS), 1_700_000_000.999).time()
    assert latest == [want]


@pytest.mark.parametrize("value", [
    "1764064800",  # numeric text: Python's float() reads more than the screen does
    "2026-11-25T10:00:00.1234567Z",
    " 2026-11-25T10:00:00Z",
    "2026-02-30T10:00:00Z",
    "yesterday",
])
def test_time_values_the_screen_does_not_read_go_to_python(value):
    assert scan(SEL, {"@timestamp": value}, time_fields=TIME_FIELDS)[0] == [0]


def test_duplicated_parent_of_a_dotted_time_field_goes_to_python():
    raw = b'{"event": {"created": 5}, "event": 3}'
    assert scan(SEL, raw, time_fields=TIME_FIELDS)[0] == [0]


def test_runs_report_their_latest_time_around_picked_events():
    events = [{"time": 5}, {"time": 9}, {"CommandLine": "whoami", "time": 1}, {"time": 3},
              {"CommandLine": "whoami"}]
    picked, latest = scan(SEL, *events, time_fields=TIME_FIELDS)
    assert picked == [2, 4]
    assert latest[:2] == [9.0, 3.0] and math.isnan(latest[2])


# --- in the Kafka loop: the same alerts with and without the screen ---------------------------


@pytest.mark.parametrize(("pattern", "value"), [
    ("a[b&&c]", "a&"),  # Rust: class intersection; RE2: the characters b & c
    ("a[b~~c]", "a~"),
    ("[a[b]]", "[]"),  # Rust: nested class; RE2: "[a[b]" then "]"
    ("x{,2}y", "x{,2}y"),  # RE2: literal text
    ("x{ 2}", "x{ 2}"),
    ("a\\<b", "a<b"),  # Rust: start of word; RE2: "<"
    ("a\\b{start}", "a{start}"),
])
@pytest.mark.filterwarnings("ignore:Possible set:FutureWarning")  # Python re on "&&", "~~", "[["
def test_regexes_rust_reads_otherwise_are_assumed(pattern, value):
    from detectors.sigma.screen import same_in_rust

    assert not same_in_rust(pattern)
    detection = {"sel": {"v|re": pattern}, "condition": "sel"}
    ruleset = build(rule_yaml(detection))
    if ruleset.evaluate({"v": value}, LS):  # RE2's reading (the engine may run it on Python re)
        assert scan(detection, {"v": value})[0] == [0]
    plan = export_plan(ruleset._route(LS).index, ruleset._atoms)
    assert [check.kind for check in plan.checks] == [CheckKind.ASSUME]


def test_regexes_both_read_alike_are_run_by_the_screen():
    from detectors.sigma.screen import same_in_rust

    for pattern in ("-(W|R)\\s?([0-9a-f]{2}){2,20}", "[[:alpha:]]+x", "[]a]b", "\\{x\\}", "a{2}b{3,}"):
        assert same_in_rust(pattern), pattern
    assert scan({"sel": {"v|re": "[]a]b{2,}"}, "condition": "sel"}, {"v": "]bb"}, {"v": "ab"})[0] == [0]


def test_a_hostile_value_for_a_backtracking_glob_is_handed_to_python():
    """Past a work budget the screen assumes the glob holds; Python's RE2 glob is linear."""
    detection = {"sel": {"v": "*a*a*a*a*a*a*a*a*a*ab*c"}, "condition": "sel"}
    assert scan(detection, {"v": "a" * 500_000 + "b"}, max_bytes=1 << 21)[0] == [0]
    assert scan(detection, {"v": "a" * 100 + "b"})[0] == []  # small values are matched exactly


def test_records_are_read_as_the_lists_are():
    """``scan_records`` reads ``value`` and ``timestamp`` itself; same answers as ``scan``."""
    screen = build(rule_yaml(SEL)).screen(LS)
    values = [orjson.dumps({"time": 5}), orjson.dumps({"CommandLine": "whoami"}), orjson.dumps({"x": 1}), None]
    records = [Record(v, None, i, 7000 + i, []) for i, v in enumerate(values)]
    by_records = screen.scan_records(records, TIME_FIELDS, 1 << 20, 64)
    by_lists = screen.scan(values, [r.timestamp for r in records], TIME_FIELDS, 1 << 20, 64)
    assert repr(by_records) == repr(by_lists)  # NaN (an empty run) compares by its text
    assert by_records[0] == [1, 3] and by_records[1][:2] == [5.0, 7.002]


def test_a_route_where_a_rule_may_match_without_any_value_hands_every_message_to_python():
    """``not`` over a numeric comparison (not evaluated by the screen) may hold for any event: nothing is cleared."""
    detection = {"sel": {"count|gt": 5}, "condition": "not sel"}
    ruleset = build(rule_yaml(detection))
    assert export_plan(ruleset._route(LS).index, ruleset._atoms).undecided == [0]
    assert scan(detection, {"count": 7}, {"x": 1}, b"not json")[0] == [0, 1, 2]
    # deciding, the rule is left to Python on every message it reads (not on the one it cannot)
    screen = ruleset.screen(LS)
    assert screen is not None
    values = [orjson.dumps({"count": 7}), orjson.dumps({"x": 1}), b"not json"]
    picked, _, decisions = screen.decide(values, [0, 0, 0], None, 1 << 20, 64)
    assert picked == [0, 1, 2] and decisions == [([], [0], []), ([], [0], []), None]
    for value, decision in zip(values[:2], decisions[:2], strict=True):
        assert decision is not None
        event = orjson.loads(value)
        assert ruleset.evaluate_decided(event, screen.rules, decision, LS) == ruleset.evaluate(event, LS)


@pytest.mark.parametrize(("value", "decision"), [
    ("10.1.2.3", ([], [])),  # in the network: "not sel" is false
    ("11.1.2.3", ([0], [])),
    ("010.1.2.3", ([0], [])),  # no address for Python (leading zero)
    ("::1", ([0], [])),  # an IPv6 address is not in an IPv4 network
    (" 10.1.2.3", ([], [0])),  # Python strips it: left to Python
    (None, ([0], [])),
])
def test_networks_are_decided_by_the_screen(value, decision):
    """``not`` over a ``|cidr`` test: the screen reads IPv4 addresses as ``ipaddress`` does and
    decides the rule (IPv6 candidates of an IPv6 network, and values Python would strip, are Python's)."""
    ruleset = build(rule_yaml({"sel": {"agent|cidr": "10.0.0.0/8"}, "condition": "not sel"}))
    screen = ruleset.screen(LS)
    assert screen is not None
    event = {"agent": value} if value is not None else {"x": 1}
    picked, _, decisions = screen.decide([orjson.dumps(event)], [0], None, 1 << 20, 64)
    assert (decisions[0][:2] if picked else ([], [])) == decision
    if picked:
        assert decisions[0] is not None
        assert ruleset.evaluate_decided(event, screen.rules, decisions[0], LS) == ruleset.evaluate(event, LS)
    assert bool(ruleset.evaluate(event, LS)) == (value not in ("10.1.2.3", " 10.1.2.3"))


# --- numbers and keys read as the Python path reads them ------------------------------------


@pytest.mark.parametrize("number", [
    b"4.4102019666278236e+18",  # serde_json's fast float parser read 4410201966627823104
    b"4410201966627823616.0",
    b"9.007199254740993e15",
    b"9007199254740993.0",
    b"1.7976931348623157e308",
    b"1e23",
    b"-0.0",
    b"18446744073709551616",  # past u64: a float for orjson too
    b"-9223372036854775809",
    b"1e-400",
])
def test_numbers_are_read_exactly_as_orjson_reads_them(number):
    from detectors.sigma.text import as_text

    raw = b'{"n": %s}' % number
    text = as_text(orjson.loads(raw)["n"])
    detection = {"sel": {"n": text}, "condition": "sel"}
    assert build(rule_yaml(detection)).evaluate(orjson.loads(raw), LS)
    assert scan(detection, raw)[0] == [0]


def test_floats_hand_every_matching_text_to_python():
    """Seeded random integral doubles up to 2^63 and beyond, in several JSON spellings (where a
    parser that is not exactly rounding reads another integer): each event's rule is its text."""
    import random

    from detectors.sigma.text import as_text

    rng = random.Random(11)
    raws = []
    for _ in range(200):
        value = float(rng.randrange(2 ** rng.randrange(50, 70)))
        for spelling in (repr(value), f"{value:.16e}", f"{value:.17g}", f"{value:.20e}"):
            raws.append(b'{"n": %s}' % spelling.encode())
    texts = sorted({as_text(orjson.loads(raw)["n"]) for raw in raws})
    detection = {"sel": {"n": texts}, "condition": "sel"}
    ruleset = build(rule_yaml(detection))
    assert all(ruleset.evaluate(orjson.loads(raw), LS) for raw in raws)
    assert scan(detection, *raws)[0] == list(range(len(raws)))


def test_fractions_are_read_as_their_python_repr():
    """Seeded random doubles of every magnitude: a rule holds the Python text of every other one;
    the screen picks exactly the events whose text is in the rule (it reads fractions itself)."""
    import random
    import struct

    from detectors.sigma.text import as_text

    rng = random.Random(5)
    values = [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(300)]
    values += [rng.uniform(-1, 1) * 10.0 ** rng.randrange(-8, 17) for _ in range(300)]
    values += [0.1, 0.3, 1e-4, 1e-5, 0.1 + 0.2, 2.0 ** -1074, 1.5e-7, 4503599627370495.5]
    raws = [b'{"n": %s}' % repr(v).encode() for v in values if math.isfinite(v)]
    texts = [as_text(orjson.loads(raw)["n"]) for raw in raws]
    detection = {"sel": {"n": sorted(set(texts[::2]))}, "condition": "sel"}
    ruleset = build(rule_yaml(detection))
    matching = [i for i, raw in enumerate(raws) if ruleset.evaluate(orjson.loads(raw), LS)]
    assert len(matching) >= len(raws) // 2
    assert scan(detection, *raws)[0] == matching


@pytest.mark.parametrize("char", ["\ua7cb", "\ua7dc", "\U00010d50", "\U00016ea0", "\u1c89"])
def test_keys_whose_case_folding_changed_after_unicode_14_go_to_python(char):
    """Rust's case tables are newer than Python 3.11's: for these Python keeps the character."""
    field = f"{char}x"
    detection = {"sel": {field: "v"}, "condition": "sel"}
    event = {f"{char}X": "v"}
    assert build(rule_yaml(detection)).evaluate(event, LS)
    assert scan(detection, event)[0] == [0]
    negated = {"e": {f"{char.lower()}x|exists": True}, "condition": "not e"}
    assert scan(negated, {"x": 1}, event)[0] == [0, 1]


def test_later_scripts_are_screened_where_python_folds_them_alike():
    """CJK, Hebrew or Arabic keys and values have no case: the screen decides them itself."""
    detection = {"sel": {"用户.名前|contains": "管理者"}, "condition": "sel"}
    hit, miss = {"用户": {"名前": "שלום 管理者"}}, {"用户": {"名前": "مرحبا"}, "日志": "x"}
    assert build(rule_yaml(detection)).evaluate(hit, LS)
    assert scan(detection, hit, miss)[0] == [0]
    assert scan(SEL, {"日志": "日本", "CommandLine": "ls"})[0] == []


@pytest.mark.parametrize("value", ["ΑΣ\ua7cd", "ΑΣ\u1c8a x"])
def test_a_capital_sigma_beside_later_letters_goes_to_python(value):
    """Whether Σ is final depends on its neighbours' casing, which is newer in Rust's tables."""
    detection = {"sel": {"v|contains": "ας"}, "condition": "sel"}
    assert build(rule_yaml(detection)).evaluate({"v": value}, LS)
    assert scan(detection, {"v": value})[0] == [0]




def test_a_decision_of_another_screen_takes_the_full_python_path():
    """A decision names rules by position in its screen's route: one made by another ruleset's (or
    a rebuilt route's) screen is not trusted; the event is evaluated in full."""
    detection = {"sel": {"CommandLine|contains": "whoami"}, "condition": "sel"}
    first, second = build(rule_yaml(detection)), build(rule_yaml(detection))
    screen, other = first.screen(LS), second.screen(LS)
    assert screen is not None and other is not None
    event = {"CommandLine": "cmd /c whoami"}
    picked, _, decisions = screen.decide([orjson.dumps(event)], [0], None, 1 << 20, 64)
    assert picked == [0] and decisions == [([0], [], [(("CommandLine", "cmd /c whoami"),)])]
    assert first.evaluate_decided(event, screen.rules, ([0], []), LS) == first.evaluate(event, LS)
    # a stale decision ("no rule matches") from the other screen: not believed
    assert second.evaluate_decided(event, screen.rules, ([], []), LS) == second.evaluate(event, LS) != []


def _differential_events() -> list[bytes]:
    """Real-looking, garbage, deep, huge and non-ASCII messages for :func:`test_decided_matches_equal_python_s`."""
    import random

    rng = random.Random(19)
    words = ["whoami", "WHOAMI", "cmd", "10.1.2.3", "11.0.0.1", "x", "", "é", "Σ", "\u0130", "mimikatz", "7", "null"]
    out = [orjson.dumps(e) for e in (
        {"CommandLine": "cmd /c whoami", "agent": "11.1.2.3"}, {"agent": "10.1.2.3"}, {"x": 1}, {},
        {"CommandLine": ["a", "whoami"], "agent": None}, {"a": {"b": {"c": "mimikatz"}}},
        {"CommandLine": "x" * 200_000 + "whoami"}, {"CommandLine": "ÉCHO WHOAMI", "agent": "::1"},
    )]
    deep: Any = "whoami"
    for _ in range(70):
        deep = {"d": deep}
    out += [orjson.dumps(deep), b"not json", b"[1, 2]", b'{"CommandLine": "whoami"', b'{"a": 1, "a": 2}',
            b'{"CommandLine": "\\ud800"}', "{\"CommandLine\": \"caf\u00e9 whoami\"}".encode()]
    for _ in range(300):
        event = {rng.choice(["CommandLine", "agent", "a", "commandline", "n"]):
                 rng.choice([rng.choice(words), rng.randint(-3, 12), [rng.choice(words)], {"b": rng.choice(words)}])
                 for _ in range(rng.randint(0, 4))}
        out.append(orjson.dumps(event))
    return out


def test_decided_matches_equal_python_s() -> None:
    """Differential: over one route of rules with and without fields to show (``not`` only, keywords,
    networks, a field test), the matches made from each decision (or the full path where the screen
    gives none) are the Python engine's, fields included, on real, garbage, deep, huge and non-ASCII
    messages."""
    ruleset = build(
        rule_yaml({"sel": {"agent|cidr": "10.0.0.0/8"}, "condition": "not sel"}),
        rule_yaml({"sel": {"CommandLine|contains": "whoami"}, "condition": "sel"}),
        rule_yaml({"kw": ["mimikatz", "whoami"], "condition": "kw"}),
        rule_yaml({"sel": {"CommandLine|contains": "whoami"}, "flt": {"agent": "10.1.2.3"}, "condition": "not flt"}),
        rule_yaml({"sel": {"n|gt": 5}, "condition": "sel or not sel"}),
    )
    screen = ruleset.screen(LS)
    assert screen is not None
    values = _differential_events()
    picked, _, decisions = screen.decide(values, [0] * len(values), None, 1 << 20, 64)
    assert len(picked) > len(values) // 2
    for position, decision in zip(picked, decisions, strict=True):
        try:
            event = parse_object(values[position], 64, 1 << 20)
        except DecodeError:
            continue
        expected = [(m.rule.id, m.fields) for m in ruleset.evaluate(event, LS)]
        if decision is not None:
            got = [(m.rule.id, m.fields) for m in ruleset.evaluate_decided(event, screen.rules, decision, LS)]
            assert got == expected, values[position][:200]
    for position in set(range(len(values))) - set(picked):  # cleared: no rule matches
        try:
            event = parse_object(values[position], 64, 1 << 20)
        except DecodeError:
            continue
        assert ruleset.evaluate(event, LS) == []


def _shown(ruleset: Any, *events: Any) -> list[list[Any]]:
    """Per event, the fields the screen shows for each rule it decided to match, after checking
    them (value types included) against the Python engine's matches; None: left to Python."""
    screen = ruleset.screen(LS)
    assert screen is not None
    raws = [e if isinstance(e, bytes) else orjson.dumps(e) for e in events]
    picked, _, decisions = screen.decide(raws, [0] * len(raws), None, 1 << 20, 64)
    out: list[list[Any]] = []
    for position, decision in zip(picked, decisions, strict=True):
        assert decision is not None and len(decision) == 3, raws[position]
        event = parse_object(raws[position], 64, 1 << 20)
        python = {m.rule.id: m.fields for m in ruleset.evaluate(event, LS)}
        for at, fields in zip(decision[0], decision[2], strict=True):
            if fields is not None:
                want = python[screen.rules[at].info.id]
                assert [(name, type(value), repr(value)) for name, value in fields] == \
                    [(name, type(value), repr(value)) for name, value in want], raws[position]
        assert ruleset.evaluate_decided(event, screen.rules, decision, LS) == ruleset.evaluate(event, LS)
        out.append(decision[2])
    assert len(out) == len(raws), "every event is matched here"
    return out


SHOWN_FIELD = {"sel": {"CommandLine|contains": "who", "Image|endswith": ".exe"}, "condition": "sel"}


@pytest.mark.parametrize(("event", "fields"), [
    ({"CommandLine": "WHOAMI", "Image": "a.EXE"}, (("CommandLine", "WHOAMI"), ("Image", "a.EXE"))),
    # escapes, non-ASCII text folded alike, keys in another case, nested and dotted keys, lists
    (b'{"commandline": "\\u0077ho \\"\\u00e9\\" \\n", "IMAGE": "\\u00c9.exe"}',
     (("CommandLine", "who \"\u00e9\" \n"), ("Image", "\u00c9.exe"))),
    ({"CommandLine": ["x", "who1", "who2"], "Image": [1, "b.exe"]}, (("CommandLine", "who1"), ("Image", "b.exe"))),
    ({"commandLine": "\u03c3who", "image": "日本.exe"}, (("CommandLine", "\u03c3who"), ("Image", "日本.exe"))),
])
def test_decided_matches_carry_the_fields_python_shows(event: Any, fields: Any) -> None:
    """The screen gives the matched fields of the rules it decides to match (no flattening in
    Python): each positive atom's first satisfying value, as the decoder makes it."""
    assert _shown(build(rule_yaml(SHOWN_FIELD)), event) == [[fields]]


def test_shown_numbers_and_booleans_keep_their_python_types() -> None:
    ruleset = build(rule_yaml({"sel": {"n": [5, -5, "true", "1.5", "9223372036854775809"]}, "condition": "sel"}))
    events = [{"n": 5}, {"n": 5.0}, {"n": True}, {"n": 1.5}, b'{"n": [0, 9223372036854775809]}', {"n": ["5", 5]},
              b'{"n": 5e0}', b'{"n": 0.15e1}', {"n": -5}]
    shown = [fields for [fields] in _shown(ruleset, *events)]
    assert [[(type(v), v) for _, v in f] for f in shown] == [
        [(int, 5)], [(float, 5.0)], [(bool, True)], [(float, 1.5)], [(int, 9223372036854775809)], [(str, "5")],
        [(float, 5.0)], [(float, 1.5)], [(int, -5)]]


def test_a_negative_zero_is_shown_by_python() -> None:
    """``-0`` is an int for the decoder and ``-0.0`` a float: the screen reads both alike, so it
    leaves their fields to Python."""
    ruleset = build(rule_yaml({"sel": {"n": 0}, "condition": "sel"}))
    assert _shown(ruleset, b'{"n": -0}', b'{"n": -0.0}', b'{"n": 0}') == [[None], [None], [(("n", 0),)]]


def test_equal_pairs_are_shown_once_and_null_and_absent_fields_as_python_shows_them() -> None:
    ruleset = build(rule_yaml({"a": {"c|contains": "x"}, "b": {"c|endswith": "x"}, "n": {"gone": None},
                               "e": {"other|exists": False}, "condition": "a and b and n and e"}))
    [[fields]] = _shown(ruleset, {"c": ["yx", "x"]})
    assert fields == (("c", "yx"), ("gone", None), ("other", False))


@pytest.mark.parametrize("event", [
    {"first": "kw2", "message": "kw1"},  # the first string of the event, not the first keyword hit
    # paths that recur: Python reads strings path by path, the screen left them to it
    {"l": [{"m": "kw2"}, {"n": "kw1"}, {"m": "kw1"}]},
    {"m": "kw2", "M": "x", "o": "kw1", "m2": "kw1"},
    {"a.b": "kw1", "a": {"c": "x", "b": "kw2"}},
])
def test_keyword_matches_show_the_string_python_finds_first(event: dict[str, Any]) -> None:
    ruleset = build(rule_yaml({"kw": ["kw1", "kw2"], "condition": "kw"}))
    assert len(_shown(ruleset, event)) == 1  # checked against Python's fields


def test_keyword_fields_are_left_to_python_when_a_path_recurs() -> None:
    ruleset = build(rule_yaml({"kw": ["kw"], "condition": "kw"}))
    plain, listed, folded = _shown(ruleset, {"a": "kw", "b": "kw"}, {"l": [{"m": "x"}, {"m": "kw"}]},
                                   {"m": "kw", "M": "kw"})
    assert plain == [(("", "kw"),)] and listed == [None] and folded == [None]


def test_a_value_the_screen_cannot_check_before_the_first_match_leaves_the_fields_to_python() -> None:
    """A regex on a non-ASCII value is Python's: an earlier such value might be the one shown."""
    ruleset = build(rule_yaml({"sel": {"f|re": "^a.b$", "g": "y"}, "condition": "sel or sel"}))
    [[late], [first]] = _shown(ruleset, {"f": ["a\u00e9b", "axb"], "g": "y"}, {"f": ["axb", "a\u00e9b"], "g": "y"})
    assert late is None and first == (("f", "axb"), ("g", "y"))


def test_a_two_part_decision_still_makes_python_s_matches() -> None:
    """Decisions without shown fields (an older extension) have Python make every match's fields."""
    ruleset = build(rule_yaml(SHOWN_FIELD))
    screen = ruleset.screen(LS)
    assert screen is not None
    event = {"CommandLine": "whoami", "Image": "x.exe"}
    assert ruleset.evaluate_decided(event, screen.rules, ([0], []), LS) == ruleset.evaluate(event, LS) != []
