"""Splitting an ingest body by its mode (``service.sources.http``)."""

from __future__ import annotations

import pytest

from service.sources.http import AUTO, JSON, LINES, IngestError, parse_body


def values(body: bytes, mode: str) -> list[bytes | None]:
    return [m.value for m in parse_body(body, 0.0, max_events=100, mode=mode).messages]


def test_lines_mode_never_reads_the_body_as_one_array() -> None:
    assert values(b'[{"a": 1}]\n{"b": 2}\n\n', LINES) == [b'[{"a": 1}]', b'{"b": 2}']


def test_auto_mode_sniffs_an_array() -> None:
    assert values(b' [{"a": 1}, {"b": 2}]', AUTO) == [b'{"a":1}', b'{"b":2}']
    assert values(b'{"a": 1}\n{"b": 2}', AUTO) == [b'{"a": 1}', b'{"b": 2}']


def test_json_mode_takes_one_object_an_array_or_lines() -> None:
    assert values(b'{\n "a": 1\n}\n', JSON) == [b'{\n "a": 1\n}']
    assert values(b'[{"a": 1}]', JSON) == [b'{"a":1}']
    assert values(b'{"a": 1}\n{"b": 2}\n', JSON) == [b'{"a": 1}', b'{"b": 2}']
    assert values(b'{bad\n{"b": 2}\n', JSON) == [b"{bad", b'{"b": 2}']


def test_positions_count_skipped_elements() -> None:
    parsed = parse_body(b"[" + b"[" * 300 + b"]" * 300 + b', {"a": 1}]', 0.0, max_events=10, mode=JSON)
    assert parsed.positions == [1]
    assert [(i, reason) for i, reason, _ in parsed.errors] == [(0, "depth")]


@pytest.mark.parametrize("mode", [AUTO, JSON])
def test_a_body_too_deep_to_parse_is_a_depth_error(mode: str) -> None:
    with pytest.raises(IngestError) as caught:
        parse_body(b"[" * 5000 + b"]" * 5000, 0.0, max_events=10, mode=mode)
    assert caught.value.reason == "depth"
