"""Every modifier of the Sigma modifiers appendix, checked against small events."""

from __future__ import annotations

import base64

import pytest

from tests.support.fixtures import pipeline_text
from tests.support.sigma import agree, build, hit, rule_yaml


def one(key: str, value: object) -> dict[str, object]:
    return {"sel": {key: value}, "condition": "sel"}


@pytest.mark.parametrize(("key", "value", "event", "expected"), [
    ("F|contains", "evil", "an EVIL thing", True),
    ("F|contains", "evil", "good", False),
    ("F|startswith", "adm", "Admin", True),
    ("F|startswith", "adm", "xadm", False),
    ("F|endswith", "\\cmd.exe", "C:\\Windows\\CMD.exe", True),
    ("F|endswith", "\\cmd.exe", "cmd.exe", False),
    ("F|contains", "a*c", "xxabbbcxx", True),          # wildcards inside contains still work
    ("F|cased", "AbC", "AbC", True),
    ("F|cased", "AbC", "abc", False),
    ("F|contains|cased", "Evil", "an Evil x", True),
    ("F|contains|cased", "Evil", "an evil x", False),
    ("F|startswith|cased", "Ab", "Abz", True),
    ("F|startswith|cased", "Ab", "abz", False),
])
def test_string_position_and_case(key: str, value: str, event: str, expected: bool) -> None:
    assert hit(one(key, value), {"F": event}) is expected


def test_all() -> None:
    det = one("F|contains|all", ["/c", "whoami"])
    assert hit(det, {"F": "cmd /c whoami"})
    assert not hit(det, {"F": "cmd /c dir"})


@pytest.mark.parametrize(("event", "expected"), [
    ({"F": "x"}, True), ({"F": None}, True), ({"F": ""}, True), ({"G": 1}, False), ({"F": {"a": 1}}, True),
])
def test_exists_true(event: dict[str, object], expected: bool) -> None:
    assert hit(one("F|exists", True), event) is expected


def test_exists_false() -> None:
    assert hit(one("F|exists", False), {"G": 1})
    assert not hit(one("F|exists", False), {"F": None})


@pytest.mark.parametrize(("event", "expected"), [
    ({"F": "y"}, True), ({"F": "X"}, False), ({}, True), ({"F": ["y", "x"]}, False), ({"F": 3}, True),
])
def test_neq(event: dict[str, object], expected: bool) -> None:
    assert hit(one("F|neq", "x"), event) is expected


def test_neq_number_and_list() -> None:
    assert hit(one("F|neq", 4), {"F": 5})
    assert not hit(one("F|neq", 4), {"F": "4"})
    assert not hit(one("F|neq", ["a", "b"]), {"F": "b"})
    assert hit(one("F|neq", ["a", "b"]), {"F": "c"})


@pytest.mark.parametrize("dash", ["-", "/", "\u2013", "\u2014", "\u2015"])
def test_windash(dash: str) -> None:
    assert hit(one("F|windash|contains", " -exec "), {"F": f"tool {dash}exec x"})


def test_windash_no_false_match() -> None:
    assert not hit(one("F|windash|contains", " -exec "), {"F": "tool +exec x"})


@pytest.mark.parametrize(("key", "value", "event", "expected"), [
    ("F|re", "^ab+c$", "abbbc", True),
    ("F|re", "b+c", "xxabbcxx", True),            # unanchored search
    ("F|re", "ABC", "abc", False),                # case-sensitive by default
    ("F|re|i", "ABC", "xabcx", True),
    ("F|re", "^b$", "a\nb", False),
    ("F|re|m", "^b$", "a\nb", True),
    ("F|re", "a.b", "a\nb", False),
    ("F|re|s", "a.b", "a\nb", True),
    ("F|re", "(a)\\1", "xaax", True),             # backreference: Python re fallback
    ("F|re", "foo(?!bar)", "foobar", False),      # lookahead: Python re fallback
    ("F|re", "foo(?!bar)", "foobaz", True),
    ("F|re", "abc$", "xabc\n", True),             # PCRE: "$" also matches before a final newline
    ("F|re", "abc$", "xabc\n\n", False),
    ("F|re|m", "abc$", "abc\nx", True),
])
def test_regex(key: str, value: str, event: str, expected: bool) -> None:
    assert hit(one(key, value), {"F": event}) is expected


def test_regex_on_numbers() -> None:
    assert hit(one("F|re", "^46[0-9]{2}$"), {"F": 4688})


def test_base64() -> None:
    encoded = base64.b64encode(b"secret").decode()
    assert hit(one("F", encoded), {"F": encoded})
    assert hit(one("F|base64", "secret"), {"F": encoded})
    assert not hit(one("F|base64", "secret"), {"F": "secret"})


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"xyz", b"long prefix "])
def test_base64offset_contains(prefix: bytes) -> None:
    encoded = base64.b64encode(prefix + b"http://evil" + b" tail").decode()
    assert hit(one("F|base64offset|contains", "http://evil"), {"F": f"powershell -e {encoded}"})


def test_base64offset_no_false_match() -> None:
    encoded = base64.b64encode(b"http://good.example").decode()
    assert not hit(one("F|base64offset|contains", "http://evil"), {"F": encoded})


@pytest.mark.parametrize(("modifier", "encoding"), [
    ("utf16le", "utf-16-le"), ("wide", "utf-16-le"), ("utf16be", "utf-16-be"),
])
def test_utf16_with_base64(modifier: str, encoding: str) -> None:
    payload = base64.b64encode("ping".encode(encoding)).decode()
    assert hit(one(f"F|{modifier}|base64", "ping"), {"F": payload})


def test_utf16_with_bom_and_base64() -> None:
    payload = base64.b64encode(b"\xff\xfe" + "ping".encode("utf-16-le")).decode()
    assert hit(one("F|utf16|base64", "ping"), {"F": payload})


@pytest.mark.parametrize("prefix", ["", "I", "IE", "IEX "])
def test_wide_base64offset(prefix: str) -> None:
    payload = base64.b64encode(f"{prefix}Invoke-Mimikatz now".encode("utf-16-le")).decode()
    assert hit(one("F|wide|base64offset|contains", "Invoke-Mimikatz"), {"F": f"-enc {payload}"})


def test_utf16_without_base64_matches_raw_text() -> None:
    assert hit(one("F|wide|contains", "ab"), {"F": "x" + "ab".encode("utf-16-le").decode("latin-1")})


@pytest.mark.parametrize(("key", "value", "event", "expected"), [
    ("F|lt", 10, 9, True), ("F|lt", 10, 10, False),
    ("F|lte", 10, 10, True), ("F|lte", 10, 11, False),
    ("F|gt", 10, 11, True), ("F|gt", 10, 10, False),
    ("F|gte", 10, 10, True), ("F|gte", 10, 9, False),
    ("F|gt", 10, "11", True),                  # numeric strings compare as numbers
    ("F|gt", 10, "abc", False),
    ("F|gt", 1.5, 1.6, True),
    ("F|lt", 10, True, False),                  # booleans are not numbers
])
def test_numeric_compare(key: str, value: object, event: object, expected: bool) -> None:
    assert hit(one(key, value), {"F": event}) is expected


@pytest.mark.parametrize(("modifier", "number"), [
    ("minute", 22), ("hour", 13), ("day", 7), ("week", 19), ("month", 5), ("year", 2024),
])
def test_time_parts_iso(modifier: str, number: int) -> None:
    assert hit(one(f"ts|{modifier}", number), {"ts": "2024-05-07T13:22:41Z"})
    assert not hit(one(f"ts|{modifier}", number + 1), {"ts": "2024-05-07T13:22:41Z"})


def test_time_part_epoch_and_compare() -> None:
    # 2024-05-07T13:22:41Z as epoch seconds and milliseconds
    assert hit(one("ts|hour", 13), {"ts": 1715088161})
    assert hit(one("ts|hour", 13), {"ts": 1715088161000})
    assert hit(one("ts|hour|gte", 12), {"ts": "2024-05-07 13:22:41"})
    assert not hit(one("ts|hour", 13), {"ts": "not a time"})


@pytest.mark.parametrize(("value", "event", "expected"), [
    ("10.0.0.0/8", "10.1.2.3", True),
    ("10.0.0.0/8", "11.1.2.3", False),
    ("192.168.1.0/24", "192.168.1.255", True),
    ("fe80::/10", "fe80::1", True),
    ("fe80::/10", "2001:db8::1", False),
    ("10.0.0.0/8", "not-an-ip", False),
    ("10.0.0.0/8", "::ffff:b00:1", False),
])
def test_cidr(value: str, event: str, expected: bool) -> None:
    assert hit(one("ip|cidr", value), {"ip": event}) is expected


def test_fieldref() -> None:
    assert hit(one("A|fieldref", "B"), {"A": "Same", "B": "same"})
    assert not hit(one("A|fieldref", "B"), {"A": "x", "B": "y"})
    assert not hit(one("A|fieldref", "B"), {"A": "x"})
    assert hit(one("A|fieldref|startswith", "B"), {"A": "prefix-rest", "B": "prefix"})
    assert hit(one("A|fieldref|endswith", "B"), {"A": "rest-suffix", "B": "suffix"})
    assert hit(one("A|fieldref|contains", "B"), {"A": "xxmidxx", "B": "mid"})


def test_fieldref_neq() -> None:
    assert hit(one("A|neq|fieldref", "B"), {"A": "x", "B": "y"})
    assert not hit(one("A|neq|fieldref", "B"), {"A": "x", "B": "x"})


PIPELINE = pipeline_text("admins_placeholder")


def test_expand_with_pipeline() -> None:
    ruleset = build(rule_yaml(one("User|expand", "%admins%")), pipelines=(PIPELINE,))
    assert agree(ruleset, {"User": "alice"})
    assert agree(ruleset, {"User": "bobby"})
    assert not agree(ruleset, {"User": "carol"})


def test_escaped_percent_is_literal() -> None:
    assert hit(one("F", "%name%"), {"F": "%name%"})
