"""The log stays readable: uvicorn's coloured copy is dropped, Kafka client repeats are summarised,
successful HTTP client requests are DEBUG lines (``service.log_filters``, ``service.logs``)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from service import logs
from service.log_filters import DemoteSuccessfulRequests, RepeatFilter


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    libraries = {name: logging.getLogger(name).level for name in ("httpx", "aiokafka")}
    logs.configure_logging("DEBUG", library_level="INFO", stream=stream)
    try:
        yield stream
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_pipesentry", False)]:
            root.removeHandler(handler)
        root.setLevel(level)
        for name, lib_level in libraries.items():
            logging.getLogger(name).setLevel(lib_level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def test_uvicorn_color_message_is_not_in_the_json_line(captured: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42,
                                            extra={"color_message": "Started \x1b[36m%d\x1b[0m"})
    [line] = lines(captured)
    assert line["msg"] == "Started server process [42]"
    assert "color_message" not in line
    assert "\\u001b" not in captured.getvalue() and "\x1b" not in captured.getvalue()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_pass_up_to_the_burst_then_one_summary_when_the_message_returns() -> None:
    clock, emitted = Clock(), list[logging.LogRecord]()
    rf = RepeatFilter(emitted.append, burst=2, interval_s=10, clock=clock)
    passed = [rf.filter(record("aiokafka.conn", "Unable connect to %s", f"b{i}")) for i in range(7)]
    assert passed == [True, True, False, False, False, False, False]
    assert emitted == []
    clock.now = 11
    assert rf.filter(record("aiokafka.conn", "Unable connect to %s", "b9"))
    [summary] = emitted
    assert summary.getMessage() == "suppressed 5 similar messages"
    assert summary.__dict__["suppressed"] == 5 and summary.__dict__["template"] == "Unable connect to %s"
    assert rf.filter(summary)  # the filter lets its own summary through


def test_other_messages_levels_and_loggers_are_counted_apart() -> None:
    rf = RepeatFilter(lambda r: None, burst=1, interval_s=10, clock=Clock())
    assert rf.filter(record("aiokafka", "a"))
    assert not rf.filter(record("aiokafka", "a"))
    assert rf.filter(record("aiokafka", "b"))
    assert rf.filter(record("aiokafka", "a", level=logging.WARNING))
    assert rf.filter(record("kafka.conn", "a"))
    for _ in range(5):  # not a throttled logger
        assert rf.filter(record("service.app", "a"))


def test_tracked_messages_are_bounded() -> None:
    rf = RepeatFilter(lambda r: None, burst=1, interval_s=10, clock=Clock())
    for i in range(5000):
        rf.filter(record("aiokafka", f"message {i}"))
    assert len(rf._windows) <= 1000


def test_configured_logging_summarises_aiokafka_repeats(captured: io.StringIO) -> None:
    kafka_log = logging.getLogger("aiokafka.conn")
    for _ in range(50):
        kafka_log.error("Unable connect to node with id %s: %s", 1, "Connect call failed")
    out = lines(captured)
    assert 1 <= len(out) <= 3
    assert all(str(line["msg"]).startswith("Unable connect") for line in out)


def test_successful_http_requests_are_debug_lines(captured: io.StringIO) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200 if request.url.path == "/ok" else 503)

    with httpx.Client(transport=httpx.MockTransport(reply)) as client:
        client.post("https://sink.example/ok")
        client.post("https://sink.example/down")
    # library level INFO: the success is demoted to DEBUG and dropped, the failure stays INFO
    out = [line for line in lines(captured) if line["logger"] == "httpx"]
    assert [line["level"] for line in out] == ["info"]
    assert "503" in str(out[0]["msg"])
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    with httpx.Client(transport=httpx.MockTransport(reply)) as client:
        client.post("https://sink.example/ok")
    out = [line for line in lines(captured) if line["logger"] == "httpx"]
    assert out[-1]["level"] == "debug" and "200" in str(out[-1]["msg"])


def test_demotion_leaves_other_records_alone() -> None:
    demote = DemoteSuccessfulRequests()
    warning = record("httpx", 'HTTP Request: POST x "HTTP/1.1 200 OK"', level=logging.WARNING)
    assert demote.filter(warning) and warning.levelno == logging.WARNING
    other = record("httpx", "something else", level=logging.INFO)
    assert demote.filter(other) and other.levelno == logging.INFO
