"""The JSON decoders name JSON types in errors and count any over-deep document as ``depth``."""

from __future__ import annotations

import pytest

from service.decoders import DecodeError, build_decoder
from service.decoders.json import json_type


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


@pytest.mark.parametrize("levels", [100, 1_100, 10_000])
def test_any_depth_past_the_limit_is_depth(levels: int) -> None:
    for name in ("json", "ndjson"):
        with pytest.raises(DecodeError) as caught:
            build_decoder(name)(deep(levels))
        assert caught.value.reason == "depth", (name, levels)


@pytest.mark.parametrize(("text", "kind"), [(b"null", "null"), (b"[1]", "array"), (b'"x"', "string"),
                                            (b"1.5", "number"), (b"3", "number"), (b"false", "boolean")])
def test_not_an_object_names_the_json_type(text: bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as caught:
        build_decoder("json")(text)
    assert caught.value.reason == "not_object"
    assert caught.value.message == f"expected a JSON object, got {kind}"
    assert "NoneType" not in caught.value.message


def test_json_type_names() -> None:
    assert [json_type(v) for v in (None, {}, [], "", 0, 0.0, True)] == [
        "null", "object", "array", "string", "number", "number", "boolean"]
