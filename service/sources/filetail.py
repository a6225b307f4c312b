"""Following a file like ``tail -F``: keeps reading as it grows, reopens it after rotation.

Polling (``poll_interval_s``) instead of inotify: it works on every file
system, including container volumes. Rotation is noticed when the path points
to a new inode (rename + create) or the file shrank (copytruncate); before
switching, whatever was appended to the old file is read to its end, so no line
is lost across a rotation. Origin keys are ``path:inode:byte offset:line hash``.

A :class:`~service.pipeline.source.Source`: each batch is acknowledged (the position
after it recorded) only once the pipeline accepted it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

from detectors.model import Origin, keyed_origin
from service.pipeline.core import IngestResult
from service.pipeline.source import Batch
from service.sources.base import InputSpec, LineSplitter, RawMessage
from service.sources.http import content_key
from service.waits import stopped_within

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20


class FileFollower:
    """Follows one path until ``stop`` is set."""

    name = "file"

    def __init__(self, path: Path, spec: InputSpec, *, start_at: str = "end", poll_interval_s: float = 0.5,
                 max_line: int = 1_048_576) -> None:
        self.path = path
        self.spec = spec
        self._start_at = start_at
        self._interval = poll_interval_s
        self._max_line = max_line
        self._handle: BinaryIO | None = None
        self._inode: int | None = None
        self._offset = 0
        self._splitter = LineSplitter(max_line)
        self._done: tuple[int, int] | None = None
        """(inode, offset) up to which every line was accepted: where a restarted :meth:`run` resumes."""
        self.lines = 0

    def _open(self, at_end: bool) -> bool:
        try:
            handle = self.path.open("rb")
        except OSError:
            return False
        st = os.fstat(handle.fileno())
        self._handle, self._inode = handle, st.st_ino
        done = self._done
        if done is not None and done[0] == st.st_ino and done[1] <= st.st_size:
            self._offset = done[1]  # a restart after a crash: nothing read but not accepted is skipped
        else:
            self._offset = st.st_size if at_end else 0
        handle.seek(self._offset)
        self._splitter = LineSplitter(self._max_line, self._offset)
        return True

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None

    def _read_available(self) -> list[RawMessage]:
        """Everything complete that was appended since the last read (bounded per call)."""
        assert self._handle is not None
        chunk = self._handle.read(READ_SIZE)
        if not chunk:
            return []
        self._offset += len(chunk)
        return self._messages(self._splitter.feed(chunk))

    def _messages(self, lines: list[tuple[int, bytes]]) -> list[RawMessage]:
        now = time.time()
        prefix = f"{self.path}:{self._inode}"
        return [RawMessage(line, partial(line_origin, prefix, at, line), now) for at, line in lines]

    def _rotated(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False  # gone for now; keep the old handle until a new file appears
        return st.st_ino != self._inode or st.st_size < self._offset

    def _batch(self, messages: list[RawMessage], resume: bool) -> Batch:
        """``resume``: once accepted, a restart of :meth:`batches` resumes after these lines."""
        done = (self._inode, self._splitter.position) if resume and self._inode is not None else None

        async def ack(result: IngestResult) -> None:
            self.lines += len(messages)
            if done is not None:
                self._done = done

        return Batch(messages, self.spec, ack)

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]:
        first = True
        try:
            while not stop.is_set():
                if self._handle is None:
                    if not self._open(at_end=first and self._start_at == "end"):
                        if await stopped_within(stop, self._interval):
                            return
                        continue
                    first = False
                messages = self._read_available()
                if messages:
                    yield self._batch(messages, resume=True)
                    continue  # maybe more is waiting
                if self._rotated():
                    while tail := self._read_available():  # written between the last read and now
                        yield self._batch(tail, resume=False)
                    rest = self._messages(self._splitter.flush())
                    if rest:
                        yield self._batch(rest, resume=False)
                    log.info("file rotated; reopening", extra={"path": str(self.path)})
                    self._close()
                    self._open(at_end=False)
                    continue
                if await stopped_within(stop, self._interval):
                    return
        finally:
            self._close()


def line_origin(prefix: str, at: int, line: bytes) -> Origin:
    """``path:inode:byte offset:line hash``: inode and offset alone repeat after a copytruncate
    rotation, the line's hash tells them apart."""
    return keyed_origin("file", f"{prefix}:{at}:{content_key(line)[:8]}")
