"""The compiled-ruleset cache on disk (``rules.cache_dir``): a start with unchanged rules skips
parsing and compiling them.

An entry is a :mod:`detectors.sigma.snapshot` of what :func:`~detectors.sigma.compile_ruleset`
returned, in ``<cache_dir>/<key>.ruleset``. The key is a SHA-256 of everything the result depends
on: the cache format, the engine (the source of the modules that parse and compile rules, the
pySigma and Python versions), the options (regex time budget), every pipeline's text and every
rule text with its source name and ruleset. Any change is another key, so an entry is never
stale; a miss compiles as without the cache and writes the entry.

Manifests: reading and hashing every rule text costs about 0.1 s for the SigmaHQ corpus, so a
start first hashes the files' metadata instead (:func:`service.rules.stat_signature`: path, device,
inode, size, modification and change times of every file, in reading order) and looks for
``<cache_dir>/<signature>.manifest``, which names the key of the texts it was made from. A manifest
is written only when every file's times are older than :data:`SETTLE_S` (a file being written
could change again within the same clock tick) and every file could be read; any change to a file
changes its change time, so a manifest never names the key of other texts. No manifest, or one
that names a missing entry: the texts are read and hashed as above.

Entries are written to a private temporary file in the same directory (mode 0600) and renamed
into place, so a reader sees a whole entry or none. An entry that is not a regular file owned by
this user, is writable by others, is over :data:`MAX_ENTRY_BYTES`, or does not read back (damaged,
truncated, another version: :class:`~detectors.sigma.snapshot.SnapshotError`) is ignored with a log
line and rebuilt. Only the :data:`KEEP` most recently used entries are kept.

Compile memos: a compile with a :class:`~detectors.sigma.memo.CompileMemo` (the service's, kept for hot
reloads; :mod:`service.rules` gives every compile that writes an entry one) also writes what it made of
each text, ``<cache_dir>/<key>.memo`` (:func:`~detectors.sigma.snapshot.memo_snapshot`), the same way.
A start restored from the entry sets the memo to read it on its next compile (:func:`seed_memo`): the
first reload compiles only what changed, as after a start that compiled. A memo file that is missing,
foreign or does not read back leaves the memo empty (that reload compiles in full); a memo whose entry
was pruned is removed with it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from detectors.sigma import LoadResult, RuleText
from detectors.sigma.memo import CompileMemo
from detectors.sigma.snapshot import SnapshotError, memo_snapshot, restore, restore_memo, snapshot

__all__ = ["KEEP", "MANIFEST", "MEMO", "SETTLE_S", "SUFFIX", "RuleText", "cache_key", "engine_fingerprint", "load",
           "load_manifest", "manifest_name", "seed_memo", "store", "store_manifest"]

log = logging.getLogger(__name__)

FORMAT = "2"
SUFFIX = ".ruleset"
KEEP = 4
"""Entries kept per cache directory (the newest by last use); older ones are removed on write."""
MANIFEST = ".manifest"
MEMO = ".memo"
SETTLE_S = 2.0
"""Files changed more recently than this (by their modification or change time) are not trusted
from their metadata alone: no manifest is written for them."""
MAX_ENTRY_BYTES = 512 << 20
"""An entry larger than this is not read (the SigmaHQ corpus makes about 10 MB)."""

_ENGINE_MODULES = ("detectors/sigma", "detectors/event.py", "detectors/model.py", "detectors/yamlsafe.py",
                   "detectors/errors.py")


@lru_cache(maxsize=1)
def engine_fingerprint() -> str:
    """A hash of the code that turns rule texts into a ruleset: its source files and library versions."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for name in _ENGINE_MODULES:
        path = root / name
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(root)).encode() + b"\0")
            try:
                digest.update(file.read_bytes())
            except OSError:
                digest.update(b"<unreadable>")
            digest.update(b"\0")
    for package in ("pySigma", "PyYAML"):
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "?"
        digest.update(f"{package}={version}\0".encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def cache_key(texts: Sequence[RuleText], pipelines: Sequence[str], regex_timeout_ms: float, *,
              cased_fields: bool = False) -> str:
    """The key of the ruleset compiled from ``texts`` and ``pipelines`` with these options."""
    digest = hashlib.sha256()

    def part(value: str) -> None:
        data = value.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    part(FORMAT)
    part(engine_fingerprint())
    part(repr(float(regex_timeout_ms)))
    part(_fields_option(cased_fields))
    part(str(len(pipelines)))
    for text in pipelines:
        part(text)
    part(str(len(texts)))
    for rule in texts:
        part(rule.source)
        part(rule.ruleset)
        part(rule.text)
    return digest.hexdigest()


def load(directory: Path, key: str, regex_timeout_ms: float) -> LoadResult | None:
    """The cached result under ``key``, or None (a miss, or an entry that is ignored: see the module doc)."""
    path = directory / (key + SUFFIX)
    data = _read(path)
    if data is None:
        return None
    try:
        result = restore(data, regex_timeout_ms)
    except SnapshotError as exc:
        log.warning("rules cache entry ignored (%s); compiling the rules", exc, extra={"path": str(path)})
        return None
    _touch(path)
    return result


def _touch(path: Path) -> None:
    """Mark ``path`` as just used: pruning keeps the most recently used entries."""
    try:
        os.utime(path)
    except OSError:
        pass


def seed_memo(directory: Path, key: str, memo: CompileMemo) -> None:
    """Make ``memo`` (an empty one: a start restored from entry ``key``) read the compile memo kept beside
    the entry on its next compile, so the first reload compiles only the texts that changed."""
    if memo.context is None and not memo.units:
        memo.seed = lambda target: _fill_memo(directory / (key + MEMO), target)


def _fill_memo(path: Path, memo: CompileMemo) -> None:
    data = _read(path)
    if data is None:
        return
    try:
        memo.context, memo.units = restore_memo(data)
    except SnapshotError as exc:
        log.warning("rules cache memo ignored (%s); the reload compiles every rule", exc, extra={"path": str(path)})


def _read(path: Path) -> bytes | None:
    """The bytes of entry ``path``, or None (missing; foreign, unreadable: with a log line)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("rules cache entry cannot be opened; compiling the rules",
                    extra={"path": str(path), "error": exc.strerror or type(exc).__name__})
        return None
    try:
        info = os.fstat(fd)
        problem = _foreign(info)
        if problem is not None:
            log.warning("rules cache entry ignored (%s); compiling the rules", problem, extra={"path": str(path)})
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_ENTRY_BYTES + 1)
    except OSError as exc:
        log.warning("rules cache entry cannot be read; compiling the rules",
                    extra={"path": str(path), "error": exc.strerror or type(exc).__name__})
        return None
    finally:
        os.close(fd)
    return data


def _foreign(info: os.stat_result) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return "owned by another user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "writable by others"
    if info.st_size > MAX_ENTRY_BYTES:
        return f"larger than {MAX_ENTRY_BYTES} bytes"
    return None


def store(directory: Path, key: str, result: LoadResult, memo: CompileMemo | None = None) -> bool:
    """Write ``result`` under ``key`` (atomically, mode 0600), and what ``memo`` holds beside it (the memo
    of the compile that made ``result``); False, with a log line, if the entry cannot be written."""
    data = snapshot(result)
    if data is None:
        log.info("ruleset cannot be cached (it holds objects a snapshot cannot keep)")
        return False
    if len(data) > MAX_ENTRY_BYTES:
        log.info("ruleset not cached: its snapshot is larger than %d bytes", MAX_ENTRY_BYTES)
        return False
    if not _write(directory, key + SUFFIX, data):
        return False
    kept = None if memo is None else memo_snapshot(memo)
    if kept is not None and len(kept) <= MAX_ENTRY_BYTES:
        _write(directory, key + MEMO, kept)
    else:
        _remove(directory / (key + MEMO))  # an older one would not be this compile's
    _prune(directory, key)
    return True


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _write(directory: Path, name: str, data: bytes) -> bool:
    """Write ``data`` to ``directory/name`` atomically (mode 0600); False, with a log line, if it cannot be."""
    tmp: str | None = None
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=directory)  # mode 0600
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / name)
        tmp = None
    except OSError as exc:
        log.warning("rules cache entry cannot be written; the rules still run",
                    extra={"path": str(directory), "error": exc.strerror or type(exc).__name__})
        return False
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return True


def _prune(directory: Path, keep: str, suffix: str = SUFFIX) -> None:
    """Remove all but the :data:`KEEP` most recently used entries (or manifests) (never ``keep``)."""
    try:
        entries = [(entry.stat().st_mtime, entry) for entry in directory.iterdir()
                   if entry.name.endswith(suffix) and not entry.name.startswith(".") and entry.is_file()]
    except OSError:
        return
    entries.sort(key=lambda pair: pair[0], reverse=True)
    for _, entry in entries[KEEP:]:
        if entry.name != keep + suffix:
            _remove(entry)
            if suffix == SUFFIX:
                _remove(entry.with_name(entry.name[:-len(SUFFIX)] + MEMO))  # the entry's compile memo


def _fields_option(cased_fields: bool) -> str:
    """``rules.field_names`` as a key part (the atoms' field paths depend on it)."""
    return "field_names=sensitive" if cased_fields else "field_names=insensitive"


def manifest_name(signature: str, regex_timeout_ms: float, *, cased_fields: bool = False) -> str:
    """The manifest name of a metadata signature under this engine, format and options."""
    digest = hashlib.sha256()
    for part in (FORMAT, engine_fingerprint(), repr(float(regex_timeout_ms)), _fields_option(cased_fields),
                 signature):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def load_manifest(directory: Path, name: str) -> str | None:
    """The key a manifest names, or None (none, foreign, or not a key)."""
    path = directory / (name + MANIFEST)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if _foreign(os.fstat(fd)) is not None:
            return None
        data = os.read(fd, 128)
    except OSError:
        return None
    finally:
        os.close(fd)
    key = data.decode("ascii", "replace").strip()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        return None
    _touch(path)
    return key


def store_manifest(directory: Path, name: str, key: str) -> None:
    """Record that the files of metadata signature ``name`` hold the texts of ``key`` (best effort)."""
    tmp: str | None = None
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=MANIFEST, dir=directory)  # mode 0600
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.encode("ascii") + b"\n")
        os.replace(tmp, directory / (name + MANIFEST))
        tmp = None
    except OSError:
        return
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _prune(directory, name, MANIFEST)
