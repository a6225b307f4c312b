"""Redaction in the shell: the installation key, the settings, the counter and the log hook.

The pure part (formats, markers, documents) is :mod:`detectors.redaction`. This module gives it
its key: ``redaction.key`` (inline secret) or ``redaction.key_file`` (a mounted secret), else
``<data_dir>/redaction.key``, generated with 32 random bytes on first start (mode 0600), so
markers stay comparable across restarts and between this instance's alerts and logs. Counts per
kind go to ``pipesentry_redactions_total{kind}``.

Redaction is on by default; ``redaction.enabled: false`` switches it off everywhere (for a test
bench with fake secrets), ``redact: false`` on a sink or receiver only there (see
``docs/alerting.md``, "Redaction").
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from detectors.redaction import Redactor
from service import logs, metrics
from service.errors import ServiceError
from service.fileperms import private_dir, private_open
from service.secrets import read_secret_file

log = logging.getLogger(__name__)
KEY_FILE = "redaction.key"
KEY_BYTES = 32
MIN_KEY_CHARS = 16


class RedactionError(ServiceError):
    """The redaction key cannot be read or created (not retriable: fix the file or the setting)."""


class RedactionSettings(BaseModel):
    """``redaction:`` in the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    enabled: bool = True
    key: SecretStr | None = None
    """The HMAC key of markers (at least 16 characters); instances given the same key mark the same
    secret with the same hash."""
    key_file: Path | None = None
    """A file holding the key (a mounted secret), instead of ``key``."""

    @model_validator(mode="after")
    def _one_key(self) -> RedactionSettings:
        if self.key is not None and self.key_file is not None:
            raise ValueError("redaction: give key or key_file, not both")
        if self.key is not None and len(self.key.get_secret_value()) < MIN_KEY_CHARS:
            raise ValueError(f"redaction.key must have at least {MIN_KEY_CHARS} characters")
        return self


def load_key(settings: RedactionSettings, data_dir: Path) -> bytes:
    """The configured key, or the installation's generated key (created on first call)."""
    if settings.key is not None:
        return settings.key.get_secret_value().encode()
    if settings.key_file is not None:
        try:
            text = read_secret_file(settings.key_file, "redaction.key")
        except ValueError as exc:
            raise RedactionError(str(exc)) from None
        if len(text) < MIN_KEY_CHARS:
            raise RedactionError(f"redaction.key file {str(settings.key_file)!r}: the key must have at least "
                                 f"{MIN_KEY_CHARS} characters")
        return text.encode()
    path = data_dir / KEY_FILE
    try:
        return _read_generated(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RedactionError(f"cannot read the redaction key {str(path)!r}: {exc.strerror or exc}") from None
    try:
        private_dir(data_dir)
        fd = private_open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:  # another process created it meanwhile
        return _read_generated(path)
    except OSError as exc:
        raise RedactionError(f"cannot create the redaction key {str(path)!r}: {exc.strerror or exc}") from None
    try:
        os.write(fd, secrets.token_hex(KEY_BYTES).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("redaction key generated", extra={"path": str(path)})
    return _read_generated(path)


def _read_generated(path: Path) -> bytes:
    text = path.read_text(encoding="ascii").strip()
    if len(text) < MIN_KEY_CHARS:
        raise RedactionError(f"redaction key file {str(path)!r} is empty or too short; remove it to generate a "
                             "new one (markers of old alerts will then no longer match new ones)")
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return text.encode()


class Redaction:
    """One installation's redaction: a :class:`~detectors.redaction.Redactor` under its key, counting.

    The constructor stores the settings; :meth:`start` reads (or creates) the key and installs the
    redactor in the log masking. Before :meth:`start` a redactor under a random key of this process
    redacts just as well (its hashes differ from the installation's)."""

    def __init__(self, settings: RedactionSettings | None = None, data_dir: Path | None = None) -> None:
        self.settings = settings or RedactionSettings()
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._redactor: Redactor | None = None
        self._lock = threading.Lock()
        self._started = False

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def start(self) -> None:
        """Load the key and hand the redactor to the log masking (idempotent)."""
        if self._started:
            return
        if self.settings.key is None and self.settings.key_file is None and self.data_dir is None:
            raise RedactionError("redaction needs a key, a key_file or a data directory")
        key = load_key(self.settings, self.data_dir or Path("."))
        self._redactor = Redactor(key)
        self._started = True
        if self.enabled:
            logs.use_format_redactor(self._redactor.text)

    @property
    def redactor(self) -> Redactor:
        redactor = self._redactor
        if redactor is None:
            with self._lock:
                if self._redactor is None:
                    self._redactor = Redactor(secrets.token_bytes(KEY_BYTES))
                redactor = self._redactor
        return redactor

    def document(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        counts: dict[str, int] = {}
        out = self.redactor.document(doc, counts)
        _count(counts)
        return out

    def documents(self, docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`document` of each of a batch's documents, counted once for the batch."""
        counts: dict[str, int] = {}
        document = self.redactor.document
        out = [document(doc, counts) for doc in docs]
        _count(counts)
        return out

    def page(self, page: Mapping[str, Any]) -> dict[str, Any]:
        counts: dict[str, int] = {}
        out = self.redactor.page(page, counts)
        _count(counts)
        return out

    def text(self, text: str) -> str:
        counts: dict[str, int] = {}
        out = self.redactor.text(text, counts)
        _count(counts)
        return out

    def raw(self, data: bytes) -> bytes:
        """Bytes of an event that was not decoded (dead letters): redacted as text, other bytes kept."""
        text = data.decode("utf-8", "surrogateescape")
        out = self.text(text)
        return data if out is text else out.encode("utf-8", "surrogateescape")


def _count(counts: Mapping[str, int]) -> None:
    for kind, n in counts.items():
        metrics.REDACTIONS.labels(kind=kind).inc(n)


__all__ = ["KEY_FILE", "Redaction", "RedactionError", "RedactionSettings", "load_key"]
