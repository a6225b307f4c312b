"""Durable, append-only spool of records waiting for one sink.

Layout: ``<dir>/<n>.seg`` segment files of framed records plus a ``cursor``
file holding the position of the first record not yet delivered. A frame is
``b"PS" | u32 length | u32 crc32(payload) | payload`` (little endian).

* Writes go to a fresh segment per process start (older segments are never
  appended to), so a torn tail from a crash only ever ends a closed segment.
* fsync policy (``SpoolSettings.fsync``): ``batch`` = one fsync per appended
  batch, before :meth:`append` returns; ``always`` = after every record;
  ``never`` = the OS decides. The cursor is replaced atomically (rename).
* A record failing its checksum, a bad header or a torn tail is skipped and
  counted (``pipesentry_spool_corrupt_records``); reading resynchronises on the
  next valid frame. Delivery is at least once: a crash between delivery and the
  cursor write re-sends a few records, which every sink tolerates (ids).

Not thread-safe: the router uses it from the event loop only (fsync excepted,
which may run in a worker thread via :meth:`sync_pending`).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service import metrics

MAGIC = b"PS"
HEADER = struct.Struct("<2sII")
MAX_RECORD = 64 * 1024 * 1024
READ_CHUNK = 4 * 1024 * 1024


class SpoolError(Exception):
    """The spool cannot accept records (full or disk error). Retriable by the caller."""

    retriable = True


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


def frame(payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


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
        self._cursor = Position(0, 0)
        self._read = Position(0, 0)
        self._write_seg = 0
        self._write_file: object | None = None
        self._write_size = 0
        self._opened = False

    # --- lifecycle ---------------------------------------------------------
    def open(self) -> None:
        """Load the cursor, count what is waiting and start a new write segment."""
        if self._opened:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        segments = self._segments()
        self._cursor = self._load_cursor(segments)
        self._read = self._cursor
        self.records, self.bytes = self._count()
        self._write_seg = (segments[-1] + 1) if segments else 1
        self._opened = True
        self._gauges()

    def close(self) -> None:
        f = self._write_file
        if f is not None:
            f.flush()  # type: ignore[attr-defined]
            if self.fsync != "never":
                os.fsync(f.fileno())  # type: ignore[attr-defined]
            f.close()  # type: ignore[attr-defined]
        self._write_file = None
        self._opened = False

    # --- writing -----------------------------------------------------------
    def append(self, payloads: Sequence[bytes]) -> int | None:
        """Append records; returns a file descriptor still to fsync (``batch``
        policy; call :func:`os.fsync` on it, maybe in a thread) or None."""
        if not payloads:
            return None
        frames = [frame(p) for p in payloads]
        size = sum(len(f) for f in frames)
        if self.bytes + size > self.max_bytes:
            raise SpoolFull(f"spool {self.name} holds {self.bytes} bytes, limit {self.max_bytes}")
        try:
            f = self._writer()
            for fr in frames:
                if self._write_size >= self.segment_bytes:
                    f = self._rotate()
                f.write(fr)  # type: ignore[attr-defined]
                self._write_size += len(fr)
                if self.fsync == "always":
                    f.flush()  # type: ignore[attr-defined]
                    os.fsync(f.fileno())  # type: ignore[attr-defined]
            f.flush()  # type: ignore[attr-defined]
        except OSError as exc:
            raise SpoolError(f"spool {self.name}: {exc}") from exc
        self.records += len(frames)
        self.bytes += size
        self._gauges()
        return f.fileno() if self.fsync == "batch" else None  # type: ignore[attr-defined]

    def _writer(self) -> object:
        if self._write_file is None:
            self._write_file = open(self._seg_path(self._write_seg), "ab")  # noqa: SIM115
            self._write_size = self._write_file.tell()
        return self._write_file

    def _rotate(self) -> object:
        old = self._write_file
        if old is not None:
            old.flush()  # type: ignore[attr-defined]
            if self.fsync != "never":
                os.fsync(old.fileno())  # type: ignore[attr-defined]
            old.close()  # type: ignore[attr-defined]
        self._write_file = None
        self._write_seg += 1
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
            consumed, records = self._parse(buf, pos, max_records - len(out))
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
            if consumed < len(buf):
                self._corrupt(1)  # torn tail of a closed segment (crash mid-write)
            nxt = self._next_segment(pos.segment)
            if nxt is None:
                self._read = Position(pos.segment, pos.offset + len(buf))
                break
            self._read = Position(nxt, 0)
        return out

    def _parse(self, buf: bytes, start: Position, limit: int) -> tuple[int, list[Record]]:
        """Frames in ``buf`` up to ``limit``; returns (bytes consumed, records).
        Stops before a frame that is cut by the end of ``buf``."""
        records: list[Record] = []
        i, n = 0, len(buf)
        while i + HEADER.size <= n and len(records) < limit:
            magic, length, crc = HEADER.unpack_from(buf, i)
            if magic != MAGIC or length > MAX_RECORD:
                i = self._resync(buf, i + 1)
                continue
            end = i + HEADER.size + length
            if end > n:
                break
            payload = buf[i + HEADER.size:end]
            if zlib.crc32(payload) != crc:
                i = self._resync(buf, i + 1)
                continue
            records.append(Record(payload, Position(start.segment, start.offset + end)))
            i = end
        return i, records

    def _resync(self, buf: bytes, i: int) -> int:
        """Skip a corrupt frame: count it and find the next plausible frame start."""
        self._corrupt(1)
        nxt = buf.find(MAGIC, i)
        while nxt != -1 and len(buf) - nxt >= HEADER.size:
            _, length, crc = HEADER.unpack_from(buf, nxt)
            end = nxt + HEADER.size + length
            if length <= MAX_RECORD and (end > len(buf) or zlib.crc32(buf[nxt + HEADER.size:end]) == crc):
                return nxt
            nxt = buf.find(MAGIC, nxt + 1)
        return len(buf) if nxt == -1 else nxt

    def _corrupt(self, n: int) -> None:
        self.corrupt += n
        self.records = max(0, self.records - n)
        metrics.SPOOL_CORRUPT.labels(sink=self.name).inc(n)

    def rewind(self) -> None:
        """Forget reads not acknowledged: the next read starts at the cursor again."""
        self._read = self._cursor

    def ack(self, upto: Position, count: int, nbytes: int) -> None:
        """Mark everything before ``upto`` delivered; drop finished segments."""
        self._cursor = upto
        tmp = self.dir / "cursor.tmp"
        tmp.write_bytes(f"{upto.segment} {upto.offset}\n".encode())
        os.replace(tmp, self.dir / "cursor")
        for seg in self._segments():
            if seg < upto.segment:
                self._seg_path(seg).unlink(missing_ok=True)
        self.records = max(0, self.records - count)
        self.bytes = max(0, self.bytes - nbytes)
        if self.records == 0:
            self.bytes = 0
        self._gauges()

    def settle(self) -> None:
        """Call when :meth:`read` returned nothing: everything before the read
        position is delivered or skipped garbage, so the counters go to zero (the
        header-walk estimate from :meth:`open` can drift on corrupt regions)."""
        if self._read != self._cursor:
            self.ack(self._read, self.records, self.bytes)  # skipped garbage: move the cursor past it
        elif self.records or self.bytes:
            self.records = self.bytes = 0
            self._gauges()

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
        """Records and bytes from the cursor on (header walk, payloads not checked)."""
        records = size = 0
        for seg in self._segments():
            if seg < self._cursor.segment:
                continue
            path = self._seg_path(seg)
            start = self._cursor.offset if seg == self._cursor.segment else 0
            total = path.stat().st_size
            with open(path, "rb") as f:
                f.seek(start)
                off = start
                while off + HEADER.size <= total:
                    head = f.read(HEADER.size)
                    magic, length, _ = HEADER.unpack(head)
                    if magic != MAGIC or length > MAX_RECORD or off + HEADER.size + length > total:
                        size += total - off  # corrupt region: counted when read
                        records += 1
                        break
                    f.seek(length, os.SEEK_CUR)
                    off += HEADER.size + length
                    records += 1
                    size += HEADER.size + length
        return records, size
