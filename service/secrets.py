"""Secrets read from mounted files (Kubernetes Secret volumes, Docker secrets)."""

from __future__ import annotations

from pathlib import Path


def read_secret_file(path: Path, what: str) -> str:
    """The file's content without surrounding white space; ``ValueError`` names ``what`` and the path."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {str(path)!r}: {exc.strerror or exc}") from None
    if not text:
        raise ValueError(f"{what} file {str(path)!r} is empty")
    return text
