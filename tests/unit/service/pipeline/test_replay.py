"""service.pipeline.replay's reader: the block reader cuts exactly the lines, offsets and origins that
reading the stream line by line gave, whatever the input (CRLF, blank and whitespace-only lines, no
trailing newline, invalid UTF-8, lines spanning blocks or many of them): nothing skipped, nothing merged."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.model import Origin
from service.decoders import build_decoder
from service.pipeline.replay import LineFileSource, numbered_lines
from service.sources.base import InputSpec
from service.sources.filetail import line_origin
from service.sources.http import content_origin


def _plain(stream: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """The reference: the stream iterated line by line (the reader before blocks)."""
    at = 0
    for number, raw in enumerate(stream, start=1):
        start, at = at, at + len(raw)
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            yield number, start, line


def _all_lines(data: bytes) -> int:
    return sum(1 for _ in io.BytesIO(data))


_PIECES = st.sampled_from([b"\n", b"\r\n", b"\r", b" ", b"\t", b"\x0b", b"\x0c", b"\x01", b"\x1f", b"{", b'"a":1',
                           b"}", b"\xff\xfe", b"\xc3\xa9", b"x" * 70, b"\n\n", b" \n", b"\r\r\n"])
_DATA = st.one_of(st.lists(_PIECES, max_size=40).map(b"".join), st.binary(max_size=300))
_BLOCKS = st.sampled_from([1, 2, 3, 7, 16, 64, 65536])


class _Counter:
    lines = 0


class _NoRead1(io.RawIOBase):
    """A stream with ``read`` only (no ``read1``), handing out at most ``step`` bytes a call."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._at, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._step if size < 0 else min(size, self._step)
        out = self._data[self._at:self._at + size]
        self._at += len(out)
        return out


@settings(max_examples=400, deadline=None)
@given(data=_DATA, block=_BLOCKS)
def test_block_reader_cuts_the_lines_line_iteration_cut(data: bytes, block: int) -> None:
    counter = _Counter()
    assert list(numbered_lines(io.BytesIO(data), counter, block)) == list(_plain(io.BytesIO(data)))
    assert counter.lines == _all_lines(data)  # blank lines counted too
    assert list(numbered_lines(cast(IO[bytes], _NoRead1(data, 5)), None, block)) == list(_plain(io.BytesIO(data)))


def test_a_huge_line_spanning_many_blocks_is_one_line() -> None:
    huge = b'{"a":"' + b"y" * 300_000 + b'"}'
    data = b"first\r\n" + huge + b"\r\n\n  \nlast"
    assert list(numbered_lines(io.BytesIO(data), block=4096)) == list(_plain(io.BytesIO(data)))
    assert [n for n, _, _ in numbered_lines(io.BytesIO(data), block=4096)] == [1, 2, 5]


def _source_lines(path: str | None, stream: IO[bytes]) -> tuple[list[tuple[bytes, Origin]], int]:
    """What :class:`LineFileSource` hands the pipeline, (bytes, origin) of each message, and its line count."""
    spec = InputSpec("stdin", build_decoder("json", {}), None, ())
    source = LineFileSource(stream, spec, lambda alerts, rejects: None, path=path, batch_lines=3)
    out: list[tuple[bytes, Origin]] = []

    async def read() -> None:
        async for batch in source.batches(asyncio.Event()):
            assert batch.messages
            for message in batch.messages:
                assert message.value is not None
                out.append((message.value, message.origin))

    asyncio.run(read())
    return out, source.lines


@settings(max_examples=200, deadline=None)
@given(data=_DATA)
def test_the_stdin_source_hands_on_every_line_with_the_origin_line_reading_gave(data: bytes) -> None:
    expected = list(_plain(io.BytesIO(data)))
    got, lines = _source_lines(None, io.BytesIO(data))
    assert got == [(line, content_origin("stdin", line))
                                                             for _, _, line in expected]
    assert lines == _all_lines(data)


def test_file_origins_carry_each_line_offset(tmp_path: Path) -> None:
    data = b'{"a":1}\r\n\n   \n{"b":2}\n' + b'{"c":"' + b"z" * 100_000 + b'"}\n{"d":4}'
    path = tmp_path / "events.ndjson"
    path.write_bytes(data)
    with path.open("rb") as stream:
        got, lines = _source_lines(str(path), stream)
        prefix = f"{path}:{os.fstat(stream.fileno()).st_ino}"
    expected = [(line, line_origin(prefix, start, line)) for _, start, line in _plain(io.BytesIO(data))]
    assert got == expected
    assert lines == 6
