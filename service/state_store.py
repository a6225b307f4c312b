"""Durable detector state snapshots, one file per scope and name.

Why: anomaly and correlation state must survive restarts and move with a
Kafka partition to whichever instance owns it next. A scope names the stream
the state belongs to (``"kafka:<topic>:<partition>"`` or ``"local"``); the
name says whose state it is (``"anomaly"``, ``"correlation"``; a Kafka partition
keeps all its detectors in one ``"partition"`` file, see ``service.partition_state``).

Layout: ``<root>/<quoted scope>/<detector>.json``. Writes are atomic: the
snapshot goes to a temporary file in the same directory, is fsynced, renamed
over the old file, and the directory is fsynced, so a crash leaves either the
old or the new snapshot, never a torn one. A file that cannot be read back is
moved aside as ``<detector>.json.corrupt`` (kept for inspection) and treated
as absent, so the detector starts fresh instead of failing to start.

The methods are blocking (small files, called at start, on a timer and at
shutdown); async callers use the ``*_async`` wrappers, which run them in a
worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import orjson

from service.errors import RetriableError
from service.fileperms import make_private, private_dir

log = logging.getLogger(__name__)

_DETECTOR = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
SUFFIX = ".json"


class StateStoreError(RetriableError, OSError):
    """A snapshot could not be written (the caller keeps its state and retries later)."""


class StateStore:
    """Snapshots under ``root``, keyed by scope and detector name."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, scope: str, detector: str) -> Path:
        if not scope:
            raise ValueError("scope must not be empty")
        if not _DETECTOR.match(detector):
            raise ValueError(f"invalid detector name {detector!r}")
        return self.root / quote(scope, safe="") / f"{detector}{SUFFIX}"

    def save(self, scope: str, detector: str, snapshot: Mapping[str, Any]) -> Path:
        """Write ``snapshot`` atomically and durably; returns the file path."""
        target = self.path(scope, detector)
        try:
            data = orjson.dumps(snapshot)
        except TypeError as exc:
            raise ValueError(f"snapshot for {scope}/{detector} is not JSON-serialisable: {exc}") from exc
        try:
            private_dir(target.parent)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{detector}.", suffix=".tmp", dir=target.parent)
            make_private(fd)  # mkstemp creates 0600 already; said here because snapshots hold event values
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp_name, target)
            except BaseException:
                try:
                    os.unlink(tmp_name)
                except FileNotFoundError:
                    pass
                raise
            _fsync_dir(target.parent)
        except OSError as exc:
            raise StateStoreError(exc.errno, f"cannot save state {scope}/{detector}: {exc.strerror or exc}") from exc
        return target

    def load(self, scope: str, detector: str) -> dict[str, Any] | None:
        """The saved snapshot, or ``None`` when there is none or it was unreadable (moved aside)."""
        target = self.path(scope, detector)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            return None
        try:
            snapshot = orjson.loads(data)
            if not isinstance(snapshot, dict):
                raise ValueError(f"top level is {type(snapshot).__name__}, not an object")
        except (orjson.JSONDecodeError, ValueError) as exc:
            aside = target.with_name(target.name + ".corrupt")
            os.replace(target, aside)
            log.warning("state snapshot unreadable, moved aside; starting fresh",
                        extra={"scope": scope, "detector": detector, "error": str(exc), "path": str(aside)})
            return None
        return snapshot

    def delete(self, scope: str, detector: str) -> bool:
        try:
            self.path(scope, detector).unlink()
        except FileNotFoundError:
            return False
        return True

    def scopes(self) -> list[str]:
        """Scopes that have at least one snapshot."""
        if not self.root.is_dir():
            return []
        return sorted(unquote(p.name) for p in self.root.iterdir()
                      if p.is_dir() and any(f.suffix == SUFFIX for f in p.iterdir()))

    async def save_async(self, scope: str, detector: str, snapshot: Mapping[str, Any]) -> Path:
        return await asyncio.to_thread(self.save, scope, detector, snapshot)

    async def load_async(self, scope: str, detector: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.load, scope, detector)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
