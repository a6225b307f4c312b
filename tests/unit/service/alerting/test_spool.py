"""The on-disk spool: order, acknowledgement, restarts, corruption, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import metrics
from service.alerting.spool import HEADER, Spool, SpoolFull
from tests.support.faults import drain


def corrupt_count(name: str) -> float:
    return metrics.REGISTRY.get_sample_value("pipesentry_spool_corrupt_records_total", {"sink": name}) or 0.0


def test_append_read_ack_in_order(tmp_path: Path) -> None:
    s = Spool(tmp_path, "t1", segment_bytes=4096)
    s.open()
    payloads = [f"record-{i}".encode() * 20 for i in range(100)]
    fd = s.append(payloads[:50])
    assert isinstance(fd, int)
    s.append(payloads[50:])
    assert s.pending == 100
    assert len(list(tmp_path.glob("*.seg"))) > 1  # rotated
    assert drain(s) == payloads
    assert s.pending == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1  # finished segments removed


def test_unacked_records_survive_restart_and_rewind(tmp_path: Path) -> None:
    s = Spool(tmp_path, "t2", segment_bytes=4096)
    s.open()
    s.append([b"a", b"b", b"c"])
    first = s.read(1)
    s.ack(first[0].end, 1, 1 + HEADER.size)
    s.read(5)  # read but not acknowledged
    s.rewind()
    assert [r.payload for r in s.read(5)] == [b"b", b"c"]
    s.close()
    again = Spool(tmp_path, "t2", segment_bytes=4096)
    again.open()
    assert again.pending == 2
    again.append([b"d"])
    assert drain(again) == [b"b", b"c", b"d"]


def test_corrupt_record_is_skipped_and_counted(tmp_path: Path) -> None:
    s = Spool(tmp_path, "t3")
    s.open()
    s.append([b"good-1", b"bad-record", b"good-2"])
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    pos = data.find(b"bad-record")
    data[pos] ^= 0xFF  # flip a payload byte: checksum fails
    seg.write_bytes(bytes(data))
    before = corrupt_count("t3")
    s2 = Spool(tmp_path, "t3")
    s2.open()
    assert drain(s2) == [b"good-1", b"good-2"]
    assert corrupt_count("t3") == before + 1


def test_garbage_header_and_torn_tail(tmp_path: Path) -> None:
    s = Spool(tmp_path, "t4")
    s.open()
    s.append([b"one", b"two"])
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    raw = seg.read_bytes()
    first_len = HEADER.size + 3
    # garbage between records, and half a record at the end (crash mid-write)
    seg.write_bytes(raw[:first_len] + b"\x00garbage\x00" + raw[first_len:] + raw[:HEADER.size + 1])
    before = corrupt_count("t4")
    s2 = Spool(tmp_path, "t4")
    s2.open()
    s2.append([b"three"])
    assert drain(s2) == [b"one", b"two", b"three"]
    assert corrupt_count("t4") == before + 2
    assert s2.pending == 0


def test_full_spool_refuses(tmp_path: Path) -> None:
    s = Spool(tmp_path, "t5", max_bytes=4096)
    s.open()
    s.append([b"x" * 1000] * 3)
    with pytest.raises(SpoolFull):
        s.append([b"x" * 2000])
    assert s.pending == 3


def test_fsync_policies(tmp_path: Path) -> None:
    for policy, expect_fd in (("batch", True), ("always", False), ("never", False)):
        s = Spool(tmp_path / policy, f"t6-{policy}", fsync=policy)
        s.open()
        fd = s.append([b"x"])
        assert (fd is not None) is expect_fd
        assert drain(s) == [b"x"]


def corrupt_bytes(name: str) -> float:
    return metrics.REGISTRY.get_sample_value("pipesentry_spool_corrupt_bytes_total", {"sink": name}) or 0.0


def test_corrupt_length_field_skips_only_that_record(tmp_path: Path) -> None:
    """A length set to 1e6 in record 10 of 100 must not hide the 90 intact records after it."""
    s = Spool(tmp_path, "t7")
    s.open()
    payloads = [f'{{"n": {i}, "pad": "{"x" * 40}"}}'.encode() for i in range(100)]
    s.append(payloads)
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    at = data.find(payloads[9]) - HEADER.size
    data[at + 2:at + 6] = (1_000_000).to_bytes(4, "little")
    seg.write_bytes(bytes(data))
    before, before_bytes = corrupt_count("t7"), corrupt_bytes("t7")
    s2 = Spool(tmp_path, "t7")
    s2.open()
    assert s2.pending >= 99
    assert drain(s2) == payloads[:9] + payloads[10:]
    assert corrupt_count("t7") == before + 1
    assert corrupt_bytes("t7") - before_bytes == len(payloads[9]) + HEADER.size


def test_old_frames_without_header_checksum_stay_readable(tmp_path: Path) -> None:
    import struct
    import zlib

    (tmp_path / "000000000001.seg").write_bytes(b"".join(
        struct.pack("<2sII", b"PS", len(p), zlib.crc32(p)) + p for p in (b"old-1", b"old-2")))
    s = Spool(tmp_path, "t8")
    s.open()
    s.append([b"new-1"])
    assert s.pending == 3
    assert drain(s) == [b"old-1", b"old-2", b"new-1"]


def test_a_new_segment_syncs_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With fsync batch/always a new segment's directory entry is synced too: a power cut cannot drop the file."""
    import os
    import stat

    from service.alerting import spool as spool_mod

    synced: list[bool] = []
    real = spool_mod._fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(spool_mod, "_fsync", fsync)
    s = Spool(tmp_path, "t9", segment_bytes=4096)
    s.open()
    s.append([b"x" * 100])
    assert True in synced
    synced.clear()
    s.append([b"y" * 100])  # same segment: no directory sync
    assert True not in synced
    s.close()
