"""Private files: what pipesentry writes about alerts and events is readable by its own user only.

Spool segments, the alert store, state snapshots, dead letters and the redaction key hold event
text. They are created mode 0600 in directories of mode 0700, whatever the process umask: a mode
given to ``open``/``mkdir`` is only an upper bound the umask cuts into, so every helper sets the
mode explicitly (``fchmod``/``chmod``) after creating, and tightens files and directories an
older version left more open.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents, each of mode 0700, and make ``path`` itself 0700 if it
    existed (parents that existed are left as they are: they may not be ours). Returns ``path``."""
    missing: list[Path] = []
    at = path
    while not at.exists() and at != at.parent:
        missing.append(at)
        at = at.parent
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    for made in [path, *missing]:
        if made.stat().st_mode & 0o777 != DIR_MODE:
            os.chmod(made, DIR_MODE)
    return path


def make_private(fd: int) -> int:
    """Set an open file's mode to 0600 (whatever the umask left); returns ``fd``."""
    if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
        os.fchmod(fd, FILE_MODE)
    return fd


def private_open(path: Path | str, flags: int) -> int:
    """``os.open`` that leaves the file (new or existing) at mode 0600; returns the descriptor."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        return make_private(fd)
    except BaseException:
        os.close(fd)
        raise


def private_file(path: Path) -> None:
    """Make sure ``path`` exists with mode 0600 (before a library such as SQLite opens it)."""
    os.close(private_open(path, os.O_WRONLY | os.O_CREAT))


def private_append(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Append ``data`` to a private file in a private directory (dead letters)."""
    private_dir(path.parent)
    fd = private_open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["DIR_MODE", "FILE_MODE", "make_private", "private_append", "private_dir", "private_file", "private_open"]
