"""Bodies over the limit get a clean 413 from a real uvicorn server, streamed or declared
(``service.api.limits``): the client reads the answer instead of a connection reset."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import uvicorn

from devservices.process import free_port
from service.api import create_app
from tests.support.api import INGESTER, auth, build_ctx
from tests.support.waits import until

MIB = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    """The API (ingest limit: the default 10 MiB) served by uvicorn on a free loopback port."""
    ctx, _ = build_ctx(tmp_path)
    port = free_port()
    config = uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_config=None, access_log=False,
                            lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    asyncio.run(until(lambda: srv.started, 30, "uvicorn to listen"))
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(30)


def post(port: int, body: bytes | Iterator[bytes], headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/api/v1/events", body=body,
                     headers={**auth(INGESTER), "content-type": "application/x-ndjson", **headers})
        response = conn.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        conn.close()


def eleven_mib() -> bytes:
    line = b'{"message": "' + b"x" * 1000 + b'"}\n'
    return line * (11 * MIB // len(line) + 1)


def test_a_declared_eleven_mib_body_is_answered_413(server: int) -> None:
    status, body = post(server, eleven_mib(), {})
    assert status == 413
    assert "exceeds the limit of 10485760 bytes" in str(body["detail"])


def test_a_streamed_eleven_mib_body_is_answered_413(server: int) -> None:
    data = eleven_mib()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            yield data[start:start + 64 * 1024]

    status, body = post(server, chunks(), {})  # no length: http.client sends it chunked
    assert status == 413
    assert "exceeds the limit" in str(body["detail"])


def test_expect_continue_is_refused_before_the_body_is_sent(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     + f"Authorization: Bearer {INGESTER}\r\n".encode()
                     + b"Content-Type: application/x-ndjson\r\nContent-Length: 11534336\r\n"
                     + b"Expect: 100-continue\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_body_under_the_limit_is_read(server: int) -> None:
    status, body = post(server, b'{"message": "hello"}\n', {})
    assert status == 200 and body["accepted"] == 1
