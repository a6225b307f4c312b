"""Inputs: event time, line splitting, file following with rotation, stdin, push-input rejects and the
one decode path (the Kafka source's bookkeeping is in ``kafka/test_runner.py``)."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest

from detectors.model import LogSource, Origin
from service.config import StdinSettings
from service.detection import Detector, compile_detection
from service.pipeline import IngestResult, drive
from service.sources.base import InputSpec, Item, LineSplitter, RawMessage, decode_batch
from service.sources.filetail import FileFollower
from service.sources.stdin import StdinSource
from tests.support.kafka import Record
from tests.support.routers import FakeRouter
from tests.support.rules import CURL_RULE
from tests.support.waits import until


class IngestFn:
    """A stand-in for the pipeline core that hands each batch's messages to a test function."""

    def __init__(self, fn) -> None:
        self.fn = fn

    async def ingest(self, source, messages, spec) -> IngestResult:
        await self.fn(messages)
        return IngestResult(len(messages))


FILE_SPEC = InputSpec.from_settings("file", StdinSettings(), ["@timestamp"])


def test_item_time_uses_first_usable_field_then_fallback():
    item = Item({"a": {"ts": "bad"}, "time": 1767323045}, Origin("x"), LogSource(), ("a.ts", "time"), 7.0)
    assert item.time() == 1767323045.0
    assert Item({"x": 1}, Origin("x"), LogSource(), ("time",), 7.0).time() == 7.0
    flat = Item({"event.created": "2026-01-02T03:04:05Z"}, Origin("x"), LogSource(), ("event.created",), 0)
    assert flat.time() == 1767323045.0


def test_line_splitter_keeps_offsets_across_chunks():
    splitter = LineSplitter(max_line=100)
    assert splitter.feed(b"ab\r\n\ncd") == [(0, b"ab")]
    assert splitter.feed(b"e\nfg") == [(5, b"cde")]
    assert splitter.flush() == [(9, b"fg")]
    long = LineSplitter(max_line=4)
    assert long.feed(b"0123456789") == [(0, b"0123456789")]


def test_decode_batch_gives_each_event_of_a_message_its_own_origin():
    spec = InputSpec("t", lambda data: [{"n": 1}, {"n": 2}] if data == b"two" else [{"n": 0}],
                     LogSource(product="p"), ("ts",))
    out = decode_batch([RawMessage(b"two", Origin("kafka", "t", 0, 5), 1.0),
                        RawMessage(b"one", Origin("kafka", "t", 0, 6), 1.0)], spec)
    assert [(i.event["n"], i.origin.offset, i.origin.key) for i in out.items] == [(1, 5, "0"), (2, 5, "1"), (0, 6, None)]


async def test_file_follower_survives_rename_and_truncate_rotation(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"old line before start\n")
    got: list[RawMessage] = []

    async def ingest(messages):
        got.extend(messages)

    stop = asyncio.Event()
    follower = FileFollower(path, FILE_SPEC, start_at="end", poll_interval_s=0.02)
    task = asyncio.create_task(drive(follower, IngestFn(ingest), stop))
    await asyncio.sleep(0.1)
    with path.open("ab") as f:
        f.write(b"one\ntw")
        f.flush()
        await until(lambda: len(got) == 1)
        f.write(b"o\n")
    await until(lambda: len(got) == 2)
    # rename rotation: a last line lands in the old file after the rename, before the new file is read
    with path.open("ab") as f:
        os.rename(path, tmp_path / "app.log.1")
        f.write(b"three\n")
    path.write_bytes(b"four\n")
    await until(lambda: len(got) == 4)
    # copytruncate rotation
    path.write_bytes(b"")
    await asyncio.sleep(0.1)
    path.write_bytes(b"five\n")
    await until(lambda: len(got) == 5)
    stop.set()
    await task
    assert [m.value for m in got] == [b"one", b"two", b"three", b"four", b"five"]
    keys = [m.origin.key for m in got]
    assert len(set(keys)) == 5 and ":22:" in keys[0] and ":26:" in keys[1]


async def test_a_restarted_file_follower_resumes_after_the_last_accepted_line(tmp_path):
    """A crash between reading and handing on (the supervisor restarts ``run``): with ``start_at: end``
    the restart must not jump to the end and skip the lines read but never accepted."""
    path = tmp_path / "app.log"
    path.write_bytes(b"before start\n")
    got: list[bytes] = []

    async def ingest(messages):
        got.extend(m.value for m in messages)

    stop = asyncio.Event()
    follower = FileFollower(path, FILE_SPEC, start_at="end", poll_interval_s=0.02)
    task = asyncio.create_task(drive(follower, IngestFn(ingest), stop))
    await until(lambda: follower._handle is not None)
    with path.open("ab") as f:
        f.write(b"one\n")
    await until(lambda: got == [b"one"])
    real = follower._messages
    crashed: list[int] = []

    def crash_once(lines):
        if not crashed:
            crashed.append(1)
            raise RuntimeError("injected crash after a read")
        return real(lines)

    follower._messages = crash_once
    with path.open("ab") as f:
        f.write(b"two\nthree\n")
    with pytest.raises(RuntimeError, match="injected"):
        await task
    task = asyncio.create_task(drive(follower, IngestFn(ingest), stop))  # what the supervisor does
    await until(lambda: got == [b"one", b"two", b"three"])
    stop.set()
    await task


async def test_stdin_reads_a_pipe_to_its_end_and_retries_refused_batches():
    read_fd, write_fd = os.pipe()
    got: list[bytes] = []
    refusals = [1]

    async def ingest(messages):
        if refusals:
            refusals.pop()
            raise RuntimeError("router busy")
        got.extend(m.value for m in messages)

    with os.fdopen(read_fd, "rb", buffering=0) as reader:
        source = StdinSource(FILE_SPEC, stream=reader)
        task = asyncio.create_task(drive(source, IngestFn(ingest), asyncio.Event()))
        with os.fdopen(write_fd, "wb") as writer:
            writer.write(b'{"a": 1}\n\n{"a": 2}\n{"a": 3}')
        await asyncio.wait_for(task, 10)
    assert source.lines == 3 and got == [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}']


async def test_push_input_rejects_go_to_the_dead_letter_file(tmp_path):
    import base64

    from service.pipeline import Pipeline
    from service.sources.deadletter import FileDeadLetters

    (tmp_path / "r.yml").write_text(CURL_RULE)
    detector = Detector(compile_detection([tmp_path / "r.yml"], [], skip_invalid=False).detection)
    router = FakeRouter()
    dead = FileDeadLetters(tmp_path / "data" / "dead-letters.ndjson")
    spec = InputSpec.from_settings("stdin", StdinSettings(), ["ts"])
    result = await Pipeline(detector, router, dead).ingest("stdin", [
        RawMessage(b'{"message": "curl x | sh"}', Origin("stdin", key="a"), 1.0),
        RawMessage(b"\xff broken", Origin("stdin", key="b"), 1.0)], spec)
    assert result.accepted == 1 and len(router.accepted) == 1  # no log source configured: every rule applies
    [line] = (tmp_path / "data" / "dead-letters.ndjson").read_bytes().splitlines()
    record = orjson.loads(line)
    assert record["origin"] == "stdin:b" and record["reason"] == "utf8"
    assert base64.b64decode(record["value_b64"]) == b"\xff broken"


def test_one_decode_path_gives_kafka_and_push_inputs_the_same_reject_reasons() -> None:
    """Kafka records and pushed lines go through ``decode_batch``: same reasons and errors, and a
    Kafka reject keeps its metadata (origin, timestamp, headers with bytes values, key)."""
    spec = InputSpec.from_settings("t", StdinSettings(), ["@timestamp"])
    values = [b"not json", None, b'{"a": "' + b"x" * 64 + b'"}', b'{"a": 1}']
    pushed = decode_batch([RawMessage(v, Origin("stdin", key=str(i)), 1.0) for i, v in enumerate(values)], spec,
                          max_bytes=32)
    records = [Record(v, b"k", i, 2500, [("h", None)]) for i, v in enumerate(values)]
    kafka = decode_batch(records, spec, max_bytes=32, partition=("t", 0))
    assert [(r.reason, r.error) for r in pushed.rejected] == [(r.reason, r.error) for r in kafka.rejected]
    assert [r.reason for r in kafka.rejected] == ["decode", "empty", "oversize"]
    tombstone = kafka.rejected[1].message
    assert (tombstone.value, tombstone.origin.token(), tombstone.fallback_time, tombstone.headers, tombstone.key) == (
        b"", Origin("kafka", "t", 0, 1).token(), 2.5, (("h", b""),), b"k")
    assert [item.event for item in kafka.items] == [{"a": 1}] and kafka.items[0].scope_key() == ("t", 0)
