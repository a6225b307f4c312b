"""Durable, append-only spool of records waiting for one sink.

Layout: ``<dir>/<n>.seg`` segment files of framed records plus a ``cursor``
file holding the position of the first record not yet delivered. A frame is
``b"P2" | u32 length | u32 crc32(payload) | u32 crc32(the 10 bytes before) |
payload`` (little endian). The header checksum makes a corrupt length field
detectable on its own, so the reader never trusts it to skip data. Segments
written before the header checksum (``b"PS" | u32 length | u32 crc32(payload)``)
are still read; a corrupt length there is caught by the payload checksum.

* Writes go to a fresh segment per process start (older segments are never
  appended to). A batch is written with plain ``os.write`` calls (no user-space
  buffer); a write that fails part-way is truncated back to the last whole
  frame, or, if even that fails, the segment is abandoned and the next batch
  starts a new one: a segment only ever holds whole frames plus, at worst, a
  torn tail after which nothing is written.
* fsync policy (``SpoolSettings.fsync``): ``batch`` = one fsync per appended
  batch, before :meth:`append` returns; ``always`` = after every record;
  ``never`` = the OS decides. The cursor is replaced atomically (rename); if
  that fails (disk full) the in-memory cursor still moves and the write is
  retried by the next :meth:`ack` or :meth:`flush_cursor`.
* Anything that is not a valid frame (bad magic, header or payload checksum, a
  length running past the end of the segment, a torn tail) is skipped: reading
  resynchronises on the next valid frame. Each skipped range is counted in
  ``pipesentry_spool_corrupt_records`` and its size in
  ``pipesentry_spool_corrupt_bytes``. Delivery is at least once: a crash between
  delivery and the cursor write re-sends a few records, which every sink
  tolerates (ids).

Not thread-safe: the router uses it from the event loop only (fsync excepted,
which may run in a worker thread via :func:`fsync_fd`).
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service import metrics
from service.errors import RetriableError
from service.fileperms import FILE_MODE, make_private, private_dir

log = logging.getLogger(__name__)

MAGIC = b"P2"
HEADER = struct.Struct("<2sIII")
"""Current frame header: magic, payload length, payload crc32, header crc32."""
MAGIC_V1 = b"PS"
HEADER_V1 = struct.Struct("<2sII")
"""Header of segments written by older versions (no header checksum); read only."""
_CANDIDATE = re.compile(b"P[2S]")
MAX_RECORD = 64 * 1024 * 1024
READ_CHUNK = 4 * 1024 * 1024
_OK, _SHORT, _BAD = 0, 1, 2

# The spool's disk write points, module-level so fault tests can wrap them one by one.
_open = os.open
_write = os.write
_fsync = os.fsync


def fsync_fd(fd: int) -> None:
    """fsync a descriptor :meth:`Spool.append` returned (may run in a thread)."""
    _fsync(fd)


class SpoolError(RetriableError):
    """The spool cannot accept records (full or disk error). Retriable by the caller."""


class SpoolFull(SpoolError):
    pass


@dataclass(frozen=True, slots=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Record:
    payload: bytes
    end: Position
    """Position just after this record: ack it to mark the record delivered."""
    size: int = 0
    """Bytes of the whole frame (header + payload)."""


def frame(payload: bytes) -> bytes:
    head = struct.pack("<2sII", MAGIC, len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def _check(buf: bytes, i: int, eof: bool) -> tuple[int, int, int]:
    """(verdict, header size, frame end) of a frame starting at ``buf[i]``.
    ``_SHORT``: plausible but cut by the end of ``buf`` (read more); at ``eof``
    a cut frame is ``_BAD`` (its length runs past the end of the segment)."""
    n = len(buf)
    magic = buf[i:i + 2]
    if magic == MAGIC:
        hsize = HEADER.size
        if i + hsize > n:
            return (_BAD if eof else _SHORT), hsize, 0
        _, length, pcrc, hcrc = HEADER.unpack_from(buf, i)
        if zlib.crc32(buf[i:i + 10]) != hcrc or length > MAX_RECORD:
            return _BAD, hsize, 0
    elif magic == MAGIC_V1:
        hsize = HEADER_V1.size
        if i + hsize > n:
            return (_BAD if eof else _SHORT), hsize, 0
        _, length, pcrc = HEADER_V1.unpack_from(buf, i)
        if length > MAX_RECORD:
            return _BAD, hsize, 0
    else:
        return (_BAD if eof or n - i >= 2 else _SHORT), 0, 0
    end = i + hsize + length
    if end > n:
        return (_BAD if eof else _SHORT), hsize, end
    if zlib.crc32(buf[i + hsize:end]) != pcrc:
        return _BAD, hsize, end
    return _OK, hsize, end


class Spool:
    def __init__(self, directory: Path, name: str, *, segment_bytes: int = 64 * 1024 * 1024,
                 max_bytes: int = 2 * 1024 * 1024 * 1024, fsync: str = "batch") -> None:
        self.dir = directory
        self.name = name
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.records = 0
        self.bytes = 0
        self.corrupt = 0
        self.corrupt_bytes = 0
        self._cursor = Position(0, 0)
        self._saved_cursor: Position | None = None
        self._read = Position(0, 0)
        self._write_seg = 0
        self._write_fd: int | None = None
        self._write_size = 0
        self._opened = False

    # --- lifecycle ---------------------------------------------------------
    def open(self) -> None:
        """Load the cursor, count what is waiting and start a new write segment."""
        if self._opened:
            return
        private_dir(self.dir)
        segments = self._segments()
        self._cursor = self._load_cursor(segments)
        self._saved_cursor = self._cursor
        self._read = self._cursor
        self.records, self.bytes = self._count()
        self._write_seg = (segments[-1] + 1) if segments else 1
        self._opened = True
        self._gauges()

    def close(self) -> None:
        fd, self._write_fd = self._write_fd, None
        self._opened = False
        if fd is not None:
            try:
                if self.fsync != "never":
                    _fsync(fd)
            finally:
                os.close(fd)

    @property
    def opened(self) -> bool:
        return self._opened

    # --- writing -----------------------------------------------------------
    def append(self, payloads: Sequence[bytes]) -> int | None:
        """Append records; returns a file descriptor still to fsync (``batch``
        policy; call :func:`fsync_fd` on it, maybe in a thread) or None.
        Raises :class:`SpoolError`; then none of the records is in the spool,
        except, with ``fsync: always`` or a segment rotation, whole records
        written before the failure (at least once: the caller retries)."""
        if not payloads:
            return None
        if not self._opened:
            raise SpoolError(f"spool {self.name} is not open")
        frames = [frame(p) for p in payloads]
        size = sum(len(f) for f in frames)
        if self.bytes + size > self.max_bytes:
            raise SpoolFull(f"spool {self.name} holds {self.bytes} bytes, limit {self.max_bytes}")
        op = "append"
        try:
            fd = self._writer()
            pending: list[bytes] = []
            for fr in frames:
                if self._write_size + sum(len(p) for p in pending) >= self.segment_bytes and \
                        (pending or self._write_size):
                    self._write_all(fd, pending)
                    pending = []
                    fd = self._rotate()
                pending.append(fr)
                if self.fsync == "always":
                    self._write_all(fd, pending)
                    pending = []
                    op = "fsync"
                    _fsync(fd)
                    op = "append"
            self._write_all(fd, pending)
        except OSError as exc:
            metrics.SPOOL_ERRORS.labels(sink=self.name, op=op).inc()
            log.error("spool write failed", extra={"sink": self.name, "op": op, "error": repr(exc)})
            raise SpoolError(f"spool {self.name}: {exc}") from exc
        return fd if self.fsync == "batch" else None

    def _write_all(self, fd: int, frames: list[bytes]) -> None:
        """Write whole frames or none: a failed write is cut back to the last whole frame."""
        if not frames:
            return
        data = b"".join(frames)
        good = self._write_size
        done = 0
        try:
            while done < len(data):
                done += _write(fd, data[done:])
        except OSError:
            try:
                os.ftruncate(fd, good)
            except OSError:
                self._abandon()  # a torn tail we cannot cut: the reader skips it, nothing follows it
            raise
        self._write_size += len(data)
        self.records += len(frames)
        self.bytes += len(data)
        self._gauges()

    def _abandon(self) -> None:
        fd, self._write_fd = self._write_fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        self._write_seg += 1

    def _writer(self) -> int:
        if self._write_fd is None:
            path = self._seg_path(self._write_seg)
            fd = _open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            try:
                make_private(fd)
            except OSError:
                os.close(fd)
                raise
            self._write_fd = fd
            self._write_size = os.fstat(fd).st_size
            if self._write_size == 0 and self.fsync != "never":
                self._sync_dir()  # the new segment's name must survive a power cut with its records
        return self._write_fd

    def _sync_dir(self) -> None:
        fd = _open(self.dir, os.O_RDONLY)
        try:
            _fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self) -> int:
        old, self._write_fd = self._write_fd, None
        self._write_seg += 1
        if old is not None:
            try:
                if self.fsync != "never":
                    _fsync(old)
            finally:
                os.close(old)
        return self._writer()

    # --- reading -----------------------------------------------------------
    def read(self, max_records: int) -> list[Record]:
        """Up to ``max_records`` records after the read position (advances it)."""
        out: list[Record] = []
        chunk = READ_CHUNK
        while len(out) < max_records:
            pos = self._read
            path = self._seg_path(pos.segment)
            if not path.exists():
                nxt = self._next_segment(pos.segment)
                if nxt is None:
                    break
                self._read = Position(nxt, 0)
                continue
            with open(path, "rb") as f:
                f.seek(pos.offset)
                buf = f.read(chunk)
            at_eof = len(buf) < chunk
            consumed, records = self._parse(buf, pos, max_records - len(out), at_eof)
            out.extend(records)
            self._read = Position(pos.segment, pos.offset + consumed)
            if len(out) >= max_records:
                break
            if not at_eof:
                if consumed == 0:
                    chunk = min(chunk * 2, MAX_RECORD + HEADER.size)  # one frame bigger than the chunk
                continue
            if pos.segment == self._write_seg:
                break  # live segment: the rest is not written yet
            nxt = self._next_segment(pos.segment)
            if nxt is None:
                break
            self._read = Position(nxt, 0)
        return out

    def _parse(self, buf: bytes, start: Position, limit: int, eof: bool) -> tuple[int, list[Record]]:
        """Frames in ``buf`` up to ``limit``; returns (bytes consumed, records).
        Stops before a frame cut by the end of ``buf`` unless ``buf`` ends the
        segment (``eof``): then the cut frame is corrupt and skipped."""
        records: list[Record] = []
        i, n = 0, len(buf)
        while i < n and len(records) < limit:
            verdict, hsize, end = _check(buf, i, eof)
            if verdict == _SHORT:
                break
            if verdict == _BAD:
                i = self._resync(buf, i, eof, start)
                continue
            records.append(Record(buf[i + hsize:end], Position(start.segment, start.offset + end), end - i))
            i = end
        return i, records

    def _resync(self, buf: bytes, i: int, eof: bool, start: Position) -> int:
        """Skip the corrupt range from ``i`` to the next plausible frame; count it."""
        j = i + 1
        while True:
            m = _CANDIDATE.search(buf, j)
            if m is None:  # keep a last b"P": it may start a frame the next read completes
                nxt = len(buf) - 1 if not eof and buf.endswith(b"P") and len(buf) - 1 > i else len(buf)
                break
            if _check(buf, m.start(), eof)[0] != _BAD:
                nxt = m.start()
                break
            j = m.start() + 1
        self._corrupt(1, nxt - i, Position(start.segment, start.offset + i))
        return nxt

    def _corrupt(self, ranges: int, nbytes: int, at: Position) -> None:
        self.corrupt += ranges
        self.corrupt_bytes += nbytes
        metrics.SPOOL_CORRUPT.labels(sink=self.name).inc(ranges)
        metrics.SPOOL_CORRUPT_BYTES.labels(sink=self.name).inc(nbytes)
        log.error("corrupt spool data skipped", extra={"sink": self.name, "segment": at.segment,
                                                       "offset": at.offset, "bytes": nbytes})

    def rewind(self) -> None:
        """Forget reads not acknowledged: the next read starts at the cursor again."""
        self._read = self._cursor

    def ack(self, upto: Position, count: int, nbytes: int) -> None:
        """Mark everything before ``upto`` delivered and persist the cursor.

        The in-memory cursor and counters move first; if the cursor file cannot
        be written, :class:`SpoolError` is raised and :meth:`flush_cursor`
        (or the next ack) writes it later."""
        self._cursor = upto
        self.records = max(0, self.records - count)
        self.bytes = max(0, self.bytes - nbytes)
        if self.records == 0:
            self.bytes = 0
        self._gauges()
        self.flush_cursor()

    def flush_cursor(self) -> None:
        """Persist the cursor if it moved since the last write; drop finished segments."""
        upto = self._cursor
        if upto == self._saved_cursor:
            return
        tmp = self.dir / "cursor.tmp"
        try:
            fd = _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                make_private(fd)
                data = f"{upto.segment} {upto.offset}\n".encode()
                done = 0
                while done < len(data):
                    done += _write(fd, data[done:])
            finally:
                os.close(fd)
            os.replace(tmp, self.dir / "cursor")
        except OSError as exc:
            metrics.SPOOL_ERRORS.labels(sink=self.name, op="cursor").inc()
            raise SpoolError(f"spool {self.name}: cannot write the cursor: {exc}") from exc
        self._saved_cursor = upto
        for seg in self._segments():
            if seg < upto.segment:
                self._seg_path(seg).unlink(missing_ok=True)

    def settle(self) -> None:
        """Call when :meth:`read` returned nothing: everything before the read
        position is delivered or skipped garbage, so the counters go to zero (the
        header-walk estimate from :meth:`open` can drift on corrupt regions)."""
        if self._read != self._cursor:
            self.ack(self._read, self.records, self.bytes)  # skipped garbage: move the cursor past it
        elif self.records or self.bytes:
            self.records = self.bytes = 0
            self._gauges()
        self.flush_cursor()

    @property
    def pending(self) -> int:
        return self.records

    # --- helpers -----------------------------------------------------------
    def _gauges(self) -> None:
        metrics.SPOOL_RECORDS.labels(sink=self.name).set(self.records)
        metrics.SPOOL_BYTES.labels(sink=self.name).set(self.bytes)

    def _seg_path(self, seg: int) -> Path:
        return self.dir / f"{seg:012d}.seg"

    def _segments(self) -> list[int]:
        out = []
        for p in self.dir.glob("*.seg"):
            try:
                out.append(int(p.stem))
            except ValueError:
                continue
        return sorted(out)

    def _next_segment(self, after: int) -> int | None:
        later = [s for s in self._segments() if s > after]
        return later[0] if later else None

    def _load_cursor(self, segments: list[int]) -> Position:
        try:
            seg, off = (self.dir / "cursor").read_text().split()
            pos = Position(int(seg), int(off))
        except (OSError, ValueError):
            pos = Position(segments[0] if segments else 0, 0)
        if segments and pos.segment < segments[0]:
            pos = Position(segments[0], 0)
        return pos

    def _count(self) -> tuple[int, int]:
        """Records and bytes from the cursor on: a walk over frame headers
        (payloads are checked when read), resynchronising past corrupt ranges."""
        records = size = 0
        for seg in self._segments():
            if seg < self._cursor.segment:
                continue
            path = self._seg_path(seg)
            off = self._cursor.offset if seg == self._cursor.segment else 0
            total = path.stat().st_size
            with open(path, "rb") as f:
                while off < total:
                    f.seek(off)
                    head = f.read(HEADER.size)
                    length = _header_length(head, total - off)
                    if length is not None:
                        records += 1
                        size += length
                        off += length
                        continue
                    off = _next_header(f, off + 1, total)  # corrupt range: counted when read
        return records, size


def _header_length(head: bytes, room: int) -> int | None:
    """Frame size if ``head`` starts a plausible frame that fits in ``room`` bytes."""
    if head[:2] == MAGIC and len(head) >= HEADER.size:
        _, length, _, hcrc = HEADER.unpack_from(head)
        if zlib.crc32(head[:10]) == hcrc and HEADER.size + length <= room:
            return HEADER.size + int(length)
    elif head[:2] == MAGIC_V1 and len(head) >= HEADER_V1.size:
        _, length, _ = HEADER_V1.unpack_from(head)
        if HEADER_V1.size + length <= room:
            return HEADER_V1.size + int(length)
    return None


def _next_header(f: object, off: int, total: int) -> int:
    """Offset of the next plausible frame header at or after ``off`` (``total`` if none)."""
    read = f.read  # type: ignore[attr-defined]
    seek = f.seek  # type: ignore[attr-defined]
    while off < total:
        seek(off)
        buf = read(READ_CHUNK + HEADER.size)
        for m in _CANDIDATE.finditer(buf):
            if m.start() >= READ_CHUNK:
                break
            if _header_length(buf[m.start():m.start() + HEADER.size], total - off - m.start()) is not None:
                return off + m.start()
        off += READ_CHUNK
    return total
